"""Ingest on a real SQLite file with real image files, including hostile inputs."""

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from curation.errors import IngestError
from curation.ingest import import_path
from curation.ingest.folder import import_folder
from curation.store.files import sha256_hex
from curation.store.models import Image as ImageRow
from tests.helpers import EXIF_MAKE, EXIF_ORIENTATION, image_rows, jpeg_bytes, photo, png_bomb, png_bytes, write

pytestmark = pytest.mark.database  # run again on PostgreSQL by `make test-postgres`


def _stored(wb, image_id) -> bytes:
    with wb.session() as s:
        return (wb.store_dir / s.get(ImageRow, image_id).file_path).read_bytes()


def test_folder_import_is_recursive_content_addressed_and_idempotent(wb, admin, tmp_path):
    root = tmp_path / "derm"
    write(root / "a.jpg", jpeg_bytes(photo(1)))
    write(root / "sub" / "deeper" / "b.png", png_bytes(photo(2)))
    write(root / "sub" / "c.jpeg", jpeg_bytes(photo(3)))
    write(root / ".DS_Store", b"junk")
    report = import_folder(wb, admin, root)
    assert report.imported == 3 and not report.failed
    for image_id in report.image_ids:
        data = _stored(wb, image_id)
        with wb.session() as s:
            row = s.get(ImageRow, image_id)
            assert row.sha256 == sha256_hex(data) and row.file_path.startswith(row.sha256[:2] + "/")
    before = image_rows(wb)
    again = import_folder(wb, admin, root)
    assert again.imported == 0 and len(again.duplicates) == 3
    assert image_rows(wb) == before


def test_identical_files_in_one_parallel_batch_are_stored_once(wb, admin, tmp_path):
    data = jpeg_bytes(photo(11))
    for name in ("a.jpg", "b.jpg", "c/d.jpg"):
        write(tmp_path / "same" / name, data)
    report = import_folder(wb, admin, tmp_path / "same")
    assert report.imported == 1 and len(report.duplicates) == 2
    assert all(why == f"same file as {tmp_path / 'same' / 'a.jpg'}" for _, why in report.duplicates)
    assert len(image_rows(wb)) == 1 and len(list(wb.store_dir.rglob("*.jpg"))) == 1


def test_exif_gps_and_camera_data_are_gone_and_upright_jpegs_keep_their_pixels(wb, admin, tmp_path):
    original = jpeg_bytes(photo(5, (120, 80)), gps=True, camera=True)
    assert b"SecretCam" in original
    report = import_path(wb, admin, write(tmp_path / "gps.jpg", original))
    stored = _stored(wb, report.image_ids[0])
    assert b"SecretCam" not in stored and b"Exif" not in stored
    img = Image.open(io.BytesIO(stored))
    assert dict(img.getexif()) == {}
    # lossless: the compressed data is unchanged, so the decoded pixels are identical
    assert np.array_equal(np.asarray(img), np.asarray(Image.open(io.BytesIO(original))))


def test_exif_orientation_is_applied_before_it_is_removed(wb, admin, tmp_path):
    picture = photo(6, (120, 80))
    report = import_path(wb, admin, write(tmp_path / "rot.jpg", jpeg_bytes(picture, orientation=6, camera=True)))
    stored = Image.open(io.BytesIO(_stored(wb, report.image_ids[0])))
    assert stored.size == (80, 120)
    assert EXIF_ORIENTATION not in stored.getexif() and EXIF_MAKE not in stored.getexif()
    with wb.session() as s:
        row = s.get(ImageRow, report.image_ids[0])
        assert (row.width, row.height) == (80, 120)


def test_label_from_folder_uses_the_taxonomy(wb, admin, tmp_path):
    write(tmp_path / "ds" / "BCC" / "1.jpg", jpeg_bytes(photo(7)))
    write(tmp_path / "ds" / "weird rash" / "2.jpg", jpeg_bytes(photo(8)))
    report = import_folder(wb, admin, tmp_path / "ds", label_from_folder=True)
    labels = sorted((r[2], k) for r in image_rows(wb).values() for k in [None])
    assert labels == [("BCC", None), ("weird rash", None)]
    with wb.session() as s:
        keys = dict(s.execute(select(ImageRow.source_label, ImageRow.diagnosis_key)).all())
    assert keys == {"BCC": "basal cell carcinoma", "weird rash": None}
    assert any("weird rash" in w for w in report.warnings)


# -- hostile inputs: each gives a clear reason, the rest of the import goes on, nothing stored changes ---
def _cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    photo(30).convert("CMYK").save(buffer, "JPEG")
    return buffer.getvalue()


