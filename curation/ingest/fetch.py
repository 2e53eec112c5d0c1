"""Download images of rows imported by URL only (`skinflow fetch-images`), with every guard: http/https
only, the address of every redirect hop checked (loopback, private, link-local, multicast and reserved
addresses refused unless allowed), a size cap while streaming and an overall deadline."""

from __future__ import annotations

import ipaddress
import socket
import time
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
from sqlalchemy import select

from curation.errors import FetchError
from curation.ingest.common import ImportReport, KnownContent, Progress, ingest_bytes, start_import
from curation.store import audit
from curation.store.auth import Actor
from curation.store.db import Workbench
from curation.store.files import sha256_hex
from curation.store.models import Image


def _check_address(url: str, allow_private: bool) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address to connect to for `url`, after checking every address its host resolves to. The caller
    connects to this one: resolving the name again to connect let a DNS server answer differently the second
    time (DNS rebinding: a public address for the check, 169.254.169.254 for the download)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError(f"only http and https URLs are fetched, not {parts.scheme or 'no scheme'!r}")
    if not parts.hostname:
        raise FetchError("URL has no host")
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except socket.gaierror:
        raise FetchError(f"cannot resolve host {parts.hostname!r} (no network?)") from None
    if not infos:
        raise FetchError(f"cannot resolve host {parts.hostname!r}")
    if allow_private:
        return ipaddress.ip_address(infos[0][4][0].split("%")[0])
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if (
            address.is_private
            or address.is_loopback
            or address.is_link_local
            or address.is_multicast
            or address.is_reserved
            or address.is_unspecified
        ):
            raise FetchError(
                f"refused: {parts.hostname} resolves to a private, loopback or link-local address ({address}); "
                "set fetch_allow_private (SKINFLOW_FETCH_ALLOW_PRIVATE=1) to allow it"
            )
    return ipaddress.ip_address(infos[0][4][0].split("%")[0])


def _pinned(url: str, address) -> tuple[str, dict[str, str], dict[str, str]]:
    """(url with the checked address as its host, the Host header, the TLS name to verify): the request goes to
    the address that was checked, and https still checks the certificate against the name in the URL."""
    parts = urlsplit(url)
    host = f"[{address}]" if address.version == 6 else str(address)
    netloc = host + (f":{parts.port}" if parts.port else "")
    headers = {"Host": parts.netloc.rsplit("@", 1)[-1]}
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")), headers, extensions


def download(url: str, *, timeout_s: float, max_bytes: int, allow_private: bool, max_redirects: int = 5) -> bytes:
    """GET a URL with every guard: scheme, address check on each redirect hop, size cap, deadline."""
    deadline = time.monotonic() + timeout_s * 3
    with httpx.Client(follow_redirects=False, timeout=timeout_s, trust_env=False) as client:
        for _hop in range(max_redirects + 1):
            target, headers, extensions = _pinned(url, _check_address(url, allow_private))
            try:
                with client.stream("GET", target, headers=headers, extensions=extensions) as response:
                    if response.is_redirect:
                        url = urljoin(url, response.headers.get("location", ""))
                        continue
                    if response.status_code != 200:
                        raise FetchError(f"HTTP {response.status_code} from {urlsplit(url).hostname}")
                    declared = int(response.headers.get("content-length") or 0)
                    if declared > max_bytes:
                        raise FetchError(f"image is {declared / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit")
                    chunks, total = [], 0
                    for chunk in response.iter_bytes():
                        total += len(chunk)
                        if total > max_bytes:
                            raise FetchError(f"download exceeded the {max_bytes / 1e6:.0f} MB limit; stopped")
                        if time.monotonic() > deadline:
                            raise FetchError(f"download took longer than {timeout_s * 3:.0f} s; stopped")
                        chunks.append(chunk)
                    return b"".join(chunks)
            except httpx.TimeoutException:
                raise FetchError(f"timed out after {timeout_s:.0f} s") from None
            except httpx.HTTPError as e:
                raise FetchError(f"download failed: {e.__class__.__name__}") from None
    raise FetchError(f"more than {max_redirects} redirects")


def fetch_images(
    wb: Workbench,
    actor: Actor,
    *,
    limit: int | None = None,
    allow_private: bool | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Download images of rows stored as image_missing. Each image commits on its own, so an
    interrupted run keeps what it fetched and a re-run continues with the rest."""
    start_import(wb, actor, "fetch images")
    allow = wb.settings.fetch_allow_private if allow_private is None else allow_private
    with wb.session() as session:
        query = select(Image.id, Image.url).where(Image.status == "image_missing", Image.url.is_not(None)).order_by(Image.id)
        todo = session.execute(query.limit(limit) if limit else query).all()
        known = KnownContent(session)
    report = ImportReport()
    for index, (image_id, url) in enumerate(todo, 1):
        item = f"image #{image_id} {url}"
        try:
            data = download(
                url, timeout_s=wb.settings.fetch_timeout_s, max_bytes=int(wb.settings.max_image_mb * 1e6), allow_private=allow
            )
        except FetchError as e:
            report.failed.append((item, str(e)))
        else:
            with wb.session() as session:
                image = session.get(Image, image_id)
                if image is not None and image.status == "image_missing":
                    if ingest_bytes(wb, session, known, report, item, data, sha256_hex(data), lambda image=image: image, image):
                        report.image_ids.append(image_id)
                        audit.record(session, actor, "image.fetch", "image", image_id, url=url)
        if progress:
            progress(index, len(todo))
    return report
