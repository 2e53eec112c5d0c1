"""A stored image carries pixels and the minimum container data, nothing else: identifying text put in every
metadata place each accepted format has is gone after import, whichever path the image took (JPEG and PNG
stripped losslessly, or decoded and re-encoded)."""

from __future__ import annotations

import io
import re
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms, PngImagePlugin

from curation.ingest.clean import sanitize_image, scrub_icc

NAME, MRN = "Jane Doe", "MRN 12345"
PHI = f"Patient: {NAME}, {MRN}"
MAX_PIXELS = 50_000_000


def _phi_icc() -> bytes:
    """A real sRGB profile whose description says who the patient is (same length as the original text)."""
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    original = "sRGB built-in".encode("utf-16-be")
    assert original in profile
    return profile.replace(original, "Jane Doe 1234".encode("utf-16-be"))


def _exif(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010E] = PHI  # ImageDescription
    exif[0x013B] = NAME  # Artist
    exif[0x8298] = MRN  # Copyright
    return exif


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _jpeg(orientation: int) -> bytes:
    img = Image.fromarray(np.random.default_rng(orientation).integers(0, 256, (48, 64, 3), dtype=np.uint8), "RGB")
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=90, exif=_exif(orientation), comment=PHI.encode(), icc_profile=_phi_icc())
    data = buffer.getvalue()
    extra = (
        _segment(0xE0, b"JFXX\x00\x10" + PHI.encode())  # a JFIF extension segment
        + _segment(
            0xE1, b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta><dc:creator>" + NAME.encode() + b"</dc:creator></x:xmpmeta>"
        )
        + _segment(0xED, b"Photoshop 3.0\x008BIM\x04\x04\x00\x00\x00\x00\x00\x12\x1c\x02\x05\x00\x0c" + MRN.encode())  # IPTC
        + _segment(0xEF, PHI.encode())  # an application segment nobody knows
        + _segment(0xFE, PHI.encode())  # a second comment
    )
    return data[:2] + extra + data[2:] + PHI.encode()  # and a trailer after EOI


def _png(sixteen_bit: bool) -> bytes:
    if sixteen_bit:
        img = Image.fromarray(np.random.default_rng(1).integers(0, 65535, (40, 50), dtype=np.uint16))
    else:
        img = Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 50, 3), dtype=np.uint8), "RGB")
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", PHI)
    info.add_text("Author", NAME, zip=True)  # zTXt
    info.add_itxt("Description", PHI, lang="en", tkey="Beschreibung", zip=True)  # iTXt, compressed
    buffer = io.BytesIO()
    img.save(buffer, "PNG", pnginfo=info, exif=_exif(), icc_profile=_phi_icc())
    return _rename_iccp(buffer.getvalue())  # the iCCP profile name is free Latin-1 text too


def _rename_iccp(data: bytes) -> bytes:
    out, pos = [data[:8]], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"iCCP":
            body = NAME.encode() + body[body.index(b"\x00") :]
        out.append(struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body)))
        pos += 12 + length
    return b"".join(out)


def _other(fmt: str) -> bytes:
    img = Image.fromarray(np.random.default_rng(3).integers(0, 256, (36, 52, 3), dtype=np.uint8), "RGB")
    buffer = io.BytesIO()
    if fmt == "WEBP":
        img.save(buffer, "WEBP", lossless=True, exif=_exif(), icc_profile=_phi_icc(), xmp=f"<x>{PHI}</x>".encode())
    elif fmt == "TIFF":
        tags = {270: PHI, 315: NAME, 33432: MRN, 700: f"<x>{PHI}</x>".encode(), 34675: _phi_icc()}
        img.save(buffer, "TIFF", tiffinfo=tags)
    elif fmt == "GIF":
        img.convert("P").save(buffer, "GIF", comment=PHI.encode())
    else:
        img.save(buffer, fmt)
    return buffer.getvalue()


CASES = {
    "jpeg, stripped losslessly (upright)": (_jpeg, 1, "JPEG"),
    "jpeg, re-encoded (EXIF-rotated)": (_jpeg, 6, "JPEG"),
    "png, rebuilt from its pixels": (_png, False, "PNG"),
    "png, re-encoded (16-bit)": (_png, True, "PNG"),
    "webp, re-encoded": (_other, "WEBP", "PNG"),
    "tiff, re-encoded": (_other, "TIFF", "PNG"),
    "gif, re-encoded": (_other, "GIF", "PNG"),
    "bmp, re-encoded": (_other, "BMP", "PNG"),
}


