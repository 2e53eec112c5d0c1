"""Counts for `skinflow status` and the app's overview: by state, label, Fitzpatrick type, source."""

from __future__ import annotations

from sqlalchemy import func, select

from curation.store.db import Workbench
from curation.store.models import Annotation, Draft, Image, User


def workbench_status(wb: Workbench) -> dict:
    with wb.session() as s:

        def grouped(column) -> dict:
            rows = s.execute(select(column, func.count(Image.id)).group_by(column)).all()
            return {("unknown" if key is None else key): count for key, count in sorted(rows, key=lambda r: -r[1])}

        by_label_key = grouped(Image.diagnosis_key)
        free_text = s.scalar(select(func.count(Image.id)).where(Image.diagnosis_key.is_(None), Image.source_label.is_not(None)))
        return {
            "images": s.scalar(select(func.count(Image.id))) or 0,
            "by_status": grouped(Image.status),
            "by_label": by_label_key,
            "free_text_labels": free_text or 0,
            "by_fitzpatrick": {str(k): v for k, v in sorted(grouped(Image.fitzpatrick).items(), key=lambda kv: str(kv[0]))},
            "by_source": grouped(Image.source),
            "drafts": dict(s.execute(select(Draft.kind, func.count(Draft.id)).group_by(Draft.kind)).all()),
            "annotations": s.scalar(select(func.count(Annotation.id))) or 0,
            "users": dict(s.execute(select(User.role, func.count(User.id)).group_by(User.role)).all()),
            "annotators": sorted(s.scalars(select(User.username).where(User.id.in_(select(Annotation.user_id).distinct())))),
        }
