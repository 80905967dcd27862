"""What the console's routes depend on: the app's ``ConsoleAuth``, the logged-in session, CSRF and role checks.

Checks, in order, for a form post: a session (else 303 to the login page), not a cross-site request
(``Sec-Fetch-Site: cross-site`` is refused), the form's CSRF token (else 403), then the role where an
action needs a responder (else 403).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import Depends, Form, HTTPException, Request
from fastapi.responses import Response

from oncall.api.deps import ServicesDep
from oncall.console.auth import COOKIE_PATH, SESSION_COOKIE, ConsoleAuth, Session, csrf_ok

DEFAULT_PAGE = "/ui/incidents"
MAX_NEXT_CHARS = 500


async def console_auth(request: Request, services: ServicesDep) -> ConsoleAuth:
    """The app's ``ConsoleAuth``, made from its settings on first use and kept in ``app.state``."""
    auth: ConsoleAuth | None = getattr(request.app.state, "console_auth", None)
    if auth is None:
        auth = ConsoleAuth(services.settings)
        request.app.state.console_auth = auth
    return auth


AuthDep = Annotated[ConsoleAuth, Depends(console_auth)]


def safe_next(target: str | None) -> str:
    """``target`` when it is a console path on this site (``/ui`` or ``/ui/...``), else the incident list.

    Refuses scheme- or host-relative URLs (``//evil.example``, ``/\\evil``) so the login cannot redirect away.
    """
    if not target or len(target) > MAX_NEXT_CHARS or "\\" in target or target.startswith("//"):
        return DEFAULT_PAGE
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not (parts.path == "/ui" or parts.path.startswith("/ui/")):
        return DEFAULT_PAGE
    return target


def login_redirect(request: Request) -> HTTPException:
    """A 303 to the login page that comes back to the requested page afterwards."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return HTTPException(303, "login required", headers={"Location": f"/ui/login?next={quote(safe_next(here))}"})


async def page_session(request: Request, auth: AuthDep) -> Session:
    """The logged-in session of a page request; raises a 303 to the login page without one."""
    session = auth.load(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise login_redirect(request)
    return session


async def stream_session(request: Request, auth: AuthDep) -> Session:
    """The logged-in session of a live-update stream; 401 without one (an event stream cannot redirect)."""
    session = auth.load(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise HTTPException(401, "login required")
    return session


async def form_session(
    request: Request, auth: AuthDep, csrf_token: Annotated[str, Form(max_length=200)] = ""
) -> Session:
    """The session of a form post whose CSRF token is the session's.

    Raises:
        HTTPException: 303 to the login page without a session; 403 for a cross-site request or a
            missing or wrong CSRF token.
    """
    session = auth.load(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise HTTPException(303, "login required", headers={"Location": "/ui/login"})
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise HTTPException(403, "cross-site form posts are refused")
    if not csrf_ok(session, csrf_token):
        raise HTTPException(403, "CSRF token missing or wrong: reload the page and try again")
    return session


async def responder_session(session: Annotated[Session, Depends(form_session)]) -> Session:
    """A form post's session when its user is a responder; 403 for a viewer."""
    if not session.is_responder:
        raise HTTPException(403, f"{session.user} is a viewer: only a responder can do this")
    return session


PageSession = Annotated[Session, Depends(page_session)]
StreamSession = Annotated[Session, Depends(stream_session)]
FormSession = Annotated[Session, Depends(form_session)]
ResponderSession = Annotated[Session, Depends(responder_session)]


def set_session_cookie(response: Response, auth: ConsoleAuth, session: Session) -> None:
    """Write ``session`` into the response's cookie: HttpOnly, SameSite=Lax, path ``/ui``, Secure on https.

    SameSite=Lax (not Strict) so that the WhatsApp "Details" link, a cross-site top-level navigation,
    opens the page logged in; forms are protected by their CSRF token.
    """
    response.set_cookie(
        SESSION_COOKIE,
        auth.dump(session),
        max_age=auth.expires_in(session),
        path=COOKIE_PATH,
        httponly=True,
        secure=auth.secure_cookies,
        samesite="lax",
    )


def clear_session_cookie(response: Response, auth: ConsoleAuth) -> None:
    """Delete the session cookie (logout)."""
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, secure=auth.secure_cookies, samesite="lax")
