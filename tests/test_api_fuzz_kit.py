"""Proof of the API fuzz kit (tests/api_fuzz.py) on a small incident API defined here (not product code).

``build_api(broken=True)`` has three deliberate bugs the kit must find: an exception behind bearer
auth (a blank acknowledge note), an explicit HTTP 500 (timeline limit over 50) and a response that
violates its documented schema (healthz). ``build_api(broken=False)`` fixes them and must come out clean.
"""

# No `from __future__ import annotations`: FastAPI must resolve the Annotated dependencies of the routes
# defined inside build_api(), and string annotations would name functions local to it.
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import StrEnum
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from tests.api_fuzz import UNHANDLED_EXCEPTION, FuzzReport, fuzz_asgi_app

TOKEN = "kit-test-token-4f9c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OPERATIONS = 10


class Severity(StrEnum):
    critical = "critical"
    warning = "warning"


class IncidentIn(BaseModel):
    alertname: str = Field(min_length=1, max_length=80)
    severity: Severity


class Incident(IncidentIn):
    id: int
    status: Literal["firing", "acknowledged", "resolved"]
    headline: str = ""


class NoteIn(BaseModel):
    note: str = Field(max_length=200)


class EscalationIn(BaseModel):
    level: int = Field(ge=1, le=3)


class Health(BaseModel):
    status: Literal["ok"]


class TimelineEntry(BaseModel):
    at: float
    event: str


def build_api(*, broken: bool) -> FastAPI:
    """A ten-operation incident API; ``broken`` plants the three bugs described in the module docstring."""
    lifespan_events: list[str] = []

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        lifespan_events.append("startup")
        yield
        lifespan_events.append("shutdown")

    app = FastAPI(title="fuzz kit proof", lifespan=lifespan)
    app.state.lifespan_events = lifespan_events
    incidents: dict[int, Incident] = {
        1: Incident(id=1, alertname="InventoryDown", severity=Severity.critical, status="firing")
    }
    bearer = HTTPBearer()

    def engineer(credentials: Annotated[HTTPAuthorizationCredentials, Depends(bearer)]) -> str:
        if credentials.credentials != TOKEN:
            raise HTTPException(401, "unknown token")
        return "ravi"

    def incident_or_404(incident_id: int) -> Incident:
        if incident_id not in incidents:
            raise HTTPException(404, f"no incident {incident_id}")
        return incidents[incident_id]

    @app.get("/healthz", response_model=Health)
    def healthz() -> JSONResponse:
        return JSONResponse({"status": 1 if broken else "ok"})

    @app.get("/incidents", response_model=list[Incident])
    def list_incidents(limit: Annotated[int, Query(ge=1, le=100)] = 20) -> list[Incident]:
        return list(incidents.values())[:limit]

    @app.post("/incidents", response_model=Incident, status_code=201)
    def create_incident(body: IncidentIn) -> Incident:
        incident = Incident(id=max(incidents) + 1, status="firing", **body.model_dump())
        incidents[incident.id] = incident
        return incident

    @app.get("/incidents/{incident_id}", response_model=Incident)
    def get_incident(incident: Annotated[Incident, Depends(incident_or_404)]) -> Incident:
        return incident

    @app.post("/incidents/{incident_id}/acknowledge", response_model=Incident)
    def acknowledge(
        body: NoteIn, incident: Annotated[Incident, Depends(incident_or_404)], who: Annotated[str, Depends(engineer)]
    ) -> Incident:
        words = body.note.split()
        first_word = words[0] if broken or words else ""  # broken: IndexError on a blank note
        incident.status, incident.headline = "acknowledged", f"{who}: {first_word}"
        return incident

    @app.post("/incidents/{incident_id}/resolve", response_model=Incident)
    def resolve(
        incident: Annotated[Incident, Depends(incident_or_404)], _: Annotated[str, Depends(engineer)]
    ) -> Incident:
        incident.status = "resolved"
        return incident

    @app.post("/incidents/{incident_id}/escalate", response_model=Incident)
    def escalate(
        body: EscalationIn,
        incident: Annotated[Incident, Depends(incident_or_404)],
        _: Annotated[str, Depends(engineer)],
    ) -> Incident:
        return incident

    @app.delete("/incidents/{incident_id}", status_code=204)
    def delete_incident(
        incident: Annotated[Incident, Depends(incident_or_404)], _: Annotated[str, Depends(engineer)]
    ) -> None:
        if incident.id != 1:
            del incidents[incident.id]

    @app.get("/incidents/{incident_id}/timeline", response_model=list[TimelineEntry])
    def timeline(
        incident: Annotated[Incident, Depends(incident_or_404)], limit: Annotated[int, Query(ge=1, le=1000)] = 10
    ) -> list[TimelineEntry] | JSONResponse:
        if limit > 50:
            if broken:
                return JSONResponse({"detail": "timeline store unavailable"}, status_code=500)
            limit = 50
        return [TimelineEntry(at=0.0, event=f"incident {incident.id} opened")][:limit]

    @app.get("/runbooks/{alertname}")
    def runbook(alertname: Annotated[str, Path(max_length=80)]) -> dict[str, str]:
        return {"alertname": alertname, "url": f"https://runbooks.example/{alertname}"}

    return app


