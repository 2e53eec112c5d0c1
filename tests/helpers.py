"""Real image files for tests, written by PIL (and a few hand-built hostile ones), and a TCP relay a test can cut."""

from __future__ import annotations

import contextlib
import io
import socket
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

EXIF_MAKE, EXIF_MODEL, EXIF_ORIENTATION, EXIF_GPS_IFD = 0x010F, 0x0110, 0x0112, 0x8825


def photo(seed: int = 0, size: tuple[int, int] = (96, 64)) -> Image.Image:
    """A random RGB picture (width, height): every seed gives different pixels."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def jpeg_bytes(img: Image.Image, *, orientation: int | None = None, gps: bool = False, camera: bool = False, **save) -> bytes:
    exif = Image.Exif()
    if orientation:
        exif[EXIF_ORIENTATION] = orientation
    if camera:
        exif[EXIF_MAKE], exif[EXIF_MODEL] = "SecretCam", "Model-X"
    if gps:
        exif[EXIF_GPS_IFD] = {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)}
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", exif=exif, **{"quality": 90, **save})
    return buffer.getvalue()


def png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def png_bomb(width: int = 40_000, height: int = 40_000) -> bytes:
    """A tiny PNG whose header claims a huge picture (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + width // 8) * 64, 9)  # a few rows: enough to look plausible
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


# the smallest training budget that still runs every stage (tests of the trainer, the ablation)
TINY_BUDGET = {
    "sft_epochs": 1.0,
    "stage1_steps": 2,
    "stage2_steps": 2,
    "save_steps": 1,
    "batch_size": 4,
    "num_generations": 2,
    "stage1_max_completion_length": 16,
    "stage2_max_completion_length": 8,
}


def image_rows(wb) -> dict:
    """Every image row's identity and state, to compare before and after an import that must change nothing."""
    from sqlalchemy import select

    from curation.store.models import Image as ImageRow

    with wb.session() as s:
        return {r.id: (r.sha256, r.status, r.source_label, r.fitzpatrick, r.file_path) for r in s.scalars(select(ImageRow))}


class TcpRelay:
    """A TCP relay on 127.0.0.1 to a real server, which a test can cut (the listening socket and every open
    connection closed: to a client the server is gone) and bring back on the same port."""

    def __init__(self, target_port: int):
        self.target_port, self.port = target_port, 0
        self._listener = None
        self._open: list = []
        self._lock = threading.Lock()
        self.start()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port, self._listener = listener.getsockname()[1], listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:  # cut: the listener is closed
                return
            with self._lock:
                self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source, sink) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.close()

    def cut(self) -> None:
        self._listener.close()
        with self._lock:
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
            self._open.clear()
