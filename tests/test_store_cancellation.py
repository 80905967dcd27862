"""Two process-wide guarantees found broken by the console's browser test (a page reloaded every 2 s while an
approved action was verified):

- a database step cut by a cancellation runs to its end even when the cancellation is repeated (anyio cancel
  scopes cancel again at every await); the old code let the second cancellation through, so a late BEGIN ran on
  a connection already back in the pool and the next writer failed with "cannot start a transaction within a
  transaction";
- log redaction keeps ``record.args`` when nothing is redacted, so uvicorn's access formatter (which unpacks
  them) does not fail with "--- Logging error ---" on every request.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from sqlalchemy import text
from uvicorn.logging import AccessFormatter

from oncall.redaction import Redactor, install_log_redaction
from oncall.store.cancellation import uncancellable
from oncall.store.database import Store
from oncall.store.migrate import migrate


async def test_a_step_survives_a_repeated_cancellation_and_the_cancellation_is_raised_after_it() -> None:
    finished: list[str] = []

    async def step() -> str:
        await asyncio.sleep(0.2)
        finished.append("step")
        return "done"

    task = asyncio.ensure_future(uncancellable(step()))
    for _ in range(3):  # cancelled again and again, as an anyio cancel scope does
        await asyncio.sleep(0.02)
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished == ["step"]  # the step ran to its end before the cancellation came out


async def test_readers_cancelled_repeatedly_leave_no_transaction_behind(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'oncall.db'}"
    await asyncio.to_thread(migrate, url)
    store = Store(url)
    try:

        async def reader() -> None:
            while True:
                async with store.read() as conn:
                    await conn.execute(text("SELECT count(*) FROM incidents"))

        for _ in range(40):
            task = asyncio.ensure_future(reader())
            await asyncio.sleep(0.003)
            for _ in range(3):
                task.cancel()
                await asyncio.sleep(0)
            with pytest.raises(asyncio.CancelledError):
                await task
        for _ in range(5):  # every pooled connection starts its transaction cleanly
            async with store.write() as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        await store.close()


def test_log_records_keep_their_arguments_unless_a_secret_is_redacted() -> None:
    previous = logging.getLogRecordFactory()
    install_log_redaction(Redactor(["s3cr3t-value-123456"]))
    try:
        record = logging.getLogger("uvicorn.access").makeRecord(
            "uvicorn.access",
            logging.INFO,
            __file__,
            1,
            '%s - "%s %s HTTP/%s" %d',
            ("1.2.3.4:5", "GET", "/x", "1.1", 200),
            None,
        )
        line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False).format(record)
        assert line == '1.2.3.4:5 - "GET /x HTTP/1.1" 200 OK'
        leaked = logging.getLogger("oncall").makeRecord(
            "oncall", logging.INFO, __file__, 1, "token %s in %s", ("s3cr3t-value-123456", "/y"), None
        )
        assert "s3cr3t-value-123456" not in leaked.getMessage() and "/y" in leaked.getMessage()
    finally:
        logging.setLogRecordFactory(previous)