EXISTING = {"incident_id": 1}
ACKNOWLEDGE = "POST /incidents/{incident_id}/acknowledge"


def test_the_kit_finds_the_three_planted_bugs_with_reproducing_requests() -> None:
    report = fuzz_asgi_app(build_api(broken=True), headers=AUTH, path_parameters=EXISTING)

    found = {(failure.operation, failure.kind) for failure in report.failures}
    assert found == {
        ("GET /healthz", "Response violates schema"),
        (ACKNOWLEDGE, UNHANDLED_EXCEPTION),
        ("GET /incidents/{incident_id}/timeline", "Server error"),
    }, report.format()
    assert not report.ok
    by_kind = {failure.kind: failure for failure in report.failures}
    timeline = by_kind["Server error"]
    assert (timeline.code, timeline.status_code) == ("ST101", 500)
    assert timeline.reproduce.startswith("curl -X GET") and "/incidents/1/timeline?limit=" in timeline.reproduce
    assert "timeline store unavailable" in timeline.detail
    crash = by_kind[UNHANDLED_EXCEPTION]
    assert "IndexError" in crash.detail and "in acknowledge" in crash.detail
    assert "/incidents/1/acknowledge" in crash.reproduce and '"note": ' in crash.reproduce
    text = report.format()
    assert TOKEN not in text and "Authorization: [Filtered]" in text


def test_the_fixed_api_comes_out_clean_over_every_operation() -> None:
    app = build_api(broken=False)
    report = fuzz_asgi_app(app, headers=AUTH, path_parameters=EXISTING)

    assert report.ok, report.format()
    assert len(report.operations) == OPERATIONS == len(report.statuses)
    assert all(report.statuses[operation] for operation in report.operations)
    assert report.statuses[ACKNOWLEDGE][200] > 0 and report.statuses[ACKNOWLEDGE][422] > 0
    assert app.state.lifespan_events == ["startup", "shutdown"]


def test_the_bearer_token_gets_the_fuzzer_past_401_to_the_bug_behind_it() -> None:
    app = build_api(broken=True)

    def acknowledge_only(headers: dict[str, str] | None) -> FuzzReport:
        return fuzz_asgi_app(
            app, headers=headers, path_parameters=EXISTING, include=lambda operation: operation.label == ACKNOWLEDGE
        )

    anonymous, signed_in = acknowledge_only(None), acknowledge_only(AUTH)

    assert anonymous.failures == [] and anonymous.statuses[ACKNOWLEDGE][401] > 0, anonymous.format()
    assert not any(200 <= status < 300 for status in anonymous.statuses[ACKNOWLEDGE]), anonymous.format()
    assert [failure.kind for failure in signed_in.failures] == [UNHANDLED_EXCEPTION], signed_in.format()
    assert signed_in.statuses[ACKNOWLEDGE][200] > 0


def test_the_seed_fixes_the_generated_cases() -> None:
    app = build_api(broken=False)

    def create_only(seed: int) -> str:
        report = fuzz_asgi_app(
            app, seed=seed, max_examples=10, include=lambda operation: operation.label == "POST /incidents"
        )
        assert report.cases > 0
        return report.cases_digest

    assert create_only(1) == create_only(1) != create_only(2)


def test_a_spent_time_budget_fails_the_run_instead_of_passing_it() -> None:
    report = fuzz_asgi_app(build_api(broken=True), headers=AUTH, time_budget_s=0)

    assert not report.ok and report.cases == 0 and report.failures == []
    assert len(report.skipped) == 2 * OPERATIONS
    assert all(reason.startswith("time budget") for reason in report.skipped.values())
