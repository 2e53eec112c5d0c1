"""Which records an export takes and what each holds: the filter (ExportFilter), one record per image (its
verified annotation, or its source label), the groups the split keeps together (Grouping), and the keyed-hash
pseudonyms of patient and lesion ids. curation/export/dataset.py writes them out."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from PIL import Image as PILImage
from sqlalchemy import false, or_, select
from sqlalchemy.orm import Session

from curation.errors import ConfigError, ExportError
from curation.export.neardup import DEFAULT_MAX_DISTANCE, near_duplicate_groups
from curation.export.splits import SPLITS, assign_splits, join_groups
from curation.ingest.clean import dhash
from curation.store.db import Workbench
from curation.store.models import LESION_COLUMNS, Annotation, Image, Review, User
from curation.store.secrets import read_secret
from schema.caption import Caption, render
from schema.fitzpatrick import BAND_TYPES, band_of

IDENTIFYING_COLUMNS = (*LESION_COLUMNS, "patient", "lesion")  # ids of people: exported as pseudonyms by default


def _chain_authors(annotation: Annotation, by_id: dict[int, Annotation], usernames: dict[int, str]) -> list[str]:
    """Usernames of everyone who wrote a version of this annotation, first author first."""
    names, current = [], annotation
    while current is not None:
        names.append(usernames[current.user_id])
        current = by_id.get(current.supersedes_id) if current.supersedes_id else None
    return sorted(set(names), key=names[::-1].index)


def _latest_annotations(session: Session, image_ids: list[int]) -> dict[int, Annotation]:
    """The newest version of the most recent annotation chain per image (for unverified exports)."""
    superseded = select(Annotation.supersedes_id).where(Annotation.supersedes_id.is_not(None))
    rows = session.scalars(
        select(Annotation).where(Annotation.image_id.in_(image_ids), Annotation.id.not_in(superseded)).order_by(Annotation.id)
    )
    return {a.image_id: a for a in rows}


@dataclass(frozen=True)
class ExportFilter:
    """Which records an export takes. Empty tuples mean "all"."""

    include_unverified: bool = False
    labels: tuple[str, ...] = ()  # taxonomy keys
    groups: tuple[str, ...] = ()  # nine- or three-partition group names
    fitzpatrick: tuple[int, ...] = ()
    sources: tuple[str, ...] = ()
    holdout_labels: tuple[str, ...] = ()  # whole classes only in test (zero-shot evaluation)
    max_hash_distance: int | None = DEFAULT_MAX_DISTANCE  # near-duplicates: hashes at most this many bits apart; None: off
    # metadata columns whose images stay in one split (a lesion, a patient); None: those of LESION_COLUMNS the
    # records carry; (): near-duplicates only
    group_by: tuple[str, ...] | None = None
    # the patient and lesion ids in each record's group_keys as they were imported; by default each is replaced by
    # a keyed hash (equal ids stay equal, within and across this workbench's exports), as they identify people
    raw_group_keys: bool = False
    # which labels: "verified" (annotations verified in review), "source" (source labels an admin accepted in bulk,
    # curation/labelling/source_labels.py: no curated caption), "both" (an image's verified annotation wins)
    label_kinds: str = "verified"
    # imported metadata columns each record carries under `metadata` (age, sex, localization, a per-image license);
    # patient and lesion ids among them are pseudonymised like group_keys unless raw_group_keys
    metadata_columns: tuple[str, ...] = ()

    def keeps(self, record: dict[str, Any]) -> bool:
        return (
            (not self.labels or record["diagnosis_key"] in self.labels)
            and (not self.groups or record["group9"] in self.groups or record["group3"] in self.groups)
            and (not self.fitzpatrick or record["fitzpatrick"] in self.fitzpatrick or self._band_inside(record))
            and (not self.sources or record["source"] in self.sources)
        )

    def _band_inside(self, record: dict[str, Any]) -> bool:
        """A record known only by band (DDI V-VI) is kept when the filter takes every type of the band."""
        band = record["fitzpatrick_band"] if record["fitzpatrick"] is None else None
        return bool(band) and set(BAND_TYPES[band]) <= set(self.fitzpatrick)

    def describe(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def _stored_dhash(wb: Workbench, image: Image) -> str | None:
    """Images imported before perceptual hashes existed: hash the stored file (nothing is written)."""
    if image.dhash:
        return image.dhash
    try:
        with PILImage.open(wb.images.local_path(image.file_path)) as img:
            return dhash(img)
    except OSError:
        return None


@dataclass(frozen=True)
class Grouping:
    """How the records were kept together for the split."""

    columns: tuple[str, ...]  # metadata columns used
    duplicate_groups: int  # near-duplicate groups of two or more images
    split_groups: int  # groups after joining (each lands in one split)
    multi_image_groups: int  # of those, groups of two or more images
    by_column: dict[str, int]  # distinct values per column
    by_split: dict[str, int]  # groups per split

    def describe(self) -> dict[str, Any]:
        return {**self.__dict__, "columns": list(self.columns)}


def _group_columns(selection: ExportFilter, metas: list[dict[str, Any]]) -> tuple[str, ...]:
    present = {key for meta in metas for key, value in meta.items() if value not in (None, "")}
    if selection.group_by is None:
        return tuple(c for c in LESION_COLUMNS if c in present)
    missing = [c for c in selection.group_by if c not in present]
    if missing:
        found = sorted(present)
        raise ExportError(
            f"no exported record has {' or '.join(map(repr, missing))} in its metadata, so it cannot group the split; "
            f"columns found: {', '.join(found[:30]) or 'none'} (or pass --group-by none)"
        )
    return selection.group_by


def _source_group(image: Image, annotation: Annotation) -> tuple[str | None, str | None]:
    """The group of a kept source code that names several conditions (HAM10000 bkl -> benign epidermal), when the
    annotator confirmed that code rather than naming a label; otherwise no group."""
    meta = image.meta or {}
    if annotation.diagnosis_text and annotation.diagnosis_text == image.source_label and meta.get("label_group9"):
        return meta["label_group9"], meta.get("label_group3")
    return None, None


def _record_base(image: Image) -> dict[str, Any]:
    """What every record says about its picture and where it came from (the source row, traceable back)."""
    meta = image.meta or {}
    return {
        "id": image.id,
        "image": f"images/{image.file_path}",
        "sha256": image.sha256,
        "width": image.width,
        "height": image.height,
        "fitzpatrick": image.fitzpatrick,
        # the band (I-II, III-IV, V-VI): the type's, or the only thing the source knows (DDI skin_tone)
        "fitzpatrick_band": band_of(image.fitzpatrick) or meta.get("fitzpatrick_band"),
        "source": image.source,
        "source_id": image.external_id,  # the image's id in its source (HAM10000 image_id, a clinic's id)
        "source_label": image.source_label,
        "label_provenance": meta.get("label_provenance"),  # how the source established its label (histo ...)
        "image_license": meta.get("image_license"),  # where the source gives one per image (ISIC Archive)
    }


def _annotation_record(
    image: Image,
    annotation: Annotation,
    by_id: dict[int, Annotation],
    usernames: dict[int, str],
    reviewers: dict[int, str],
    taxonomy: Any,
) -> dict[str, Any]:
    caption = Caption.model_validate(annotation.caption)
    label = taxonomy.labels.get(annotation.diagnosis_key) if annotation.diagnosis_key else None
    group9, group3 = (label.group9, label.group3) if label else _source_group(image, annotation)
    return {
        **_record_base(image),
        "label_kind": "annotation",
        "caption": caption.to_json(),
        "caption_text": render(caption),
        "diagnosis_key": annotation.diagnosis_key,
        "diagnosis_display": label.display if label else None,
        "diagnosis_text": annotation.diagnosis_text,
        "group9": group9,
        "group3": group3,
        "diagnosis_status": annotation.diagnosis_status,
        "annotators": _chain_authors(annotation, by_id, usernames),
        "reviewer": reviewers.get(annotation.id) if image.verified_annotation_id else None,
        "verified": image.verified_annotation_id is not None,
    }


def _source_record(image: Image, usernames: dict[int, str], taxonomy: Any) -> dict[str, Any]:
    """A source label an admin accepted as it is: the label (or the group its code names), no curated caption."""
    meta = image.meta or {}
    label = taxonomy.labels.get(image.diagnosis_key) if image.diagnosis_key else None
    caption = Caption()
    return {
        **_record_base(image),
        "label_kind": "source",
        "caption": caption.to_json(),
        "caption_text": "",  # nothing curated: trainers skip these for captions (grpo stage 1 leaves them out)
        "diagnosis_key": image.diagnosis_key,
        "diagnosis_display": label.display if label else None,
        "diagnosis_text": None if label else image.source_label,
        "group9": label.group9 if label else meta.get("label_group9"),
        "group3": label.group3 if label else meta.get("label_group3"),
        "diagnosis_status": "source",
        "annotators": [],
        "reviewer": usernames.get(image.source_verified_by),  # the admin who accepted the source's labels
        "verified": True,
    }


def collect_records(
    wb: Workbench, session: Session, *, seed: int, selection: ExportFilter = ExportFilter()
) -> tuple[list[dict[str, Any]], Grouping]:
    """(records with their split, how they were grouped)."""
    statuses = ("verified", "annotated") if selection.include_unverified else ("verified",)
    annotated = Image.status.in_(statuses) if selection.label_kinds != "source" else false()
    accepted = Image.source_verified_at.is_not(None) if selection.label_kinds != "verified" else false()
    images = list(session.scalars(select(Image).where(or_(annotated, accepted), Image.sha256.is_not(None)).order_by(Image.id)))
    latest = _latest_annotations(session, [i.id for i in images if i.verified_annotation_id is None])
    # everything the records need, in a few bulk queries rather than several per record
    image_ids = [i.id for i in images]
    by_id: dict[int, Annotation] = {}
    for start in range(0, len(image_ids), 10_000):
        by_id.update(
            {
                a.id: a
                for a in session.scalars(select(Annotation).where(Annotation.image_id.in_(image_ids[start : start + 10_000])))
            }
        )
    usernames = dict(session.execute(select(User.id, User.username)).all())
    reviewers: dict[int, str] = {}
    for annotation_id, reviewer_id in session.execute(
        select(Review.annotation_id, Review.reviewer_id).where(Review.decision == "verified").order_by(Review.id)
    ):
        reviewers[annotation_id] = usernames[reviewer_id]  # the newest verification wins
    records = []
    hashes: dict[str, str | None] = {}
    metas: dict[str, dict[str, Any]] = {}
    taxonomy = wb.taxonomy
    for image in images:
        annotation = None
        if image.status in statuses and selection.label_kinds != "source":
            annotation = by_id.get(image.verified_annotation_id) if image.verified_annotation_id else latest.get(image.id)
        if annotation is None and image.source_verified_at is None:
            continue
        record = _annotation_record(image, annotation, by_id, usernames, reviewers, taxonomy) if annotation else None
        record = record or _source_record(image, usernames, taxonomy)
        if selection.keeps(record):
            records.append(record)
            hashes[image.sha256] = _stored_dhash(wb, image)
            metas[image.sha256] = image.meta or {}
    if selection.max_hash_distance is None:
        duplicates = {item: item for item in hashes}
    else:
        duplicates = near_duplicate_groups(hashes, selection.max_hash_distance)
    columns = _group_columns(selection, list(metas.values()))
    present = {c for meta in metas.values() for c in meta}
    absent = [c for c in selection.metadata_columns if c not in present]
    if absent:
        raise ExportError(
            f"no exported record has the metadata column(s) {', '.join(absent)}; the records have: "
            f"{', '.join(sorted(present)) or 'none'}. Nothing was written."
        )
    group_keys = {item: {c: str(meta[c]) for c in columns if meta.get(c) not in (None, "")} for item, meta in metas.items()}
    # a key names its column, so lesion "7" and patient "7" are not joined
    groups = join_groups(duplicates, {item: [f"{c}={v}" for c, v in kv.items()] for item, kv in group_keys.items()})
    holdout = frozenset(selection.holdout_labels)
    splits = assign_splits(
        [(r["sha256"], r["diagnosis_key"] or "__free_text__", groups[r["sha256"]]) for r in records],
        seed,
        wb.settings.split_fractions,
        holdout,
    )
    key = None if selection.raw_group_keys else export_key(wb)
    for record in records:
        record["split"] = splits[record["sha256"]]
        record["duplicate_group"] = duplicates[record["sha256"]][:12]
        record["split_group"] = groups[record["sha256"]][:12]
        kv = group_keys[record["sha256"]]
        record["group_keys"] = kv if key is None else {c: pseudonym(key, c, v) for c, v in kv.items()}
        meta = metas[record["sha256"]]
        record["metadata"] = {
            c: (pseudonym(key, c, str(meta[c])) if key is not None and c in IDENTIFYING_COLUMNS else meta[c])
            for c in selection.metadata_columns
            if meta.get(c) not in (None, "")
        }
    sizes = Counter(groups.values())
    grouping = Grouping(
        columns=columns,
        duplicate_groups=sum(1 for n in Counter(duplicates.values()).values() if n > 1),
        split_groups=len(sizes),
        multi_image_groups=sum(1 for n in sizes.values() if n > 1),
        by_column={c: len({r["group_keys"][c] for r in records if c in r["group_keys"]}) for c in columns},
        by_split={s: len({r["split_group"] for r in records if r["split"] == s}) for s in SPLITS},
    )
    return records, grouping


EXPORT_KEY_FILE = "export-key"


def export_key(wb: Workbench) -> bytes:
    """This workbench's secret for pseudonyms: SKINFLOW_EXPORT_KEY (or the file SKINFLOW_EXPORT_KEY_FILE names: 64
    hex digits) where several servers share one workbench, so each exports the same pseudonyms; else a key
    created on first use, owner-only, beside the database. Keep it with the workbench: pseudonyms stay the same
    across its exports only while it does."""
    given = read_secret("SKINFLOW_EXPORT_KEY")
    if given is not None:
        try:
            key = bytes.fromhex(given.strip())
        except ValueError:
            key = b""
        if len(key) < 16:
            raise ConfigError(
                "SKINFLOW_EXPORT_KEY is not a key: give 64 hex digits (e.g. `python3 -c 'import secrets; "
                "print(secrets.token_hex(32))'`), the same on every server"
            )
        return key
    path = wb.settings.home / EXPORT_KEY_FILE
    try:  # created exclusively: two first exports at once must not each make (and use) their own key
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_hex(32) + "\n")
    for _ in range(50):  # (the other export may be between creating and writing it)
        text = path.read_text(encoding="utf-8").strip()
        if text:
            return bytes.fromhex(text)
        time.sleep(0.01)
    raise ExportError(f"{path} is empty: remove it, and exports will make a new key (new pseudonyms)")


def pseudonym(key: bytes, column: str, value: str) -> str:
    """A keyed hash of an id (HMAC-SHA256, its column included: lesion 7 and patient 7 differ): equal ids give equal
    pseudonyms, and without the key nobody can test a guessed id against one."""
    return "p-" + hmac.new(key, f"{column}={value}".encode(), hashlib.sha256).hexdigest()[:20]


CHOICES_SCAN = 20_000  # newest images read for the metadata columns offered (a page must not read every row)


@dataclass(frozen=True)
class ExportChoices:
    sources: list[str]
    metadata_columns: list[str]
    default_group_by: list[str]  # LESION_COLUMNS the data carries


def export_choices(wb: Workbench) -> ExportChoices:
    """What the export form can offer: the sources present and the metadata columns of the newest images."""
    with wb.session() as session:
        sources = sorted(session.scalars(select(Image.source).distinct()))
        metas = session.scalars(select(Image.meta).order_by(Image.id.desc()).limit(CHOICES_SCAN))
        columns = sorted({key for meta in metas for key, value in (meta or {}).items() if value not in (None, "")})
    hidden = {"true_caption"}  # synthetic ground truth, not a grouping column
    columns = [c for c in columns if c not in hidden]
    return ExportChoices(sources, columns, [c for c in LESION_COLUMNS if c in columns])
