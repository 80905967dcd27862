"""``oncall.tasks``: the background work loops every replica runs."""

from __future__ import annotations

import asyncio

from oncall.tasks import Poller


async def test_stop_ends_the_loop_when_woken_at_the_same_moment() -> None:
    """A wake-up arriving with the cancellation (a notification applied during shutdown) must not swallow it:
    with ``asyncio.wait_for`` on Python 3.11 (CPython gh-86296) the loop went on and ``stop`` never returned,
    which hung the agent's shutdown."""
    rounds = 0

    async def tick() -> None:
        nonlocal rounds
        rounds += 1

    for _ in range(50):
        poller = Poller("test", tick, poll_s=60)
        poller.start()
        await asyncio.sleep(0.002)  # the loop waits for a wake-up
        poller.wake()
        await asyncio.wait_for(poller.stop(), 2)
    assert rounds >= 50  # each loop ran its first round before it was stopped
