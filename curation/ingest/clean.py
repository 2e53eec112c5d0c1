"""What a stored image is, and how an incoming file becomes one (privacy-safe sanitising).

A stored file is guaranteed to be:
- a still JPEG or PNG that decodes completely (truncated, corrupt, animated, oversized and
  decompression-bomb files are rejected with the reason);
- upright (EXIF orientation applied) and carrying pixels and the minimum container data, nothing else:
  no EXIF, GPS, XMP, IPTC, comments, text chunks, thumbnails or trailing data, whichever path it took.
  JPEG keeps a minimal JFIF header, the Adobe colour-transform flag and the ICC profile; PNG keeps its
  colour and transparency chunks. An ICC profile is colour data, but it has text too (description,
  copyright, device names, private tags): those are blanked in place (`scrub_icc`), lengths unchanged.

Why two paths: a clinical photo should not be recompressed just to drop its metadata. So an
upright JPEG keeps its quantised DCT coefficients exactly (the same pixels, checked after the rebuild) and is
written anew around them by libjpeg (jpeglib): fresh Huffman tables, only the quantisation tables the frame
uses, no DNL segment, nothing between the last coded block and the end marker, where text survived a
segment-level strip. A PNG is always
rebuilt from its pixels (lossless, so nothing is lost): stripping chunks kept whatever hid inside
the kept ones (bytes after the zlib stream in IDAT, a colour profile placed after the image data
and inflating to gigabytes). Images that need a pixel change (rotation, CMYK, 16-bit, other
formats) are decoded and re-encoded (JPEG quality 95, or lossless PNG).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import struct
import tempfile
import threading
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from curation.errors import ImageRejected

ACCEPTED_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "TIFF", "BMP", "GIF"}
_EXIF_ORIENTATION = 0x0112
# JPEG segments kept: APP0 (JFIF), APP2 only when it is an ICC profile, APP14 (Adobe colour transform).
_APP0, _APP2, _APP14 = 0xE0, 0xE2, 0xEE
# PNG chunks kept besides the critical ones: colour and transparency, nothing textual or dated.
_PNG_KEEP = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"pHYs", b"bKGD"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Inside entropy-coded data 0xFF is followed only by 0x00 (stuffing) or a restart marker D0-D7.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")


@dataclass(frozen=True)
class CleanImage:
    data: bytes
    ext: str  # "jpg" | "png"
    format: str  # "JPEG" | "PNG"
    width: int
    height: int
    dhash: str  # perceptual difference hash (16 hex digits), for near-duplicate grouping


DHASH_SIZE = 8


def dhash(img: Image.Image) -> str:
    """64-bit difference hash: does each pixel of a 9x8 greyscale thumbnail get brighter to the right?
    Near-identical pictures (re-encoded, resized, slightly cropped) differ in few bits."""
    if img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    small = img.resize((DHASH_SIZE + 1, DHASH_SIZE), Image.BILINEAR, reducing_gap=2.0).convert("L")
    small = np.asarray(small, dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


# ICC tag types that hold colour data; every other tag (text, names, private data) is blanked.
_ICC_COLOUR_TYPES = {
    b"XYZ ",
    b"curv",
    b"para",
    b"sf32",
    b"mft1",
    b"mft2",
    b"mAB ",
    b"mBA ",
    b"mpet",
    b"chrm",
    b"clro",
    b"meas",
    b"view",
    b"sig ",
    b"uf32",
    b"ui08",
    b"ui16",
    b"ui32",
    b"ui64",
    b"s15f",
    b"u16f",
    b"dtim",
}


def scrub_icc(profile: bytes) -> bytes:
    """The ICC profile with every non-colour tag's content blanked (text becomes spaces, other data zeros), the
    profile id and reserved bytes cleared, and every byte no tag covers (slack between tags, a tail after the
    last) zeroed; same length and tag table, so it stays a valid profile. Unreadable: b""."""
    if len(profile) < 132 or profile[36:40] != b"acsp":
        return b""
    out = bytearray(profile)
    out[84:100] = bytes(16)  # the profile id (an MD5 of the content) no longer holds
    out[100:128] = bytes(28)  # reserved: zeros by the standard, free for text otherwise
    (count,) = struct.unpack(">I", profile[128:132])
    if 132 + 12 * count > len(profile):
        return b""
    used = np.zeros(len(profile), dtype=bool)  # bytes some part of the profile points at
    used[: 132 + 12 * count] = True
    tags = []
    for index in range(count):
        _signature, offset, size = struct.unpack(">4sII", profile[132 + 12 * index : 144 + 12 * index])
        if size < 8 or offset + size > len(profile):
            return b""
        used[offset : offset + size] = True
        tags.append((offset, size))
    # slack between tags and bytes after the last one are read by nothing, so they could carry any text: zeros
    kept = np.frombuffer(bytes(out), dtype=np.uint8) * used
    out = bytearray(kept.astype(np.uint8).tobytes())
    for offset, size in tags:
        out[offset + 4 : offset + 8] = bytes(4)  # each tag's reserved bytes after its type signature
        kind = profile[offset : offset + 4]
        if kind in _ICC_COLOUR_TYPES:
            continue
        if kind in (b"text", b"desc"):  # ASCII (desc also has UTF-16 and ScriptCode parts): spaces and zeros
            body = out[offset + 8 : offset + size]
            out[offset + 8 : offset + size] = (
                bytes(b if b in (0, 0x20) else 0x20 for b in body) if kind == b"text" else bytes(_blank_desc(bytes(body)))
            )
        elif kind == b"mluc":  # UTF-16BE strings at offsets the records give: spaces
            (records,) = struct.unpack(">I", profile[offset + 8 : offset + 12])
            for r in range(min(records, (size - 16) // 12)):
                _lang, length, start = struct.unpack(">4sII", profile[offset + 16 + 12 * r : offset + 28 + 12 * r])
                begin, end = offset + start, min(offset + start + length, offset + size)
                out[begin:end] = b"\x00 " * ((end - begin) // 2) + bytes((end - begin) % 2)
        else:  # names, dictionaries, private data: zeros after the type signature
            out[offset + 8 : offset + size] = bytes(size - 8)
    return bytes(out)


def _blank_desc(body: bytes) -> bytes:
    """textDescriptionType after its 8-byte header: ASCII count + text, UTF-16 part, ScriptCode part."""
    out = bytearray(body)
    if len(body) >= 4:
        (n,) = struct.unpack(">I", body[:4])
        for i in range(4, min(4 + n, len(body))):
            if out[i]:
                out[i] = 0x20
        rest = 4 + n
        if rest + 8 <= len(body):
            (m,) = struct.unpack(">I", body[rest + 4 : rest + 8])
            for i in range(rest + 8, min(rest + 8 + 2 * m, len(body)), 2):
                if out[i : i + 2] != b"\x00\x00":
                    out[i : i + 2] = b"\x00 "
            script = rest + 8 + 2 * m
            out[script:] = bytes(len(out) - script) if script < len(out) else b""
    return bytes(out)


def _jpeg_app0(segment: bytes) -> bytes | None:
    """A minimal JFIF header with the original density (no thumbnail, no extension); None if not JFIF."""
    if segment[4:9] != b"JFIF\x00" or len(segment) < 18:
        return None
    return b"\xff\xe0\x00\x10JFIF\x00\x01\x01" + segment[13:18] + b"\x00\x00"


def _jpeg_icc_segments(segments: list[bytes]) -> list[bytes]:
    """APP2 ICC_PROFILE segments (a profile may span several) with the profile scrubbed, same chunking."""
    chunks = sorted(segments, key=lambda seg: seg[16])  # sequence number
    profile = scrub_icc(b"".join(seg[18:] for seg in chunks))
    if not profile:
        return []
    out, pos = [], 0
    for seg in chunks:
        size = len(seg) - 18
        out.append(seg[:18] + profile[pos : pos + size])
        pos += size
    return out


def _strip_jpeg(data: bytes) -> bytes | None:  # noqa: C901 - one pass over the markers, as the JPEG standard lists them
    """JPEG bytes without metadata segments or trailing data; None if the stream is not plain."""
    if data[:2] != b"\xff\xd8":
        return None
    out = [b"\xff\xd8"]
    icc: list[bytes] = []
    icc_at, jfif_done = 0, False
    pos, n = 2, len(data)
    while pos + 2 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # EOI: anything after it (phone trailers, a second MPO frame) is dropped
            out.append(b"\xff\xd9")
            if icc:
                out[icc_at] = b"".join(_jpeg_icc_segments(icc))
            return b"".join(out)
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            out.append(data[pos : pos + 2])
            pos += 2
            continue
        if pos + 4 > n:
            return None
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        end = pos + 2 + length
        if end > n:
            return None
        segment = data[pos:end]
        if marker == _APP2 and segment[4:16] == b"ICC_PROFILE\x00" and len(segment) > 18:
            if not icc:  # the whole (scrubbed) profile goes where its first chunk was
                icc_at = len(out)
                out.append(b"")
            icc.append(segment)
        elif marker == _APP0:
            if not jfif_done and (app0 := _jpeg_app0(segment)) is not None:
                out.append(app0)
                jfif_done = True
        elif marker == _APP14:  # Adobe: "Adobe", version, two flag words, the colour transform; nothing else
            if segment[4:9] == b"Adobe" and len(segment) >= 16:
                out.append(b"\xff\xee\x00\x0e" + segment[4:16])
        elif not (0xE0 <= marker <= 0xEF or marker == 0xFE):  # tables, frame and scan headers: pixel data
            out.append(segment)
        pos = end
        if marker == 0xDA:  # start of scan: copy entropy-coded data up to the next real marker
            found = _NEXT_MARKER.search(data, pos)
            if found is None:
                return None
            out.append(data[pos : found.start()])
            pos = found.start()
    return None


def _recode_coefficients(stream: bytes) -> bytes:
    """The JPEG written anew from its DCT coefficients (lossless): libjpeg's own JFIF header, the frame's
    quantisation tables, standard Huffman tables, the coded blocks and EOI; of the stream's own segments only
    the (already scrubbed) ICC profile is carried over. Through in-memory files where the OS has them."""
    import jpeglib  # 0.1 s to import: only when a JPEG is cleaned

    with _JPEGLIB_LOCK:
        return _recode_locked(jpeglib, stream)


# jpeglib is not safe to call from two threads at once (its library binding and libjpeg's error handling are
# process-wide): a folder import, which cleans pictures on a thread pool, aborted the whole process once in CI
# with two threads inside it. One rebuild at a time; decoding and the pixel check still run in parallel.
_JPEGLIB_LOCK = threading.Lock()


def _recode_locked(jpeglib, stream: bytes) -> bytes:
    in_memory = hasattr(os, "memfd_create")
    with contextlib.nullcontext() if in_memory else tempfile.TemporaryDirectory(prefix="skinflow-jpeg-") as folder:
        source, target = _scratch(folder, "in.jpg"), _scratch(folder, "out.jpg")
        try:
            os.write(source[0], stream)
            jpeg = jpeglib.read_dct(source[1])
            jpeg.load()
            jpeg.markers = [m for m in jpeg.markers or [] if m.type.value == _APP2 and m.content[:12] == b"ICC_PROFILE\x00"]
            jpeg.write_dct(target[1])
            return os.pread(target[0], os.fstat(target[0]).st_size, 0)
        finally:
            os.close(source[0])
            os.close(target[0])


def _scratch(folder: str | None, name: str) -> tuple[int, str]:
    """A file libjpeg can open by name: an anonymous in-memory file (Linux), else one in a private temp folder."""
    if folder is None:
        fd = os.memfd_create(name)
        return fd, f"/proc/self/fd/{fd}"
    path = os.path.join(folder, name)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600), path


def _rebuild_jpeg(data: bytes, decoded: Image.Image) -> bytes | None:
    """An upright JPEG without metadata, rebuilt around its coefficients; None where that is not possible
    or the result does not decode to exactly the pixels of the original (the caller then re-encodes)."""
    stripped = _strip_jpeg(data)
    if stripped is None:
        return None
    try:
        rebuilt = _recode_coefficients(stripped)
        with Image.open(io.BytesIO(rebuilt)) as check:
            same = check.size == decoded.size and check.mode == decoded.mode
            if same and np.array_equal(np.asarray(check), np.asarray(decoded)):
                return rebuilt
    except Exception:  # noqa: BLE001 - libjpeg refuses streams Pillow accepts (12-bit, arithmetic coding): re-encoded instead
        return None
    return None


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit greyscale to 8-bit L (scaled, not clipped)."""
    array = np.asarray(img)
    top = 65535 if img.mode.startswith("I;16") else max(int(array.max()), 1)
    return Image.fromarray((array.astype(np.float64) * (255.0 / top)).round().clip(0, 255).astype(np.uint8), "L")


