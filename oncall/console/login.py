"""``/ui/login`` and ``/ui/logout``: password or token login into a signed session cookie, and logout."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from oncall.console.auth import COOKIE_PATH, LOGIN_COOKIE, LOGIN_FORM_TTL_S, SESSION_COOKIE, ConsoleAuth, Session
from oncall.console.deps import AuthDep, FormSession, clear_session_cookie, safe_next, set_session_cookie
from oncall.console.templating import render

log = logging.getLogger("oncall.console")
router = APIRouter(include_in_schema=False)


def login_page(
    request: Request, auth: ConsoleAuth, next_page: str, *, error: str | None = None, status_code: int = 200
) -> Response:
    """The login form with a fresh CSRF token (also signed into the login cookie)."""
    token, cookie = auth.new_login_form()
    context = {"csrf_token": token, "next": next_page, "error": error, "enabled": auth.enabled, "session": None}
    response = render(request, "login.html", context, status_code=status_code)
    response.set_cookie(
        LOGIN_COOKIE,
        cookie,
        max_age=LOGIN_FORM_TTL_S,
        path=COOKIE_PATH,
        httponly=True,
        secure=auth.secure_cookies,
        samesite="strict",
    )
    return response


@router.get("/ui/login")
async def get_login(request: Request, auth: AuthDep, next: Annotated[str, Query(max_length=500)] = "") -> Response:
    """The login page; a logged-in browser goes straight on to ``next`` (a console path)."""
    if auth.load(request.cookies.get(SESSION_COOKIE)) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return login_page(request, auth, safe_next(next))


async def authenticate(auth: ConsoleAuth, username: str, password: str, token: str) -> Session | None:
    """The new session for a token, or a user name and password; None when they do not match."""
    if token:
        return auth.check_token(token)
    if username and password:
        return await auth.check_password(username, password)
    return None


@router.post("/ui/login")
async def post_login(
    request: Request,
    auth: AuthDep,
    username: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    token: Annotated[str, Form(max_length=1024)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """Log in: 303 to ``next`` with the session cookie; the form again with 401 (wrong credentials),
    403 (expired or forged form) or 429 (too many failures from this address, with Retry-After)."""
    target = safe_next(next)
    client = request.client.host if request.client else "unknown"
    wait_s = auth.throttle.retry_after(client)
    if wait_s:
        response = login_page(request, auth, target, error="Too many failed logins: try again later.", status_code=429)
        response.headers["Retry-After"] = str(wait_s)
        return response
    if not auth.login_form_ok(request.cookies.get(LOGIN_COOKIE), csrf_token):
        return login_page(request, auth, target, error="The login form expired: try again.", status_code=403)
    session = await authenticate(auth, username, password, token) if auth.enabled else None
    if session is None:
        auth.throttle.failed(client)
        log.warning("console login failed from %s", client)
        return login_page(request, auth, target, error="Wrong user name, password or token.", status_code=401)
    auth.throttle.succeeded(client)
    log.info("console login: %s (%s, %s) from %s", session.user, session.role, session.method, client)
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(response, auth, session)
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    return response


@router.post("/ui/logout")
async def post_logout(session: FormSession, auth: AuthDep) -> Response:
    """End the session (the cookie is deleted) and go to the login page."""
    log.info("console logout: %s", session.user)
    response = RedirectResponse("/ui/login", status_code=303)
    clear_session_cookie(response, auth)
    return response
