"""Zip uploads: a zip of images imports like a folder; a hostile or broken zip is refused whole, with what to do."""

import io
import zipfile

import pytest
from sqlalchemy import select

from curation.errors import IngestError
from curation.ingest import import_path
from curation.ingest.archive import import_zip
from curation.store.models import Image
from tests.helpers import jpeg_bytes, photo

pytestmark = pytest.mark.database  # run again on PostgreSQL by `make test-postgres`


def _zip(entries: dict[str, bytes], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for name, data in entries.items():
            bundle.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16
            bundle.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def test_zip_upload_imports_images(wb, admin, tmp_path):
    archive = tmp_path / "upload.zip"
    archive.write_bytes(_zip({"a/1.jpg": jpeg_bytes(photo(1)), "b/2.jpg": jpeg_bytes(photo(2))}))
    report = import_path(wb, admin, archive)
    assert report.imported == 2


@pytest.mark.parametrize(
    "entries,symlink,match",
    [
        ({"../../evil.jpg": b"x"}, None, "zip-slip"),
        ({"/etc/cron.d/evil": b"x"}, None, "zip-slip"),
        ({"ok.jpg": b"x"}, "link.jpg", "symbolic link"),
        ({"bomb.jpg": b"\0" * 5_000_000}, None, "zip-bomb guard"),
        ({"fine.jpg/inner.jpg": b"x"}, None, "a file and a folder both named 'fine.jpg'"),  # extraction crashed
    ],
)
def test_hostile_zips_are_refused_whole(wb, admin, tmp_path, entries, symlink, match):
    archive = tmp_path / "bad.zip"
    archive.write_bytes(_zip({"fine.jpg": jpeg_bytes(photo(3)), **entries}, symlink))
    with pytest.raises(IngestError, match=match):
        import_zip(wb, admin, archive)
    with wb.session() as s:
        assert s.scalars(select(Image)).all() == []
    bad = tmp_path / "not.zip"
    bad.write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(IngestError, match="not a readable zip"):
        import_zip(wb, admin, bad)


def test_zips_with_a_repeated_entry_or_too_much_inflated_data_are_refused_whole(wb, admin, tmp_path, monkeypatch):
    import warnings
    import zipfile

    from curation.ingest import archive as archive_module

    twice = tmp_path / "twice.zip"
    with warnings.catch_warnings(), zipfile.ZipFile(twice, "w") as bundle:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name; that is the point
        bundle.writestr("a.jpg", jpeg_bytes(photo(1)))
        bundle.writestr("a.jpg", jpeg_bytes(photo(2)))
    with pytest.raises(IngestError, match="holds 'a.jpg' twice"):
        import_zip(wb, admin, twice)
    big = tmp_path / "big.zip"
    big.write_bytes(_zip({"a.jpg": jpeg_bytes(photo(1)), "b.jpg": jpeg_bytes(photo(2))}))
    monkeypatch.setattr(archive_module, "MAX_ZIP_TOTAL_BYTES", len(jpeg_bytes(photo(1))) + 10)
    with pytest.raises(IngestError, match="import large sets as a folder"):
        import_zip(wb, admin, big)
    with wb.session() as s:
        assert s.scalars(select(Image)).all() == []
    assert not list(wb.settings.home.glob(".tmp-*"))  # the extraction folder is gone


def _raw_zip(name: bytes, data: bytes, *, flags: int = 0, method: int = 0) -> bytes:
    """A one-entry zip written byte by byte: what zipfile will not write (an encrypted flag, an unknown method,
    names no file system takes)."""
    import struct
    import zlib

    crc = zlib.crc32(data)
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, flags, method, 0, 0, crc, len(data), len(data), len(name), 0)
    central = struct.pack(
        "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, flags, method, 0, 0, crc, len(data), len(data), len(name), 0, 0, 0, 0, 0, 0
    )
    body = local + name + data
    directory = central + name
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(directory), len(body), 0)
    return body + directory + end


@pytest.mark.parametrize(
    "name, flags, method, saying",
    [
        (b"a" * 300 + b".jpg", 0, 0, "a name over 255 bytes"),
        (b"/".join([b"d" * 200] * 25) + b"/x.jpg", 0, 0, "a path over 4096 bytes"),
        (b"secret.jpg", 1, 0, "is encrypted"),
        (b"odd.jpg", 0, 99, "compression method 99"),
    ],
)
def test_zips_that_crashed_the_import_are_refused_whole_with_what_to_do(wb, admin, tmp_path, name, flags, method, saying):
    archive = tmp_path / "odd.zip"
    archive.write_bytes(_raw_zip(name, jpeg_bytes(photo(4)), flags=flags, method=method))
    with pytest.raises(IngestError, match=saying):
        import_zip(wb, admin, archive)
    with wb.session() as s:
        assert s.scalars(select(Image)).all() == []
    assert not list(wb.settings.home.glob(".tmp-*"))
