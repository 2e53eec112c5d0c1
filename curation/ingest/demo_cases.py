"""Synthetic demo cases: procedural lesion images drawn from known true captions, and noisy drafts of them.

Every image is drawn from one of eight archetypes tied to a real taxonomy label (e.g. a single
dark, irregular, multicoloured lesion -> melanoma; many small red papules -> acne vulgaris).
The drawn colour, shape, number, size, border, texture, distribution and surrounding follow the
true caption, on a skin tone of the image's Fitzpatrick type (I-VI). `location` is part of the
caption but is not depicted (the pictures are close-ups).

Each image also gets a noisy synthetic draft (the true caption with controlled corruptions) so
the annotation flow has something to correct without an LLM. Everything is deterministic by seed
and marked source=synthetic.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from random import Random

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFilter

from schema.caption import Caption
from schema.fields import NUMBER_VALUES, SIZE_VALUES
from schema.vocabulary import default_vocabulary

GENERATOR = "skinflow-demo"
GENERATOR_VERSION = "1"
IMAGE_PX = 256
FIELD_OF_VIEW_MM = 60.0  # the picture shows 6 cm of skin
PX_PER_MM = IMAGE_PX / FIELD_OF_VIEW_MM

SKIN_RGB = {1: (246, 224, 207), 2: (234, 200, 172), 3: (212, 168, 130), 4: (175, 125, 85), 5: (126, 84, 56), 6: (82, 54, 38)}
COLOR_RGB = {
    "erythematous": (196, 62, 62),
    "brown": (112, 66, 38),
    "black": (32, 24, 22),
    "blue-gray": (92, 104, 124),
    "depigmented": (246, 240, 234),
    "white/hypopigmented": (236, 226, 214),
    "translucent/pearly": (236, 214, 208),
    "violaceous": (120, 60, 112),
    "yellow": (214, 184, 92),
}
SIZE_MM_RANGE = {"<5 mm": (2.0, 4.5), "5-10 mm": (5.5, 9.5), "1-2 cm": (11.0, 19.0), "2-5 cm": (21.0, 38.0)}
NUMBER_RANGE = {"single": (1, 1), "few": (2, 5), "multiple": (6, 20), "numerous": (21, 40)}


@dataclass(frozen=True)
class Archetype:
    label: str  # taxonomy key
    color: tuple[tuple[str, ...], ...]  # choices
    shape: tuple[tuple[str, ...], ...]
    lesion_type: tuple[tuple[str, ...], ...]
    number: tuple[str, ...]
    size: tuple[str, ...]
    texture: tuple[tuple[str, ...], ...]
    border: tuple[tuple[str, ...], ...]
    distribution: tuple[tuple[str, ...], ...]
    surrounding: tuple[tuple[str, ...], ...]
    location: tuple[str, ...]
    other: tuple[str, ...] = ("",)


ARCHETYPES: tuple[Archetype, ...] = (
    Archetype(
        "melanoma",
        (("black", "brown", "blue-gray", "variegated"), ("black", "brown", "variegated")),
        (("irregular",),),
        (("macule",), ("plaque",)),
        ("single",),
        ("5-10 mm", "1-2 cm"),
        ((),),
        (("ill-defined", "irregular"),),
        (("localized",),),
        (("normal",),),
        ("back", "lower extremity", "trunk", "face"),
        ("asymmetric pigmentation", ""),
    ),
    Archetype(
        "nevocytic nevus",
        (("brown",),),
        (("round",), ("oval",)),
        (("macule",), ("papule",)),
        ("single",),
        ("<5 mm", "5-10 mm"),
        (("smooth",),),
        (("well-defined", "regular"),),
        (("localized",),),
        (("normal",),),
        ("back", "trunk", "upper extremity", "face"),
    ),
    Archetype(
        "acne vulgaris",
        (("erythematous",),),
        (("round",),),
        (("papule",), ("papule", "pustule")),
        ("multiple", "numerous"),
        ("<5 mm",),
        ((),),
        (("well-defined",),),
        (("scattered",),),
        (("normal",), ("erythematous halo",)),
        ("face", "back", "chest"),
    ),
    Archetype(
        "psoriasis",
        (("erythematous",),),
        (("oval",), ("nummular",)),
        (("plaque",),),
        ("few", "multiple"),
        ("1-2 cm", "2-5 cm"),
        (("scaly",),),
        (("well-defined",),),
        (("symmetric", "extensor"), ("scattered",)),
        (("normal",),),
        ("upper extremity", "lower extremity", "scalp", "back"),
    ),
    Archetype(
        "basal cell carcinoma",
        (("translucent/pearly",), ("translucent/pearly", "erythematous")),
        (("round",), ("dome-shaped",)),
        (("nodule",), ("papule",)),
        ("single",),
        ("5-10 mm", "1-2 cm"),
        (("smooth",),),
        (("well-defined", "raised edge", "shiny"),),
        (("localized",),),
        (("telangiectasia",),),
        ("face", "ear", "neck"),
    ),
    Archetype(
        "vitiligo",
        (("depigmented",),),
        (("irregular",),),
        (("patch",), ("macule",)),
        ("few", "multiple"),
        ("1-2 cm", "2-5 cm"),
        ((),),
        (("well-defined",),),
        (("symmetric",), ("scattered",)),
        (("normal",),),
        ("hand", "face", "genital"),
    ),
    Archetype(
        "seborrheic keratosis",
        (("brown",), ("brown", "black")),
        (("oval",), ("round",)),
        (("plaque",), ("papule",)),
        ("single", "few"),
        ("5-10 mm", "1-2 cm"),
        (("verrucous",), ("verrucous", "keratotic")),
        (("well-defined",),),
        (("localized",), ("scattered",)),
        (("normal",),),
        ("back", "trunk", "face"),
        ("stuck-on appearance", ""),
    ),
    Archetype(
        "urticaria",
        (("erythematous",),),
        (("round",), ("annular",), ("irregular",)),
        (("wheal",),),
        ("multiple",),
        ("1-2 cm", "2-5 cm"),
        (("smooth",),),
        (("well-defined",),),
        (("scattered",), ("generalized",)),
        (("edema",),),
        ("trunk", "upper extremity", "lower extremity"),
    ),
)


@dataclass
class DemoCase:
    index: int
    archetype: Archetype
    caption: Caption
    fitzpatrick: int
    image_bytes: bytes


def _true_caption(rng: Random, a: Archetype) -> Caption:
    number = rng.choice(a.number)
    return Caption(
        color=rng.choice(a.color),
        location=[rng.choice(a.location)],
        shape=rng.choice(a.shape),
        lesion_type=rng.choice(a.lesion_type),
        number=number,
        size=rng.choice(a.size),
        texture=rng.choice(a.texture),
        border_surface=rng.choice(a.border),
        distribution=("localized",) if number == "single" else rng.choice(a.distribution),
        surrounding=rng.choice(a.surrounding),
        other=rng.choice(a.other),
    )


def _skin(rng: Random, fitzpatrick: int) -> np.ndarray:
    base = np.array(SKIN_RGB[fitzpatrick], dtype=np.float32) * rng.uniform(0.94, 1.05)
    yy, xx = np.mgrid[0:IMAGE_PX, 0:IMAGE_PX].astype(np.float32) / IMAGE_PX
    angle = rng.uniform(0, 2 * math.pi)
    shading = 1.0 + 0.08 * ((xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle))
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, 3.5, (IMAGE_PX, IMAGE_PX, 1))
    return base[None, None, :] * shading[..., None] + noise


def _shape_polygon(rng: Random, shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    aspect = 1.0 if shape in ("round", "dome-shaped", "nummular") else rng.uniform(0.55, 0.75)
    jitter = 0.35 if shape == "irregular" else 0.03
    rotation = rng.uniform(0, math.pi)
    n = 48
    phases = [rng.uniform(0, 2 * math.pi) for _ in range(3)]
    points = []
    for k in range(n):
        t = 2 * math.pi * k / n
        wobble = 1 + jitter * sum(math.sin((j + 2) * t + p) / (j + 1) for j, p in enumerate(phases))
        x, y = r * wobble * math.cos(t), r * aspect * wobble * math.sin(t)
        points.append(
            (cx + x * math.cos(rotation) - y * math.sin(rotation), cy + x * math.sin(rotation) + y * math.cos(rotation))
        )
    return points


def _centres(rng: Random, count: int, distribution: tuple[str, ...], radius: float) -> list[tuple[float, float]]:
    margin = min(radius + 4, IMAGE_PX / 2 - 1)
    lo, hi = margin, IMAGE_PX - margin
    if count == 1:
        return [(rng.uniform(IMAGE_PX * 0.4, IMAGE_PX * 0.6), rng.uniform(IMAGE_PX * 0.4, IMAGE_PX * 0.6))]
    if "symmetric" in distribution:
        half = [(rng.uniform(lo, IMAGE_PX / 2 - radius), rng.uniform(lo, hi)) for _ in range((count + 1) // 2)]
        mirrored = [(IMAGE_PX - x, y + rng.uniform(-3, 3)) for x, y in half]
        return (half + mirrored)[:count]
    return [(rng.uniform(lo, hi), rng.uniform(lo, hi)) for _ in range(count)]


def _mask(size: tuple[int, int], polygons: list[list[tuple[float, float]]], ring: bool) -> PILImage.Image:
    mask = PILImage.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    for polygon in polygons:
        draw.polygon(polygon, fill=255)
        if ring:  # annular: clear the centre
            cx = sum(p[0] for p in polygon) / len(polygon)
            cy = sum(p[1] for p in polygon) / len(polygon)
            draw.polygon([(cx + (x - cx) * 0.55, cy + (y - cy) * 0.55) for x, y in polygon], fill=0)
    return mask


def _lesion_pixels(rng: Random, colours: list[str], centre: tuple[float, float], shape: tuple[int, ...]) -> np.ndarray:
    """The lesion's colour at every pixel: one colour, or (variegated) a wavy angular sector per listed colour, so
    each one shows."""
    if len(colours) == 1:
        return np.broadcast_to(np.array(COLOR_RGB[colours[0]], dtype=np.float32), shape)
    cx, cy = centre
    yy, xx = np.mgrid[0:IMAGE_PX, 0:IMAGE_PX].astype(np.float32)
    theta = np.arctan2(yy - cy, xx - cx)
    theta = theta + 0.5 * np.sin(3 * theta + rng.uniform(0, 2 * math.pi))
    index = ((theta / (2 * math.pi)) % 1.0 * len(colours)).astype(int) % len(colours)
    return np.array([COLOR_RGB[c] for c in colours], dtype=np.float32)[index]


def render_case(rng: Random, caption: Caption, fitzpatrick: int) -> PILImage.Image:
    """Draw a lesion image that shows what the caption says."""
    skin = _skin(rng, fitzpatrick)
    low, high = NUMBER_RANGE[caption.number or "single"]
    count = rng.randint(low, high)
    size_lo, size_hi = SIZE_MM_RANGE.get(caption.size or "5-10 mm", (5.5, 9.5))
    diameters = [rng.uniform(size_lo, size_hi) * PX_PER_MM for _ in range(count)]
    centres = _centres(rng, count, caption.distribution, max(diameters) / 2)
    shape = caption.shape[0] if caption.shape else "round"
    polygons = [_shape_polygon(rng, shape, cx, cy, d / 2) for (cx, cy), d in zip(centres, diameters, strict=True)]
    mask = _mask((IMAGE_PX, IMAGE_PX), polygons, ring="annular" in caption.shape)
    if "ill-defined" in caption.border_surface:
        mask = mask.filter(ImageFilter.GaussianBlur(radius=max(2.0, min(diameters) * 0.08)))
    else:
        mask = mask.filter(ImageFilter.GaussianBlur(radius=0.8))
    alpha = np.asarray(mask, dtype=np.float32)[..., None] / 255.0

    out = skin.copy()
    if "erythematous halo" in caption.surrounding or "edema" in caption.surrounding:
        halo = (
            np.asarray(mask.filter(ImageFilter.MaxFilter(9)).filter(ImageFilter.GaussianBlur(6)), dtype=np.float32)[..., None]
            / 255.0
        )
        out = out * (1 - 0.45 * halo) + np.array(COLOR_RGB["erythematous"]) * 0.45 * halo
    colours = [c for c in caption.color if c in COLOR_RGB] or ["brown"]
    lesion = _lesion_pixels(rng, colours, centres[0], skin.shape)
    opacity = 0.55 if colours == ["erythematous"] or "translucent/pearly" in colours else 0.9
    out = out * (1 - opacity * alpha) + lesion * opacity * alpha
    img = PILImage.fromarray(out.clip(0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    detail_rng = Random(rng.getrandbits(32))
    boxes = [
        (min(p[0] for p in poly), min(p[1] for p in poly), max(p[0] for p in poly), max(p[1] for p in poly)) for poly in polygons
    ]
    if "scaly" in caption.texture or "keratotic" in caption.texture or "verrucous" in caption.texture:
        fleck = (238, 234, 228) if "scaly" in caption.texture else (90, 60, 40)
        for x0, y0, x1, y1 in boxes:
            for _ in range(int((x1 - x0) * (y1 - y0) / 18)):
                x, y = detail_rng.uniform(x0, x1), detail_rng.uniform(y0, y1)
                if mask.getpixel((min(int(x), IMAGE_PX - 1), min(int(y), IMAGE_PX - 1))) > 128:
                    draw.ellipse((x - 1, y - 1, x + 1.5, y + 1), fill=fleck)
    if "raised edge" in caption.border_surface:
        for polygon in polygons:
            draw.line(polygon + polygon[:1], fill=(244, 226, 222), width=2)
    if "telangiectasia" in caption.surrounding:
        for polygon in polygons:
            for _ in range(4):
                x, y = detail_rng.choice(polygon)
                angle = detail_rng.uniform(0, 2 * math.pi)
                length = detail_rng.uniform(6, 14)
                draw.line([(x, y), (x + length * math.cos(angle), y + length * math.sin(angle))], fill=(170, 40, 50), width=1)
    if "pustule" in caption.lesion_type:
        for (cx, cy), d in zip(centres, diameters, strict=True):
            if detail_rng.random() < 0.5:
                draw.ellipse((cx - d / 5, cy - d / 5, cx + d / 5, cy + d / 5), fill=(240, 226, 170))
    return img


def generate_cases(n: int, seed: int) -> list[DemoCase]:
    """The first n demo cases for a seed (case i is the same whatever n is)."""
    cases = []
    for index in range(n):
        rng = Random(f"{GENERATOR}-{GENERATOR_VERSION}:{seed}:{index}")
        archetype = ARCHETYPES[rng.randrange(len(ARCHETYPES))]
        caption = _true_caption(rng, archetype)
        fitzpatrick = rng.randint(1, 6)
        buffer = io.BytesIO()
        render_case(rng, caption, fitzpatrick).save(buffer, "JPEG", quality=90)
        cases.append(DemoCase(index, archetype, caption, fitzpatrick, buffer.getvalue()))
    return cases


def noisy_draft(rng: Random, caption: Caption, rate: float = 0.3) -> Caption:
    """The caption with controlled corruptions: per field, with probability `rate`, drop a term,
    add a plausible wrong one, shift an ordinal by one step, or blank free text."""
    vocab = default_vocabulary()
    data = caption.to_json()
    for key, value in list(data.items()):
        if key == "size_mm" or rng.random() >= rate:
            continue
        if key == "number" or key == "size":
            scale = NUMBER_VALUES if key == "number" else SIZE_VALUES
            position = scale.index(value) if value in scale else 0
            data[key] = scale[min(max(position + rng.choice((-1, 1)), 0), len(scale) - 1)]
        elif key == "other":
            data[key] = ""
        elif value and rng.random() < 0.5:
            data[key] = value[:-1]
        else:
            data[key] = [*value, rng.choice(vocab.terms[key])]
    return Caption.model_validate(data)