def _reencode(img: Image.Image, as_jpeg: bool) -> tuple[bytes, str, str]:
    icc = scrub_icc(img.info.get("icc_profile") or b"")
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        img = _to_8bit(img)
    if as_jpeg and img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    elif not as_jpeg and img.mode not in ("RGB", "RGBA", "L", "LA", "P"):
        img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
    # Pillow writes what `info` holds (a JPEG comment, EXIF, XMP, text, dpi): the encoder gets only pixels,
    # transparency and the scrubbed profile.
    img = img.copy()
    img.info = {key: value for key, value in img.info.items() if key == "transparency"}
    extra = {"icc_profile": icc} if icc else {}
    buffer = io.BytesIO()
    if as_jpeg:
        img.save(buffer, "JPEG", quality=95, **extra)
        return buffer.getvalue(), "jpg", "JPEG"
    img.save(buffer, "PNG", **extra)
    return buffer.getvalue(), "png", "PNG"


def sanitize_image(data: bytes, max_pixels: int) -> CleanImage:
    """Validate and clean one image (see the module docstring). Raises ImageRejected."""
    if not data:
        raise ImageRejected("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        if isinstance(e, UnidentifiedImageError):
            raise ImageRejected("not a readable image (content is not JPEG, PNG, WebP, TIFF, BMP or GIF)") from None
        raise ImageRejected("image dimensions are implausibly large (decompression-bomb guard)") from None
    except Exception as e:  # noqa: BLE001 - PIL raises assorted errors on hostile headers
        raise ImageRejected(f"corrupt image header ({e.__class__.__name__})") from None
    with img:
        if img.format not in ACCEPTED_FORMATS:
            raise ImageRejected(f"{img.format} images are not accepted; convert to JPEG or PNG")
        width, height = img.size
        if width * height > max_pixels:
            raise ImageRejected(
                f"image is {width}x{height} = {width * height / 1e6:.0f} MP, over the {max_pixels / 1e6:.0f} MP limit "
                "(decompression-bomb guard; setting max_image_megapixels)"
            )
        if width < 1 or height < 1:
            raise ImageRejected("image has no pixels")
        if getattr(img, "n_frames", 1) > 1 and img.format != "MPO":
            raise ImageRejected("animated or multi-page images are not accepted; export one still frame as JPEG or PNG")
        try:
            img.load()
        except Exception as e:  # noqa: BLE001 - truncated data raises OSError; broken streams raise others
            raise ImageRejected(f"truncated or corrupt image data ({e})") from None
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
        stripped = None
        if orientation in (0, 1):
            if img.format in ("JPEG", "MPO") and img.mode in ("RGB", "L"):
                stripped, ext, fmt = _rebuild_jpeg(data, img), "jpg", "JPEG"
        if stripped is None:
            stripped, ext, fmt = _reencode(img, as_jpeg=img.format in ("JPEG", "MPO"))
            if orientation in (5, 6, 7, 8):
                width, height = height, width
        perceptual = dhash(img if orientation in (0, 1) else ImageOps.exif_transpose(img))
    return CleanImage(stripped, ext, fmt, width, height, perceptual)
