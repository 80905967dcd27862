"""Fault injection shared by the demo services (`inventory_service.py`, `payments_service.py`).

Each service declares its own modes and their parameters by subclassing ``FaultSpecBase``; the rules
(parameters of another mode rejected, missing parameters of the mode defaulted) and the injected-error
exception are the same for both, so a fault body means the same thing on every service.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator


class FaultSpecBase(BaseModel):
    """A fault body: a ``mode`` plus the parameters that mode takes.

    Subclasses declare ``mode`` (a Literal of their modes), one optional field per parameter, and
    ``mode_params``: per mode, its parameters with their defaults (fields named in no mode, such as the
    process manager's ``replica``, are not parameters). Unknown fields and parameters of another
    mode are rejected (pydantic ``ValidationError``, answered 422 by FastAPI); a parameter the mode takes and
    the body omits gets its default.
    """

    model_config = ConfigDict(extra="forbid")
    mode_params: ClassVar[dict[str, dict[str, int | float]]] = {"none": {}}

    mode: str

    @model_validator(mode="after")
    def _params_match_mode(self) -> FaultSpecBase:
        defaults = self.mode_params[self.mode]
        for name in sorted({name for params in self.mode_params.values() for name in params}):
            value = getattr(self, name)
            if name not in defaults and value is not None:
                raise ValueError(f"{name} does not apply to mode {self.mode!r}")
            if name in defaults and value is None:
                setattr(self, name, defaults[name])
        return self

    def params(self) -> dict[str, Any]:
        """The parameters of this mode only, e.g. ``{"latency_ms": 800}``."""
        return {name: getattr(self, name) for name in self.mode_params[self.mode]}


class InjectedFault(Exception):
    """Raised by the ``errors`` fault; answered 500 {"detail": "injected fault: errors"}."""

    public_detail = "injected fault: errors"
