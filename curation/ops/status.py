"""Counts for `skinflow status` and the app's overview: by state, label, Fitzpatrick type, source."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import and_, func, or_, select

from curation.store.db import Workbench
from curation.store.models import Annotation, Draft, Image, User


def workbench_status(wb: Workbench) -> dict:
    with wb.session() as s:

        def grouped(column) -> dict:
            rows = s.execute(select(column, func.count(Image.id)).group_by(column)).all()
            return {("unknown" if key is None else key): count for key, count in sorted(rows, key=lambda r: -r[1])}

        by_label_key = grouped(Image.diagnosis_key)
        # what a label without a taxonomy key is: a source code naming a group of conditions (HAM10000 bkl, kept with
        # its group) or free text; what an unknown Fitzpatrick type is: a band (DDI 56 -> V-VI) or nothing
        free_text, group_codes, bands = 0, 0, Counter()
        for key, source_label, fitzpatrick, meta in s.execute(
            select(Image.diagnosis_key, Image.source_label, Image.fitzpatrick, Image.meta).where(
                or_(and_(Image.diagnosis_key.is_(None), Image.source_label.is_not(None)), Image.fitzpatrick.is_(None))
            )
        ):
            meta = meta or {}
            if key is None and source_label is not None:
                grouped_code = bool(meta.get("label_group9") or meta.get("label_group3"))
                group_codes += grouped_code
                free_text += not grouped_code
            if fitzpatrick is None and meta.get("fitzpatrick_band"):
                bands[f"band {meta['fitzpatrick_band']}"] += 1
        by_fitzpatrick = {str(k): v for k, v in sorted(grouped(Image.fitzpatrick).items(), key=lambda kv: str(kv[0]))}
        if bands:  # the images known only by band are not "unknown"
            by_fitzpatrick["unknown"] = by_fitzpatrick.get("unknown", 0) - sum(bands.values())
            by_fitzpatrick = {**{k: v for k, v in by_fitzpatrick.items() if v}, **dict(sorted(bands.items()))}
        return {
            "images": s.scalar(select(func.count(Image.id))) or 0,
            "by_status": grouped(Image.status),
            "by_label": by_label_key,
            "free_text_labels": free_text,
            "group_code_labels": group_codes,
            "by_fitzpatrick": by_fitzpatrick,
            "by_source": grouped(Image.source),
            "drafts": dict(s.execute(select(Draft.kind, func.count(Draft.id)).group_by(Draft.kind)).all()),
            "annotations": s.scalar(select(func.count(Annotation.id))) or 0,
            "users": dict(s.execute(select(User.role, func.count(User.id)).group_by(User.role)).all()),
            "annotators": sorted(s.scalars(select(User.username).where(User.id.in_(select(Annotation.user_id).distinct())))),
        }
