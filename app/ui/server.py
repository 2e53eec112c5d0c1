"""The process `skinflow app` becomes: Streamlit's own command line, after switching off the one request to the
internet Streamlit makes by itself.

A WebSocket handshake from a page of another origin made Streamlit look up this machine's external address
(checkip.amazonaws.com, to compare it with the Origin). The workbench promises no request leaves the machine
except to the LLM endpoint and Label Studio (docs/security.md), so the looked-up addresses are set beforehand to
the loopback one, which Streamlit already allows: nothing is looked up, and no new origin is allowed.
"""

from streamlit import net_util
from streamlit.web.cli import main

net_util._external_ip = "127.0.0.1"
net_util._internal_ip = "127.0.0.1"  # (found by a UDP connect to 8.8.8.8; no packet, but no need either)

if __name__ == "__main__":
    main(prog_name="streamlit")
