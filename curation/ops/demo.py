"""The demo workbench (`skinflow demo`): the demo accounts, the synthetic cases of demo_cases.py imported as
images with noisy synthetic drafts, and a share annotated and verified by the demo accounts so that review,
insights and export have data at once. Deterministic by seed; re-running adds nothing; marked
source=synthetic everywhere."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random

from curation.assist.drafts import add_draft
from curation.errors import NotFound, PermissionDenied
from curation.ingest.common import ImportReport, KnownContent, ingest_bytes
from curation.ingest.demo_cases import ARCHETYPES, GENERATOR, GENERATOR_VERSION, DemoCase, generate_cases, noisy_draft
from curation.labelling.annotate import review_annotation, submit_annotation
from curation.store import audit
from curation.store.auth import Actor, add_user, count_users, get_actor, require
from curation.store.db import Workbench
from curation.store.files import sha256_hex
from curation.store.models import Image

DEMO_ACCOUNTS = (("admin", "admin"), ("reviewer", "reviewer"), ("annotator", "annotator"))
# Who the demo's seeded annotations and verifications are credited to: not the accounts people log in with (the
# `annotator` a dermatologist tries the demo as had work to their name they never did, and Insights counted it).
# Their passwords are not printed: nobody logs in as them.
SEED_ACCOUNTS = (("demo-annotator", "annotator"), ("demo-reviewer", "reviewer"))


@dataclass
class DemoReport:
    import_report: ImportReport
    accounts: dict[str, str] = field(default_factory=dict)  # username -> password, only for accounts created now
    drafts: int = 0
    annotated: int = 0
    verified: int = 0


def _demo_actors(wb: Workbench, actor: Actor | None, report: DemoReport) -> dict[str, Actor]:
    """The demo accounts, created where missing. On a workbench without accounts `actor` may be
    None (the demo admin is created first); otherwise an admin must act."""
    if actor is None:
        if count_users(wb):
            raise PermissionDenied("this workbench has accounts: an admin must build the demo (--user NAME)")
    else:
        require(actor, "admin", "build the demo")
    creator = actor
    actors: dict[str, Actor] = {}
    for username, role in DEMO_ACCOUNTS:
        try:
            actors[username] = get_actor(wb, username)
        except NotFound:
            actors[username], report.accounts[username] = add_user(wb, creator, username, role)
        creator = creator or actors[username]
    for username, role in SEED_ACCOUNTS:
        try:
            actors[username] = get_actor(wb, username)
        except NotFound:
            actors[username] = add_user(wb, creator, username, role)[0]
    return actors


def build_demo(
    wb: Workbench,
    actor: Actor | None,
    *,
    n: int = 300,
    seed: int = 0,
    verified_fraction: float = 0.5,
    annotated_fraction: float = 0.1,
    drafts: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> DemoReport:
    """Create the demo accounts (admin, reviewer, annotator) if missing, import n synthetic images
    with noisy drafts (unless drafts=False: benchmarks add their own sources), and have the seed accounts
    (demo-annotator, demo-reviewer) annotate and verify a share
    of them (their true captions), so exports and training work out of the box. Re-running with
    the same seed adds nothing."""
    report = DemoReport(ImportReport())
    actors = _demo_actors(wb, actor, report)
    admin = actor or actors["admin"]
    annotator, reviewer = actors["demo-annotator"], actors["demo-reviewer"]
    cases = generate_cases(n, seed)
    new_rows: list[tuple[DemoCase, Image]] = []
    with wb.session() as session:
        known = KnownContent(session)
        existing = {ext for (ext,) in session.query(Image.external_id).filter(Image.source == "synthetic")}
        for case in cases:
            external_id = f"synthetic:{seed}:{case.index}"
            if external_id in existing:
                report.import_report.already_present += 1
                continue

            def make_row(case=case, external_id=external_id) -> Image:
                return Image(
                    source="synthetic",
                    source_ref=f"{GENERATOR} v{GENERATOR_VERSION} seed {seed} case {case.index}",
                    external_id=external_id,
                    source_label=case.archetype.label,
                    diagnosis_key=case.archetype.label,
                    fitzpatrick=case.fitzpatrick,
                    status="pending",
                    meta={
                        "generator": GENERATOR,
                        "generator_version": GENERATOR_VERSION,
                        "seed": seed,
                        "case": case.index,
                        "true_caption": case.caption.to_json(),
                    },
                )

            image = ingest_bytes(
                wb, session, known, report.import_report, external_id, case.image_bytes, sha256_hex(case.image_bytes), make_row
            )
            if image is not None:
                new_rows.append((case, image))
        session.flush()
        new_cases = [(case, image.id) for case, image in new_rows]
        report.import_report.image_ids.extend(image_id for _, image_id in new_cases)
        if new_cases:
            audit.record(session, admin, "demo.build", "image", None, seed=seed, n=len(new_cases))
    total = len(new_cases)
    for done, (case, image_id) in enumerate(new_cases, 1):
        rng = Random(f"{GENERATOR}-draft:{seed}:{case.index}")
        draft = noisy_draft(rng, case.caption)
        others = [a.label for a in ARCHETYPES if a.label != case.archetype.label]
        rng.shuffle(others)
        ranked = [case.archetype.label, *others[:2]] if rng.random() < 0.6 else [*others[:2], case.archetype.label]
        draft_id = None
        if drafts:
            draft_id = add_draft(
                wb,
                admin,
                image_id,
                kind="synthetic",
                producer=GENERATOR,
                version=GENERATOR_VERSION,
                caption=draft,
                diagnoses=[{"key": key, "score": round(0.6 / (rank + 1), 3)} for rank, key in enumerate(ranked)],
            )
            report.drafts += 1
        roll = rng.random()
        if roll < verified_fraction + annotated_fraction:
            annotation_id = submit_annotation(
                wb,
                annotator,
                image_id,
                case.caption,
                diagnosis=case.archetype.label,
                diagnosis_status="confirmed",
                based_on_draft_id=draft_id,
                seconds_spent=round(rng.uniform(20, 90), 1),
            )
            report.annotated += 1
            if roll < verified_fraction:
                review_annotation(wb, reviewer, annotation_id, "verified")
                report.verified += 1
        if progress:
            progress(done, total)
    return report