def _texts(data: bytes) -> list[bytes]:
    """The file itself and every zlib stream inside it (PNG text and profile chunks are compressed)."""
    found = [data]
    for start in (m.start() for m in re.finditer(rb"\x78[\x01\x5e\x9c\xda]", data)):
        try:
            found.append(zlib.decompressobj().decompress(data[start:]))
        except zlib.error:
            continue
    return found


def _jpeg_markers(data: bytes) -> list[tuple[int, bytes]]:
    markers, pos = [], 2
    while pos < len(data):
        marker = data[pos + 1]
        if marker == 0xD9:
            markers.append((marker, b""))
            assert pos + 2 == len(data), "bytes after the end of the image"
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        markers.append((marker, data[pos + 4 : pos + 2 + length]))
        pos += 2 + length
        if marker == 0xDA:  # skip the entropy-coded data
            pos = re.compile(rb"\xff[^\x00\xd0-\xd7]").search(data, pos).start()
    return markers


@pytest.mark.parametrize("case", list(CASES))
def test_identifying_text_in_every_metadata_place_is_gone_after_cleaning(case):
    make, argument, stored_format = CASES[case]
    original = make(argument)
    if argument != "BMP":  # BMP has no place for text: it is here for the re-encode path's own output
        assert any(NAME.encode() in t or NAME.encode("utf-16-be") in t for t in _texts(original)), "the input carries PHI"
    clean = sanitize_image(original, MAX_PIXELS)
    assert clean.format == stored_format
    for text in _texts(clean.data):
        for needle in (NAME, MRN, "12345", "Jane Doe 1234"):
            assert needle.encode() not in text and needle.encode("utf-16-be") not in text, (case, needle)
    with Image.open(io.BytesIO(clean.data)) as stored:
        stored.load()
        assert not set(stored.info) & {"comment", "exif", "xmp", "XML:com.adobe.xmp", "Comment", "Author", "Description"}
        assert dict(stored.getexif()) == {}
        icc = stored.info.get("icc_profile")
        if argument not in ("GIF", "BMP"):  # the colour profile survives, as a valid profile without its text
            assert icc and ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile.profile_description.strip(" \x00") == ""
    if stored_format == "JPEG":
        markers = _jpeg_markers(clean.data)
        apps = [(marker, body) for marker, body in markers if 0xE0 <= marker <= 0xEF or marker == 0xFE]
        assert {marker for marker, _ in apps} <= {0xE0, 0xE2}  # JFIF and the ICC profile; no comment, EXIF, XMP, IPTC
        assert all(len(body) == 14 and body.startswith(b"JFIF\x00") for marker, body in apps if marker == 0xE0)
        assert all(body.startswith(b"ICC_PROFILE\x00") for marker, body in apps if marker == 0xE2)


def test_lossless_jpeg_keeps_its_compressed_pixels_and_rotation_is_applied_on_re_encode():
    upright = _jpeg(1)
    clean = sanitize_image(upright, MAX_PIXELS)
    with Image.open(io.BytesIO(upright)) as a, Image.open(io.BytesIO(clean.data)) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))  # same decoded pixels: not recompressed
    rotated = sanitize_image(_jpeg(6), MAX_PIXELS)
    assert (rotated.width, rotated.height) == (48, 64)


def test_scrub_icc_keeps_colour_tags_and_blanks_text():
    profile = _phi_icc()
    scrubbed = scrub_icc(profile)
    assert len(scrubbed) == len(profile) and "Jane".encode("utf-16-be") not in scrubbed
    before, after = ImageCms.ImageCmsProfile(io.BytesIO(profile)), ImageCms.ImageCmsProfile(io.BytesIO(scrubbed))
    assert after.profile.red_colorant == before.profile.red_colorant  # the colour data is untouched
    assert after.profile.copyright.strip(" \x00") == ""
    assert scrub_icc(b"not a profile") == b""


def _with_chunk_after_idat(data: bytes, kind: bytes, body: bytes) -> bytes:
    """The PNG with a chunk inserted just before IEND (after the image data)."""
    end = data.rindex(b"IEND") - 4
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return data[:end] + chunk + data[end:]


def _plain_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (30, 40, 3), dtype=np.uint8), "RGB").save(buffer, "PNG")
    return buffer.getvalue()


