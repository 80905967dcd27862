"""Request bodies in the OpenAPI schema for endpoints that read their body themselves.

``/alerts`` streams its JSON body and ``/webhook/twilio`` checks the signature over the raw form, so
neither declares a pydantic body parameter; ``json_body`` / ``form_body`` document the body anyway
(``openapi_extra``), so clients and fuzzers (schemathesis) see its schema. ``install_components``
adds the referenced models to ``components.schemas``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

REF = "#/components/schemas/{model}"
_DOCUMENTED: dict[str, type[BaseModel]] = {}


def _body(model: type[BaseModel], media_type: str) -> dict[str, Any]:
    _DOCUMENTED[model.__name__] = model
    schema = {"$ref": REF.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {media_type: {"schema": schema}}}}


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring an ``application/json`` body of ``model`` (by alias, as sent on the wire)."""
    return _body(model, "application/json")


def form_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring an ``application/x-www-form-urlencoded`` body of ``model``."""
    return _body(model, "application/x-www-form-urlencoded")


def install_components(app: FastAPI) -> None:
    """Make ``app.openapi()`` include the models named by ``json_body`` / ``form_body`` in its components."""
    original: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, model in _DOCUMENTED.items():
            model_schema = model.model_json_schema(by_alias=True, ref_template=REF, mode="validation")
            components.update(model_schema.pop("$defs", {}))
            components[name] = model_schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
