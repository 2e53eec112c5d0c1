"""The app makes no request of its own: a WebSocket handshake from a foreign page made Streamlit look up the
machine's external address at checkip.amazonaws.com. Every outbound HTTP request of the server goes through a
recording proxy here (HTTP_PROXY / HTTPS_PROXY); none may arrive."""

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.browser_app import demo_workbench, free_port, serve


class Recorder:
    """A proxy on 127.0.0.1 that answers nothing useful and remembers every request it was asked to forward."""

    def __init__(self):
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def _record(self):
                seen.append(f"{self.command} {self.path}")
                self.send_response(502)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_CONNECT = do_HEAD = _record  # noqa: N815

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def handshake(port: int, origin: str) -> str:
    request = (
        f"GET /_stcore/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request.encode())
        return connection.recv(4096).decode(errors="replace").split("\r\n", 1)[0]


def test_a_websocket_from_a_foreign_origin_is_refused_and_the_app_asks_nobody_anything(tmp_path):
    recorder = Recorder()
    proxy = {"HTTP_PROXY": recorder.url, "HTTPS_PROXY": recorder.url, "http_proxy": recorder.url, "https_proxy": recorder.url}
    wb = demo_workbench(tmp_path / "wb")
    try:
        port = free_port()
        with serve(tmp_path / "wb", port, env={**proxy, "NO_PROXY": "", "no_proxy": ""}):
            status = handshake(port, "http://attacker.example")
            assert " 101 " not in status, status  # refused: no session for a foreign page
            time.sleep(2.5)  # the lookup Streamlit made took up to 2 x 1 s
            assert recorder.seen == []
            assert " 101 " in handshake(port, f"http://127.0.0.1:{port}")  # our own page still connects
    finally:
        wb.close()
        recorder.close()
