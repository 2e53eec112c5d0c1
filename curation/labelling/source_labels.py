"""A source's own labels accepted in bulk: the way from a public dataset to a training export without annotating
and reviewing every image first.

Public datasets say how each label was established (HAM10000 `dx_type`: histo, follow_up, consensus, confocal;
ISIC `diagnosis_confirm_type`; PAD-UFES-20 `biopsed`), and import keeps it (`label_provenance`, and the column
itself). An admin accepts the labels of the rows they trust as they are (`verify_source_labels(wb, admin, "ham10000",
["dx_type=histo"])`): each such image's source label (its taxonomy key, or the group a code names) becomes
exportable with `labels="source"` or `"both"`, marked as a source label with its provenance. Audited, and undone
the same way (`undo=True`). Captions are not touched: they are still drafted and refined per image.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select, update

from curation.errors import SkinflowError
from curation.store import audit
from curation.store.auth import Actor, require
from curation.store.db import Workbench
from curation.store.models import Image, utcnow

LABEL_KINDS = ("verified", "source", "both")  # what an export takes: reviewed annotations, accepted source labels, both
_BATCH = 5_000


@dataclass(frozen=True)
class SourceVerification:
    source: str
    where: dict[str, tuple[str, ...]]  # column -> accepted values (any of them; every column must match)
    matched: int  # rows of the source meeting the conditions
    changed: int  # rows newly accepted (or, with undo, no longer accepted)
    without_label: int  # matched rows whose label is not in the taxonomy (free text): left as they are
    undo: bool


def parse_where(conditions: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """["dx_type=histo|consensus", "sex=female"] -> {"dx_type": ("histo", "consensus"), "sex": ("female",)}."""
    parsed: dict[str, tuple[str, ...]] = {}
    for condition in conditions:
        column, equals, values = condition.partition("=")
        accepted = tuple(v.strip().lower() for v in values.split("|") if v.strip())
        if not equals or not column.strip() or not accepted:
            raise SkinflowError(f"--where {condition!r}: write COLUMN=VALUE (several values as VALUE|VALUE), e.g. dx_type=histo")
        parsed[column.strip().lower()] = accepted
    return parsed


def _has_label(image_key: str | None, meta: dict) -> bool:
    # a taxonomy key, the group a code names, or the row's own three-way truth (ISIC benign_malignant, DDI malignant)
    return image_key is not None or bool(meta.get("label_group9") or meta.get("label_group3"))


def verify_source_labels(
    wb: Workbench, actor: Actor, source: str, where: Iterable[str] = (), *, undo: bool = False
) -> SourceVerification:
    """Accept (or, with undo, stop accepting) the labels of a source's rows whose metadata match `where`."""
    require(actor, "admin", "accept source labels in bulk")
    conditions = parse_where(where)
    with wb.session() as s:
        sources = sorted(s.scalars(select(Image.source).distinct()))
        if source not in sources:
            raise SkinflowError(f"no images from source {source!r}; the sources here are: {', '.join(sources) or 'none'}")
        rows = s.execute(
            select(Image.id, Image.meta, Image.diagnosis_key, Image.source_verified_at).where(
                Image.source == source, Image.sha256.is_not(None)
            )
        ).all()
        columns = {key.lower() for _, meta, _, _ in rows for key in (meta or {})}
        unknown = sorted(set(conditions) - columns)
        if unknown:
            raise SkinflowError(
                f"source {source!r} has no column {', '.join(unknown)}; its columns are: {', '.join(sorted(columns))}. "
                "Nothing was changed."
            )
        matched, without_label, targets = 0, 0, []
        for image_id, meta, key, verified_at in rows:
            lowered = {k.lower(): str(v).strip().lower() for k, v in (meta or {}).items()}
            if any(lowered.get(column) not in values for column, values in conditions.items()):
                continue
            matched += 1
            if not _has_label(key, meta or {}):
                without_label += 1
            elif (verified_at is not None) == undo:
                targets.append(image_id)
        for start in range(0, len(targets), _BATCH):
            chunk = targets[start : start + _BATCH]
            values = {"source_verified_by": None, "source_verified_at": None}
            if not undo:
                values = {"source_verified_by": actor.id, "source_verified_at": utcnow()}
            s.execute(update(Image).where(Image.id.in_(chunk)).values(**values))
        audit.record(
            s,
            actor,
            "images.unverify_source" if undo else "images.verify_source",
            "image",
            None,
            source=source,
            where={column: list(values) for column, values in conditions.items()},
            matched=matched,
            changed=len(targets),
            without_label=without_label,
            image_ids=targets[:1000],  # the first thousand: enough to trace a batch, small enough to keep
        )
    return SourceVerification(source, conditions, matched, len(targets), without_label, undo)