def _png16() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).save(buffer, "PNG")
    return buffer.getvalue()


def _animated_gif() -> bytes:
    buffer = io.BytesIO()
    frames = [photo(i).convert("P") for i in range(3)]
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    return buffer.getvalue()


HOSTILE_FILES = {
    "truncated.jpg": (lambda: jpeg_bytes(photo(20, (200, 200)))[:1500], "truncated or corrupt"),
    "bomb.png": (png_bomb, "decompression-bomb guard"),
    "empty.jpg": (lambda: b"", "empty file"),
    "notes.jpg": (lambda: b"this is a text file, not a picture\n" * 10, "not a readable image"),
    "animated.gif": (_animated_gif, "animated"),
    "garbage-header.png": (lambda: b"\x89PNG\r\n\x1a\n" + os.urandom(200), "not a readable image|corrupt"),
    "fake.tiff": (lambda: b"II*\x00" + b"\x00" * 50, "not a readable image|corrupt"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_FILES))
def test_hostile_files_are_reported_with_a_reason_and_skipped(wb, admin, tmp_path, name):
    make, reason = HOSTILE_FILES[name]
    root = tmp_path / "mixed"
    write(root / "good.jpg", jpeg_bytes(photo(99)))
    import_folder(wb, admin, root)
    before = image_rows(wb)
    write(root / name, make())
    write(root / "good2.png", png_bytes(photo(98)))
    report = import_folder(wb, admin, root)
    assert report.imported == 1  # good2.png: the import went on
    assert [item.rsplit("/", 1)[-1] for item, _ in report.failed] == [name]
    import re

    assert re.search(reason, report.failed[0][1]), report.failed[0][1]
    after = image_rows(wb)
    assert {k: after[k] for k in before} == before  # nothing stored before was changed


def test_oversized_file_is_refused_before_reading(tmp_path, admin, wb):
    from curation.store.db import open_workbench
    from curation.store.settings import Settings

    small = open_workbench(Settings.load(environ={}, home=wb.settings.home, max_image_mb=0.001))
    report = import_path(small, admin, write(tmp_path / "big.png", png_bytes(photo(1, (200, 200)))))
    small.close()
    assert report.imported == 0 and "over the 0 MB limit" in report.failed[0][1]


@pytest.mark.parametrize("kind", ["cmyk", "png16", "png_named_jpg", "webp"])
def test_unusual_but_valid_images_are_converted_not_refused(wb, admin, tmp_path, kind):
    data = {"cmyk": _cmyk_jpeg, "png16": _png16, "png_named_jpg": lambda: png_bytes(photo(31))}.get(kind)
    if kind == "webp":
        buffer = io.BytesIO()
        photo(32).save(buffer, "WEBP")
        data = buffer.getvalue
    report = import_path(wb, admin, write(tmp_path / f"{kind}.jpg", data()))
    assert report.imported == 1, report.failed
    stored = Image.open(io.BytesIO(_stored(wb, report.image_ids[0])))
    stored.load()
    assert stored.format in ("JPEG", "PNG") and stored.mode in ("RGB", "L", "RGBA")
    if kind == "png_named_jpg":  # sniffed from content, not from the extension
        assert stored.format == "PNG"
    if kind == "png16":
        assert stored.mode == "L" and np.asarray(stored).max() > 200


def test_unicode_and_spaces_in_paths(wb, admin, tmp_path):
    path = write(tmp_path / "Patient Fotos" / "läsion ñ 皮膚 1.jpg", jpeg_bytes(photo(40)))
    report = import_folder(wb, admin, tmp_path / "Patient Fotos")
    assert report.imported == 1
    with wb.session() as s:
        assert s.scalar(select(ImageRow.source_ref)) == str(path.resolve())


def test_symlink_loops_and_broken_links_are_reported_not_followed(wb, admin, tmp_path):
    root = tmp_path / "links"
    write(root / "real.jpg", jpeg_bytes(photo(41)))
    os.symlink(root / "loop_b.jpg", root / "loop_a.jpg")
    os.symlink(root / "loop_a.jpg", root / "loop_b.jpg")
    os.symlink(root / "gone.jpg", root / "broken.jpg")
    os.symlink(root, root / "again")  # a folder link back to the root
    report = import_folder(wb, admin, root)
    assert report.imported == 1
    reasons = dict((item.rsplit("/", 1)[-1], why) for item, why in report.failed)
    assert reasons["loop_a.jpg"] == "symlink loop" and reasons["loop_b.jpg"] == "symlink loop"
    assert "not found" in reasons["broken.jpg"]
    assert any("symlinked folder not followed" in w for w in report.warnings)


