"""The incident console's routes under ``/ui``: login, pages, responder actions, live updates, static files.

``router`` is what the composition root includes (``on_call_agent.create_app``).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.staticfiles import StaticFiles

from oncall.console import actions, live, login, pages
from oncall.console.templating import STATIC_DIR

router = APIRouter(include_in_schema=False)
for part in (login.router, live.router, pages.router, actions.router):
    router.include_router(part)
router.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="console-static")
