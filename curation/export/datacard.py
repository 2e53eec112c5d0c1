"""The dataset card of an export: data_cards/template.md.j2 rendered with numbers computed from the
records, plus a PNG bar chart of the Fitzpatrick distribution."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import Any

import jinja2
from PIL import Image, ImageDraw

import data_cards
from curation.export.splits import SPLITS, TINY_SPLIT
from curation.ingest.datasets import dataset_recipes
from schema.fields import FIELDS
from schema.fitzpatrick import BAND_TYPES

SOURCE_LICENSES = {
    "synthetic": "synthetic: images drawn by SkinFlow Workbench's demo generator; free to use, no clinical meaning.",
    "fitzpatrick17k": "fitzpatrick17k: metadata and labels CC BY-NC-SA 3.0 (Groh et al., CVPR Workshops 2021, "
    "github.com/mattgroh/fitzpatrick17k); the images belong to their original atlas sites.",
}


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def limitations(records: list[dict[str, Any]]) -> list[str]:
    """Known limitations computed from the data, not written by hand."""
    out = []
    n = len(records)
    types = Counter(r["fitzpatrick"] for r in records if r["fitzpatrick"])
    bands = Counter(r["fitzpatrick_band"] for r in records if not r["fitzpatrick"] and r.get("fitzpatrick_band"))
    covered = {t for band in bands for t in BAND_TYPES[band]}  # a band-only record covers its band's types
    missing = [str(t) for t in range(1, 7) if types[t] == 0 and t not in covered]
    if missing:
        out.append(f"No records of Fitzpatrick type(s) {', '.join(missing)}: results on those skin types are untested.")
    if bands:
        known = ", ".join(f"{band}: {count}" for band, count in sorted(bands.items()))
        out.append(f"Skin tone is known only as a band for {sum(bands.values())} records ({known}), not as a single type.")
    if types and not bands:
        low, high = min(types.values()), max(types.values())
        if not missing and high >= 3 * low:
            rare = min(types, key=types.get)
            out.append(f"Skin-type imbalance: type {rare} has {low} records, {high / low:.1f}x fewer than the most common type.")
    unknown = sum(1 for r in records if not r["fitzpatrick"] and not r.get("fitzpatrick_band"))
    if unknown:
        out.append(f"{unknown} records ({unknown / n:.0%}) have no Fitzpatrick type.")
    labels = Counter(r["diagnosis_key"] or "free text" for r in records)
    small = [k for k, c in labels.items() if c < 10]
    if small:
        out.append(f"Long tail: {len(small)} of {len(labels)} labels have fewer than 10 records.")
    free = labels.get("free text", 0)
    if free:
        out.append(f"{free} records have a free-text diagnosis outside the taxonomy.")
    unverified = sum(1 for r in records if not r["verified"])
    if unverified:
        out.append(f"{unverified} records are annotated but not verified by a reviewer.")
    by_split = Counter(r["split"] for r in records)
    empty = [split for split in SPLITS if not by_split[split]]
    if empty:
        out.append(f"No {' or '.join(empty)} records: the hf dataset has no such split (an empty one would not load).")
    tiny = [f"{split} ({by_split[split]})" for split in SPLITS if 0 < by_split[split] < TINY_SPLIT]
    if tiny:
        out.append(f"Tiny split(s): {', '.join(tiny)} records; metrics on them have wide intervals.")
    return out


def fitzpatrick_chart(records: list[dict[str, Any]]) -> bytes:
    """A small PNG bar chart of records per Fitzpatrick type (I-VI and unknown)."""
    counts = Counter(r["fitzpatrick"] for r in records)
    bars = [(str(t), counts.get(t, 0)) for t in range(1, 7)] + [("?", counts.get(None, 0))]
    width, height, margin = 420, 220, 30
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    top = max((c for _, c in bars), default=0) or 1
    slot = (width - 2 * margin) / len(bars)
    for index, (name, count) in enumerate(bars):
        x0 = margin + index * slot + 6
        bar_height = (height - 2 * margin) * count / top
        draw.rectangle((x0, height - margin - bar_height, x0 + slot - 12, height - margin), fill=(70, 110, 160))
        draw.text((x0 + slot / 2 - 10, height - margin + 6), name, fill="black")
        draw.text((x0, height - margin - bar_height - 14), str(count), fill="black")
    draw.text((margin, 6), "records per Fitzpatrick type", fill="black")
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return buffer.getvalue()


def render_card(
    records: list[dict[str, Any]],
    manifest: dict[str, Any],
    *,
    name: str,
    agreement: dict[str, float | None],
    duplicate_groups: int,
    drafting: str | None,
) -> str:
    n = len(records)
    fill = {f.key: sum(1 for r in records if r["caption"][f.key]) / n for f in FIELDS}
    sources = sorted(manifest["counts"]["by_source"])
    recipes = dataset_recipes()
    licenses = [
        SOURCE_LICENSES.get(s)
        or (
            recipes[s].card_line()
            if s in recipes
            else f"{s}: images imported by your team; state their license here before sharing."
        )
        for s in sources
    ]
    per_image = Counter(r["image_license"] for r in records if r.get("image_license"))
    if per_image:  # the source licenses each image on its own (ISIC Archive): the mix, as exported
        mix = ", ".join(f"{name} ({count})" for name, count in sorted(per_image.items()))
        licenses.append(f"Per-image licenses, as the source gives them: {mix}; each record's `image_license` says which.")
    licenses.append(f"Diagnosis taxonomy: {manifest['licenses']['taxonomy']}.")
    licenses_of_sources = {
        "cc-by-nc-sa-3.0" if s == "fitzpatrick17k" else recipes[s].license_id if s in recipes else "other"
        for s in sources
        if s != "synthetic"
    }
    # one license for the card's header when the sources agree; otherwise "other" and the list below says which
    license_id = licenses_of_sources.pop() if len(licenses_of_sources) == 1 else "other" if licenses_of_sources else "cc0-1.0"
    template_text = (Path(data_cards.__file__).parent / "template.md.j2").read_text(encoding="utf-8")
    template = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True).from_string(
        template_text
    )
    synthetic = sum(1 for r in records if r["source"] == "synthetic") / n
    return template.render(
        name=name,
        manifest=manifest,
        n=n,
        verified=sum(1 for r in records if r["verified"] and r["label_kind"] != "source"),
        source_labels=sum(1 for r in records if r["label_kind"] == "source"),
        label_provenance=sorted(Counter((r["label_kind"], r["label_provenance"] or "not stated") for r in records).items()),
        annotators=len({a for r in records for a in r["annotators"]}),
        duplicate_groups=duplicate_groups,
        top_labels=Counter(r["diagnosis_display"] or r["diagnosis_text"] or "none" for r in records).most_common(20),
        fill_rates=fill,
        agreement=agreement,
        drafting=drafting,
        limitations=limitations(records),
        licenses=licenses,
        license_id=license_id,
        size_category=_size_category(n),
        synthetic_share=synthetic,
        pct=lambda x: f"{x:.0%}",
    )
