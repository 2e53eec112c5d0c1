"""The process `skinflow app` becomes: Streamlit's own command line, with three changes to its web server.

- No request to the internet of its own: a WebSocket handshake from a page of another origin made Streamlit look
  up this machine's external address (checkip.amazonaws.com, to compare it with the Origin). The workbench
  promises no request leaves the machine except to the LLM endpoint and Label Studio (docs/security.md), so the
  looked-up addresses are set beforehand to the loopback one, which Streamlit already allows: nothing is looked
  up, and no new origin is allowed.
- A route that sets the session cookie HttpOnly (app/ui/cookies.py), which a page cannot do.
- Every answer may be framed only by its own origin (cookies.FrameGuard).
"""

from starlette.middleware import Middleware
from starlette.routing import Route
from streamlit import net_util
from streamlit.web.cli import main
from streamlit.web.server.starlette import starlette_app

from app.ui.cookies import FrameGuard, cookie_route, route_path

net_util._external_ip = "127.0.0.1"
net_util._internal_ip = "127.0.0.1"  # (found by a UDP connect to 8.8.8.8; no packet, but no need either)

_streamlit_routes = starlette_app.create_streamlit_routes
_streamlit_middleware = starlette_app.create_streamlit_middleware


def _routes(runtime):
    return [Route(route_path(), cookie_route, methods=["POST"]), *_streamlit_routes(runtime)]


def _middleware():
    return [Middleware(FrameGuard), *_streamlit_middleware()]


starlette_app.create_streamlit_routes = _routes
starlette_app.create_streamlit_middleware = _middleware

if __name__ == "__main__":
    main(prog_name="streamlit")