def test_same_picture_with_different_metadata_is_a_duplicate(wb, admin, tmp_path):
    picture = photo(42)
    write(tmp_path / "d" / "plain.jpg", jpeg_bytes(picture))
    import_folder(wb, admin, tmp_path / "d")
    plain = (tmp_path / "d" / "plain.jpg").read_bytes()
    # the same JPEG with an extra EXIF segment: different file hash, same stored content
    with_exif = plain[:2] + b"\xff\xe1\x00\x10Exif\x00\x00MM\x00*\x00\x00\x00\x08" + plain[2:]
    write(tmp_path / "d" / "copy-with-exif.jpg", with_exif)
    report = import_folder(wb, admin, tmp_path / "d")
    assert report.imported == 0
    assert any("differs only in metadata" in why for _, why in report.duplicates)


def test_import_path_errors(wb, admin, tmp_path):
    with pytest.raises(IngestError, match="does not exist"):
        import_path(wb, admin, tmp_path / "nope")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(IngestError, match="empty"):
        import_path(wb, admin, empty)


def test_cmyk_16_bit_and_huge_exif_images_are_stored_as_plain_8_bit_pictures_without_metadata(wb, admin, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    Image.new("CMYK", (80, 60), (10, 200, 30, 5)).save(folder / "cmyk.jpg")
    Image.fromarray(np.random.default_rng(0).integers(0, 65535, (60, 80)).astype(np.uint16)).save(folder / "gray16.png")
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # a 60 kB ImageDescription
    Image.new("RGB", (80, 60), (200, 100, 50)).save(folder / "hugeexif.jpg", exif=exif)
    report = import_folder(wb, admin, folder)
    assert report.imported == 3 and report.failed == []
    with wb.session() as s:
        paths = [wb.store_dir / p for p in s.scalars(select(ImageRow.file_path))]
    modes = set()
    for path in paths:
        with Image.open(path) as stored:
            stored.load()
            modes.add(stored.mode)
            assert dict(stored.getexif()) == {} and stored.size == (80, 60)
            assert stored.mode in ("RGB", "L")  # what every browser and the trainer read
    assert modes == {"RGB", "L"} and all(p.stat().st_size < 20_000 for p in paths)


def test_an_import_clears_temp_files_of_killed_writers_but_not_of_live_ones(wb, admin, tmp_path):
    import socket
    import subprocess
    import sys

    from curation.store.files import TEMP_MAX_AGE_S
    from schema.files import TEMP_PREFIX

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    host = socket.gethostname()
    shard = wb.store_dir / "ab"
    shard.mkdir(parents=True)
    killed = shard / f"{TEMP_PREFIX}{host}-{int(dead.stdout)}-k1x2.jpg"
    running = shard / f"{TEMP_PREFIX}{host}-{os.getpid()}-r3y4.jpg"
    other_host_recent = shard / f"{TEMP_PREFIX}elsewhere-1-o5z6.jpg"
    other_host_stale = shard / f"{TEMP_PREFIX}elsewhere-2-s7w8.jpg"
    for path in (killed, running, other_host_recent, other_host_stale):
        path.write_bytes(b"half a picture")
    old = os.path.getmtime(other_host_stale) - TEMP_MAX_AGE_S - 60
    os.utime(other_host_stale, (old, old))
    folder = tmp_path / "in"
    write(folder / "a.jpg", jpeg_bytes(photo(1)))
    assert import_folder(wb, admin, folder).imported == 1
    assert not killed.exists() and not other_host_stale.exists()
    assert running.exists() and other_host_recent.exists()


def test_a_folder_import_follows_links_only_to_files_inside_the_folder(wb, admin, tmp_path):
    write(tmp_path / "elsewhere" / "secret.jpg", jpeg_bytes(photo(93)))
    root = tmp_path / "photos"
    write(root / "a.jpg", jpeg_bytes(photo(94)))
    os.symlink(tmp_path / "elsewhere" / "secret.jpg", root / "out.jpg")
    os.symlink(tmp_path / "elsewhere" / "gone.jpg", root / "out_broken.jpg")  # no file there: the same answer
    os.symlink(root / "a.jpg", root / "same_folder.jpg")
    report = import_folder(wb, admin, root)
    reasons = {Path(item).name: why for item, why in report.failed}
    assert set(reasons) == {"out.jpg", "out_broken.jpg"} and reasons["out.jpg"] == reasons["out_broken.jpg"]
    assert "outside the folder" in reasons["out.jpg"]
    assert report.imported == 1 and [Path(item).name for item, _ in report.duplicates] == ["same_folder.jpg"]
