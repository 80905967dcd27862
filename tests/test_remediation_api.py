"""``GET /status`` and ``POST /investigations`` over HTTP, in-process with the real services (the demo stack's
URLs unreachable: the on-demand investigation still ends with a diagnosis that says what was missing)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from on_call_agent import build_services
from tests.support import sql
from tests.test_agent_api import agent, make_settings


async def test_status_lists_the_safety_mode_and_on_demand_checks_start_an_investigation(tmp_path: Path) -> None:
    async with agent(make_settings(tmp_path, SAFETY_MODE="read-only"), build_services) as (client, app):
        status = await client.get("/status")
        assert status.status_code == 200
        body = status.json()
        assert body["safety_mode"] == "read-only" and body["pending_approvals"] == [] and body["recent_actions"] == []
        assert body["integrations"]["remediation"].startswith("safety mode read-only")
        assert (await client.post("/investigations", json={"service": "nope"})).status_code == 404
        assert (await client.post("/investigations", json={"service": "Bad Name"})).status_code == 422
        started = await client.post("/investigations", json={"service": "inventory", "by": "ravi"})
        assert started.status_code == 202
        incident_id = started.json()["incident_id"]
        store = app.state.services.store

        deadline = time.monotonic() + 60
        while not (await sql(store, "SELECT diagnosed_at FROM incidents WHERE id = :i", i=incident_id))[0][
            "diagnosed_at"
        ]:
            assert time.monotonic() < deadline, "the on-demand check was never diagnosed"
            await asyncio.sleep(0.2)
        [row] = await sql(store, "SELECT title, service FROM incidents WHERE id = :i", i=incident_id)
        assert row == {"title": "On-demand check of inventory", "service": "inventory"}
        anonymous = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent")
        async with anonymous:
            assert (await anonymous.get("/status")).status_code == 401
            assert (await anonymous.post("/investigations", json={"service": "inventory"})).status_code == 401
