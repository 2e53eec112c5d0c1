"""What a stored image is, and how an incoming file becomes one (privacy-safe sanitising).

A stored file is guaranteed to be:
- a still JPEG or PNG that decodes completely (truncated, corrupt, animated, oversized and
  decompression-bomb files are rejected with the reason);
- upright (EXIF orientation applied) and free of EXIF, GPS, XMP, IPTC, comments and text chunks.

Why two paths: a clinical photo should not be recompressed just to drop its metadata. So an
upright JPEG keeps its compressed data and only loses its metadata segments, and a PNG only
loses its metadata chunks. Only images that need a pixel change (rotation, CMYK, 16-bit,
other formats) are decoded and re-encoded (JPEG quality 95, or lossless PNG).
"""

from __future__ import annotations

import io
import re
import struct
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


def _strip_jpeg(data: bytes) -> bytes | None:
    """JPEG bytes without metadata segments or trailing data; None if the stream is not plain."""
    if data[:2] != b"\xff\xd8":
        return None
    out = [b"\xff\xd8"]
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
        is_app = 0xE0 <= marker <= 0xEF
        keep = (
            (not is_app and marker != 0xFE)
            or marker in (_APP0, _APP14)
            or (marker == _APP2 and segment[4:16] == b"ICC_PROFILE\x00")
        )
        if keep:
            out.append(segment)
        pos = end
        if marker == 0xDA:  # start of scan: copy entropy-coded data up to the next real marker
            found = _NEXT_MARKER.search(data, pos)
            if found is None:
                return None
            out.append(data[pos : found.start()])
            pos = found.start()
    return None


def _strip_png(data: bytes) -> bytes | None:
    if not data.startswith(_PNG_SIGNATURE):
        return None
    out = [_PNG_SIGNATURE]
    pos, n = len(_PNG_SIGNATURE), len(data)
    while pos + 12 <= n:
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > n:
            return None
        if kind in _PNG_KEEP:
            out.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            return b"".join(out)
    return None


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit greyscale to 8-bit L (scaled, not clipped)."""
    array = np.asarray(img)
    top = 65535 if img.mode.startswith("I;16") else max(int(array.max()), 1)
    return Image.fromarray((array.astype(np.float64) * (255.0 / top)).round().clip(0, 255).astype(np.uint8), "L")


def _reencode(img: Image.Image, as_jpeg: bool) -> tuple[bytes, str, str]:
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        img = _to_8bit(img)
    if as_jpeg:
        if img.mode not in ("RGB", "L"):
            img = img.convert("RGB")
        buffer = io.BytesIO()
        icc = img.info.get("icc_profile")
        img.save(buffer, "JPEG", quality=95, **({"icc_profile": icc} if icc else {}))
        return buffer.getvalue(), "jpg", "JPEG"
    if img.mode not in ("RGB", "RGBA", "L", "LA"):
        img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
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
    except Exception as e:  # PIL raises assorted errors on hostile headers
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
        except Exception as e:  # truncated data raises OSError; broken streams raise others
            raise ImageRejected(f"truncated or corrupt image data ({e})") from None
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
        stripped = None
        if orientation in (0, 1):
            if img.format in ("JPEG", "MPO") and img.mode in ("RGB", "L"):
                stripped, ext, fmt = _strip_jpeg(data), "jpg", "JPEG"
            elif img.format == "PNG" and img.mode in ("RGB", "RGBA", "L", "LA", "P"):
                stripped, ext, fmt = _strip_png(data), "png", "PNG"
        if stripped is None:
            stripped, ext, fmt = _reencode(img, as_jpeg=img.format in ("JPEG", "MPO"))
            if orientation in (5, 6, 7, 8):
                width, height = height, width
        perceptual = dhash(img if orientation in (0, 1) else ImageOps.exif_transpose(img))
    return CleanImage(stripped, ext, fmt, width, height, perceptual)
