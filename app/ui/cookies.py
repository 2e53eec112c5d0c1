"""The session cookie, set by the server as HttpOnly, and the frame guard (the HTTP side of app/ui/state.py).

Streamlit lets a page read cookies but not set them. A cookie written by the page's own script would be readable
by every script on the host (cookies are per host, not per port): a page on another port of 127.0.0.1 could read
it and replay it. So the page's script only posts a one-time ticket to /_skinflow/cookie, and the server answers
with the cookie as HttpOnly: no script, ours or another port's, can read it. The ticket is
worth nothing once used (or after TICKET_SECONDS), and it opens nothing by itself.

Every HTTP answer also says it may be framed only by pages of its own origin (X-Frame-Options, CSP
frame-ancestors): a page on another port framed a logged-in Admin page.
"""

from __future__ import annotations

import secrets
import threading
import time

TICKET_SECONDS = 60
ROUTE = "/_skinflow/cookie"
_tickets: dict[str, tuple[float, str]] = {}  # ticket -> (expires, the Set-Cookie value without Secure)
_lock = threading.Lock()


def route_path() -> str:
    """The route's path as the browser asks for it: under server.baseUrlPath when a proxy serves the app there."""
    from streamlit import config

    base = (config.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}{ROUTE}" if base else ROUTE


def ticket_for(set_cookie: str) -> str:
    """A one-time ticket the page exchanges for this Set-Cookie header (a session's cookie, or its deletion)."""
    ticket = secrets.token_urlsafe(32)
    now = time.monotonic()
    with _lock:
        for old in [t for t, (expires, _) in _tickets.items() if expires < now]:
            del _tickets[old]
        _tickets[ticket] = (now + TICKET_SECONDS, set_cookie)
    return ticket


def redeem(ticket: str) -> str | None:
    with _lock:
        expires, value = _tickets.pop(ticket, (0.0, ""))
    return value if expires >= time.monotonic() else None


async def cookie_route(request):
    """POST the ticket: the answer sets (or deletes) the HttpOnly session cookie it stands for."""
    from starlette.responses import Response

    ticket = (await request.body())[:100].decode("ascii", "replace")
    value = redeem(ticket)
    if value is None:
        return Response(status_code=404)
    if request.query_params.get("secure") == "1":  # the page came over https (a TLS proxy in front)
        value += "; Secure"
    return Response(status_code=204, headers={"set-cookie": value + "; HttpOnly", "cache-control": "no-store"})


class FrameGuard:
    """ASGI middleware: every HTTP answer may be framed by its own origin only."""

    HEADERS = [(b"x-frame-options", b"SAMEORIGIN"), (b"content-security-policy", b"frame-ancestors 'self'")]

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def guarded(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.HEADERS]}
            await send(message)

        return await self.app(scope, receive, guarded)