def test_a_colour_profile_after_the_image_data_that_inflates_to_gigabytes_is_never_inflated():
    """A 1 MB PNG whose iCCP chunk (after IDAT) inflated to 2.29 GB took 13.8 s at import, and was imported."""
    import tracemalloc

    bomb = zlib.compress(bytes(256 * 1024 * 1024), 9)  # 256 MB of zeros in about 250 kB
    # behind a chunk whose type is not letters Pillow stops reading (the picture loads fine), so only a cleaner
    # that walks every chunk itself meets the profile, and pays for inflating it
    data = _with_chunk_after_idat(_with_chunk_after_idat(_plain_png(), b"\x00\x00\x00\x00", b""), b"iCCP", b"bomb\x00\x00" + bomb)
    tracemalloc.start()
    try:
        clean = sanitize_image(data, MAX_PIXELS)
    except Exception as e:  # noqa: BLE001 - refusing it is as good as dropping the profile
        clean, refused = None, e
    else:
        refused = None
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 * 1024 * 1024, f"{peak / 1e6:.0f} MB allocated: the profile was inflated"
    if clean is not None:
        assert b"iCCP" not in clean.data and len(clean.data) < 64 * 1024
    else:
        assert "corrupt" in str(refused) or "large" in str(refused), refused


def test_text_hidden_after_the_zlib_stream_in_png_image_data_is_gone():
    data = _plain_png()
    start = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[start : start + 4])
    body = data[start + 8 : start + 8 + length] + PHI.encode()  # after the stream's end: decoders never read it
    idat = struct.pack(">I", len(body)) + b"IDAT" + body + struct.pack(">I", zlib.crc32(b"IDAT" + body))
    hidden = data[:start] + idat + data[start + 12 + length :]
    with Image.open(io.BytesIO(hidden)) as img:
        img.load()  # still a valid picture
    assert PHI.encode() in hidden
    clean = sanitize_image(hidden, MAX_PIXELS)
    assert all(PHI.encode() not in text and NAME.encode() not in text for text in _texts(clean.data))
    with Image.open(io.BytesIO(hidden)) as a, Image.open(io.BytesIO(clean.data)) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))  # rebuilt from its pixels, losslessly


def test_text_in_a_colour_profiles_slack_tail_and_reserved_bytes_is_gone():
    profile = bytearray(_phi_icc())
    profile[100:117] = PHI.encode()[:17]  # the header's reserved bytes
    tail = bytes(profile) + PHI.encode()  # after the last tag
    scrubbed = scrub_icc(tail)
    assert len(scrubbed) == len(tail) and PHI.encode()[:17] not in scrubbed and PHI.encode() not in scrubbed
    assert ImageCms.ImageCmsProfile(io.BytesIO(scrubbed)).profile.red_colorant  # still a valid profile


def _hidden_in_jpeg(place: str, data: bytes) -> bytes:
    """The JPEG with PHI where a segment-level strip kept it; the picture still decodes to the same pixels."""
    frame = re.search(rb"\xff[\xc0\xc2]", data).start()  # the frame header, baseline or progressive
    end = data.rindex(b"\xff\xd9")
    if place == "unused quantisation table":  # table 3: no component of the frame refers to it
        return data[:frame] + _segment(0xDB, bytes([3]) + PHI.encode().ljust(64, b"_")) + data[frame:]
    if place == "unused Huffman table":  # AC table 3 whose symbols spell the text
        symbols = PHI.encode()
        return data[:frame] + _segment(0xC4, bytes([0x13, 0, len(symbols)]) + bytes(14) + symbols) + data[frame:]
    if place == "DNL segment":  # defines the number of lines again after the scan (the frame already has them)
        return data[:end] + _segment(0xDC, struct.pack(">H", 48) + PHI.encode()) + data[end:]
    if place == "bytes in the scan before EOI":  # after the last coded block: decoders skip them
        return data[:end] + PHI.encode() + data[end:]
    raise AssertionError(place)


@pytest.mark.parametrize(
    "place", ["unused quantisation table", "unused Huffman table", "DNL segment", "bytes in the scan before EOI"]
)
@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
def test_text_in_jpeg_tables_dnl_and_scan_data_is_gone_and_the_pixels_are_kept(place, progressive):
    img = Image.fromarray(np.random.default_rng(7).integers(0, 256, (48, 64, 3), dtype=np.uint8), "RGB")
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=90, optimize=True, progressive=progressive, icc_profile=_phi_icc())
    hidden = _hidden_in_jpeg(place, buffer.getvalue())
    with Image.open(io.BytesIO(hidden)) as original:
        original.load()
        pixels = np.asarray(original)
    assert PHI.encode()[:16] in hidden
    clean = sanitize_image(hidden, MAX_PIXELS)
    assert clean.format == "JPEG"
    for needle in (PHI, NAME, MRN):
        assert needle.encode() not in clean.data, (place, needle)
    assert [marker for marker, _ in _jpeg_markers(clean.data)].count(0xDB) <= 2  # the frame's two tables at most
    with Image.open(io.BytesIO(clean.data)) as stored:
        assert np.array_equal(np.asarray(stored), pixels)  # the same coefficients: not recompressed
        assert stored.info.get("icc_profile")  # the (scrubbed) profile is carried over
