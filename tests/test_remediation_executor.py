"""The executor's claim under a lease on a real store: one replica executes a row, a second one cannot claim
it meanwhile, and a replica taking over a dead one's row whose request was already sent only verifies (it
never calls the control plane again). Control plane and Prometheus are unreachable here (a dead port): a call
to the process manager would fail the row, so ``not_recovered`` proves no request was sent."""

from __future__ import annotations

import time

import httpx

from oncall.catalog.loader import load_catalog
from oncall.remediation.controlplane import ProcessManager
from oncall.remediation.executor import Executor
from oncall.remediation.verifier import Verifier
from oncall.sources.prometheus import PrometheusSource
from oncall.store import incidents, remediations
from oncall.store.database import Store
from oncall.tasks import BackgroundTasks
from tests.support import REPO_ROOT, free_port, sql, sql_exec
from tests.test_remediation_decisions import ON_CALL, Outbox, diagnosed_incident


def executor(store: Store, http: httpx.AsyncClient, replica: str, dead: str, outbox: Outbox) -> Executor:
    catalog = load_catalog(REPO_ROOT / "services.yaml", {"LB_URL": dead, "PM_URL": dead})
    verifier = Verifier(PrometheusSource(http, dead, 0.5), verify_s=0.5, poll_s=0.1)
    return Executor(
        store,
        catalog,
        lambda url: ProcessManager(http, url, 0.5, write_timeout_s=0.5),
        verifier,
        outbox,
        BackgroundTasks(),
        replica_id=replica,
        lease_s=30,
    )


async def approved_row(store: Store) -> int:
    incident_id = await diagnosed_incident(store)
    async with store.write() as conn:
        incident = await incidents.get(conn, incident_id)
        assert incident is not None
        row_id = await remediations.decide(
            conn,
            incident_id=incident_id,
            proposal_key=remediations.proposal_key(incident),
            number=1,
            service="inventory",
            action={"action": "clear_fault", "target": "inventory-2", "risk": "low"},
            status="approved",
            decided_by=ON_CALL,
            now=time.time(),
        )
    assert row_id is not None
    return row_id


async def test_a_taken_over_row_whose_request_was_sent_is_only_verified(store: Store) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    outbox = Outbox()
    row_id = await approved_row(store)
    sent = time.time() - 5
    await sql_exec(
        store,
        "UPDATE remediations SET status = 'running', claimed_by = 'dead-replica', lease_until = :past, sent_at = :sent"
        " WHERE id = :i",
        past=time.time() - 1,
        sent=sent,
        i=row_id,
    )
    async with httpx.AsyncClient() as http:
        survivor = executor(store, http, "survivor", dead, outbox)
        assert await survivor.resume() == [row_id]
        await survivor.tasks.drain(10)
    [row] = await sql(store, "SELECT status, claimed_by, result FROM remediations WHERE id = :i", i=row_id)
    assert (row["status"], row["claimed_by"]) == ("not_recovered", "survivor")
    assert '"resumed":true' in row["result"].replace(" ", "")
    assert len(outbox.sent) == 1 and "not recovered" in outbox.sent[0]
    assert "Next: option 2 (restart inventory-2)" in outbox.sent[0]  # the next step after an unverified action


async def test_a_held_claim_is_not_taken_and_an_unreachable_control_plane_fails_the_row(store: Store) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    outbox = Outbox()
    row_id = await approved_row(store)
    async with store.write() as conn:
        assert await remediations.claim(conn, row_id, "first", time.time(), 30)
    async with httpx.AsyncClient() as http:
        second = executor(store, http, "second", dead, outbox)
        assert await second.run(row_id) is None  # the lease is held: nothing runs
        await sql_exec(store, "UPDATE remediations SET lease_until = 0 WHERE id = :i", i=row_id)
        assert await second.run(row_id) == "failed"  # claimed after the lease; the process manager is down
    [row] = await sql(store, "SELECT status, sent_at, result FROM remediations WHERE id = :i", i=row_id)
    assert row["status"] == "failed" and row["sent_at"] is None and "process manager unavailable" in row["result"]
    assert "did not run" in outbox.sent[0]
