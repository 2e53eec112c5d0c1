"""fetch-images against a real HTTP server on 127.0.0.1."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from curation.errors import FetchError
from curation.ingest.csv_import import import_csv
from curation.ingest.fetch import download, fetch_images
from curation.store.models import Image as ImageRow
from tests.helpers import jpeg_bytes, photo

pytestmark = pytest.mark.database  # run again on PostgreSQL by `make test-postgres`

PICTURE = jpeg_bytes(photo(3), gps=True)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        if self.path == "/img.jpg":
            self._send(200, PICTURE, "image/jpeg")
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/img.jpg")
            self.end_headers()
        elif self.path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.end_headers()
        elif self.path == "/text":
            self._send(200, b"<html>not an image</html>", "text/html")
        elif self.path == "/endless":  # no Content-Length, keeps sending: the size cap must stop it
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(2000):
                    self.wfile.write(b"\0" * 65536)
            except (BrokenPipeError, ConnectionResetError):
                pass
        else:
            self._send(404, b"", "text/plain")

    def _send(self, code, body, kind):
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _import_urls(wb, admin, tmp_path, urls):
    path = tmp_path / "urls.csv"
    path.write_text("url,label\n" + "".join(f"{u},psoriasis\n" for u in urls))
    import_csv(wb, admin, path)


def test_loopback_is_refused_unless_allowed_and_then_the_image_is_stored_clean(wb, admin, tmp_path, server):
    _import_urls(wb, admin, tmp_path, [f"{server}/img.jpg", f"{server}/redirect", f"{server}/text"])
    refused = fetch_images(wb, admin)
    assert refused.imported == 0 and len(refused.failed) == 3
    assert all("private, loopback or link-local" in why for _, why in refused.failed)

    allowed = fetch_images(wb, admin, allow_private=True)
    assert allowed.imported == 1
    assert [why for _, why in allowed.duplicates] == ["same file as image #1"]  # the redirect serves the same bytes
    assert "not a readable image" in allowed.failed[0][1]
    with wb.session() as s:
        row = s.scalar(select(ImageRow).where(ImageRow.url == f"{server}/img.jpg"))
        assert row.status == "pending" and row.sha256
        assert b"Exif" not in (wb.store_dir / row.file_path).read_bytes()
    assert fetch_images(wb, admin, allow_private=True).imported == 0  # nothing left that can be fetched


def test_download_guards(server):
    with pytest.raises(FetchError, match="only http and https"):
        download("file:///etc/passwd", timeout_s=2, max_bytes=10**6, allow_private=True)
    with pytest.raises(FetchError, match="only http and https"):
        download("ftp://127.0.0.1/x", timeout_s=2, max_bytes=10**6, allow_private=True)
    with pytest.raises(FetchError, match="limit"):
        download(f"{server}/endless", timeout_s=5, max_bytes=200_000, allow_private=True)
    with pytest.raises(FetchError, match="redirects"):
        download(f"{server}/loop", timeout_s=2, max_bytes=10**6, allow_private=True)
    with pytest.raises(FetchError, match="HTTP 404"):
        download(f"{server}/missing", timeout_s=2, max_bytes=10**6, allow_private=True)
    with pytest.raises(FetchError, match="link-local"):
        download("http://169.254.169.254/latest/meta-data", timeout_s=2, max_bytes=10**6, allow_private=False)
    assert download(f"{server}/redirect", timeout_s=2, max_bytes=10**6, allow_private=True) == PICTURE


def test_the_download_connects_to_the_address_that_was_checked(server, monkeypatch):
    """DNS rebinding: the name resolved once for the check and again to connect, so a DNS server could answer a
    public address first and a private one (169.254.169.254) second. Here the second answer is an unroutable
    address: a download that resolves again cannot reach the picture."""
    import socket

    from curation.ingest import fetch

    port = int(server.rsplit(":", 1)[1])
    answers = iter(["127.0.0.1"] + ["192.0.2.1"] * 10)  # TEST-NET-1: nothing answers there
    real = socket.getaddrinfo

    def rebinding(host, *args, **kwargs):
        if host == "pictures.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(fetch.socket, "getaddrinfo", rebinding)
    url = f"http://pictures.example:{port}/img.jpg"
    assert download(url, timeout_s=2, max_bytes=10**6, allow_private=True) == PICTURE
