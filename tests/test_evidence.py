"""Evidence per source and field: held-out agreement of each draft source with verified annotations."""

import json

import pytest

from curation.assist.drafts import add_draft
from curation.assist.evidence import compute_evidence, source_evidence
from curation.labelling.annotate import review_annotation, submit_annotation
from curation.store.models import Image, TrainingRun
from schema.errors import SkinflowError

LLM = "llm:vision-model:caption-v1+schema1"
MODEL = "model:skinflow:run-1:stage2"


@pytest.fixture
def bench(wb, admin, reviewer, annotator, tmp_path):
    """30 verified images (brown, round, melanoma). The LLM gets color right and shape wrong and says nevus;
    run #1's model gets shape right and color wrong and says melanoma, and it trained on the first 10 images."""
    with wb.session() as s:
        rows = [Image(source="test", status="pending", sha256=f"{i:064x}", file_path=f"{i}.jpg") for i in range(1, 31)]
        s.add_all(rows)
        s.flush()
        ids = [r.id for r in rows]
    for image_id in ids:
        annotation = submit_annotation(
            wb, annotator, image_id, {"color": ["brown"], "shape": ["round"]}, diagnosis="melanoma", diagnosis_status="confirmed"
        )
        review_annotation(wb, reviewer, annotation, "verified")
        add_draft(
            wb,
            admin,
            image_id,
            kind="llm",
            producer="vision-model",
            version="caption-v1+schema1",
            caption={"color": ["brown"], "shape": ["oval"]},
            diagnoses=[{"key": "nevocytic nevus", "score": 0.7}],
        )
        add_draft(
            wb,
            admin,
            image_id,
            kind="model",
            producer="skinflow",
            version="run-1:stage2",
            caption={"color": ["red"], "shape": ["round"]},
            diagnoses=[{"key": "melanoma", "score": 0.6}, {"key": "nevocytic nevus", "score": 0.3}],
        )
    export = tmp_path / "export"
    export.mkdir()
    (export / "records.jsonl").write_text(
        "".join(json.dumps({"id": i, "split": "train" if n < 10 else "test"}) + "\n" for n, i in enumerate(ids))
    )
    with wb.session() as s:
        s.add(TrainingRun(id=1, preset="tiny", status="done", config={"export_path": str(export)}, created_by=admin.id))
    return wb, ids


def test_each_source_is_scored_per_field_on_what_it_did_not_learn_from(bench):
    wb, ids = bench
    report = compute_evidence(wb, min_evidence=20)
    by_source = {e.source: e for e in report.sources}
    assert set(by_source) == {LLM, MODEL} and report.verified_images == 30
    llm, model = by_source[LLM].measures, by_source[MODEL].measures
    assert (llm["color"].mean, llm["color"].n, llm["shape"].mean) == (1.0, 30, 0.0)
    assert (model["color"].mean, model["color"].n, model["shape"].mean) == (0.0, 20, 1.0)  # its 10 training images left out
    assert (llm["diagnosis_top1"].mean, model["diagnosis_top1"].mean, model["diagnosis_top6"].mean) == (0.0, 1.0, 1.0)
    # neither source ever fills `number`: saying nothing agrees with the empty truths, but it is no evidence
    assert (llm["number"].n, model["number"].n, report.chosen["number"]) == (0, 0, None)
    assert "run #1" in by_source[MODEL].held_out and "10 excluded" in by_source[MODEL].held_out
    assert report.chosen["color"] == LLM and report.chosen["shape"] == MODEL and report.chosen["diagnosis_top1"] == MODEL
    from curation.assist.evidence import describe_decision  # what `skinflow sources` prints per measure

    assert describe_decision(report, "shape") == f"{MODEL} (replaced: {MODEL} +0.909 over {LLM} on 20 shared items, P 1.00)"
    assert (
        describe_decision(report, "color")
        == f"{LLM} (kept {LLM}: best challenger {MODEL} -0.909 over {LLM} on 20 shared items, P 0.00)"
    )
    lo, hi = model["color"].ci95
    assert lo <= 0.0 <= hi and llm["color"].ci95 == (1.0, 1.0)
    strict = compute_evidence(wb, min_evidence=25)  # the model has 20 held-out items: not enough any more
    assert strict.chosen["shape"] == LLM and strict.chosen["diagnosis_top1"] == LLM


def test_the_report_is_cached_until_what_it_depends_on_changes(bench, reviewer, annotator, admin):
    wb, ids = bench
    first = source_evidence(wb, reviewer, min_evidence=20)
    cache = wb.settings.home / "cache" / "evidence.json"
    assert cache.exists() and json.loads(cache.read_text())["measures"]["color"]["chosen"] == LLM
    again = source_evidence(wb, reviewer, min_evidence=20)
    assert again == first  # read back from the cache, the same report
    add_draft(wb, admin, ids[0], kind="synthetic", producer="skinflow-demo", version="1", caption={"color": ["brown"]})
    fresh = source_evidence(wb, reviewer, min_evidence=20)
    assert "synthetic:skinflow-demo:1" in {e.source for e in fresh.sources} and fresh.fingerprint != first.fingerprint
    with pytest.raises(SkinflowError, match="reviewer"):
        source_evidence(wb, annotator)


def test_route_takes_each_field_from_its_winner_and_merges_diagnoses_by_held_out_accuracy(bench):
    from curation.assist.routing import route
    from curation.store.models import Draft

    wb, ids = bench
    report = compute_evidence(wb, min_evidence=20)
    llm = Draft(
        id=2,
        kind="llm",
        producer="vision-model",
        version="caption-v1+schema1",
        caption={"color": ["brown"], "shape": ["oval"], "size": "1-2 cm", "size_mm": 12.0},
        diagnoses=[{"key": "nevocytic nevus", "score": 0.9}, {"key": "melanoma", "score": 0.1}],
    )
    model = Draft(
        id=3,
        kind="model",
        producer="skinflow",
        version="run-1:stage2",
        caption={"color": ["red"], "shape": ["round"]},
        diagnoses=[{"key": "melanoma", "score": 0.6}],
    )
    routed = route([llm, model], report)
    caption, diagnoses, fields = routed.caption, routed.diagnoses, routed.fields
    assert (caption["color"], fields["color"]) == (["brown"], LLM)  # the LLM won color on held-out images
    assert (caption["shape"], fields["shape"]) == (["round"], MODEL)  # the model won shape
    # no source ever filled size in the evidence: the one draft that fills it here wins it, the measurement with it
    assert fields["size"] == LLM and caption["size_mm"] == 12.0
    assert caption["texture"] is None and "texture" not in fields  # filled by nobody: credited to nobody
    # model accuracy 1.0 x 0.6 beats LLM accuracy 0.0 x 0.9 for nevus; melanoma also gets the LLM's 0.0 x 0.1
    assert [d["key"] for d in diagnoses] == ["melanoma", "nevocytic nevus"] and diagnoses[0]["score"] == 0.6
    routed = route([llm, model], None)  # no evidence yet: today's order, the model first
    caption, fields = routed.caption, routed.fields
    assert fields["color"] == MODEL and caption["shape"] == ["round"]


def test_a_finished_run_has_evidence_from_its_held_out_predictions_and_verdicts_per_field(bench, admin):
    wb, ids = bench
    # run #2 finished training: the trainer predicted its export's val/test images (12 of them are verified here)
    with wb.session() as s:
        s.add(TrainingRun(id=2, preset="tiny", status="done", config={}, created_by=admin.id))
    folder = wb.settings.home / "runs" / "run-2"
    folder.mkdir(parents=True)
    rows = [
        {
            "id": i,
            "model_version": "run-2:stage2",
            "caption": {"color": ["brown"], "shape": ["round"]},
            "diagnoses": [{"key": "melanoma", "score": 0.9}],
        }
        for i in ids[:12]
    ]
    (folder / "held_out_predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = compute_evidence(wb, min_evidence=20)
    run2 = next(e for e in report.sources if e.source == "model:skinflow:run-2:stage2")
    assert run2.measures["color"].n == 12 and run2.measures["color"].mean == 1.0
    assert {v.verdict for v in report.run_verdicts(2)} == {"not enough evidence"}  # 12 items, 20 needed
    verdicts = {v.measure: v for v in report.run_verdicts(1)}  # run #1: its suggestions on 20 held-out images
    assert (verdicts["shape"].verdict, verdicts["shape"].best_other) == ("beats", LLM)
    assert (verdicts["color"].verdict, verdicts["color"].best_other) == ("below", LLM)
    assert verdicts["diagnosis_top1"].verdict == "beats"
    lenient = {v.measure: v for v in compute_evidence(wb, min_evidence=10).run_verdicts(2)}
    # as good as the chosen source on the 12 items both have: a tie does not replace it
    assert (lenient["color"].verdict, lenient["color"].best_other, lenient["color"].p_better) == ("no clear difference", LLM, 0.5)
    # run #1 is as good (1.0) on shape and the diagnosis, and it shares only 2 items with run #2: compared each on
    # its own items, 12 of 12 against 20 of 20 is no clear difference either
    assert (lenient["shape"].verdict, lenient["shape"].best_other) == ("no clear difference", MODEL)
    assert lenient["diagnosis_top1"].verdict == "no clear difference"
    doc = report.to_json()
    assert doc["runs"]["1"]["shape"]["verdict"] == "beats" and set(doc["runs"]) == {"1", "2"}
    assert doc["measures"]["shape"]["decision"][0] | {"p_better": None} == {
        "challenger": MODEL,
        "incumbent": LLM,
        "paired": True,
        "n": 20,
        "difference": round(20 / 22, 6),  # 20 items won by 1, and the pseudo-pair
        "p_better": None,
        "switched": True,
    }


def test_the_train_page_says_which_fields_activating_a_run_fills(bench, admin, monkeypatch):
    import streamlit as st

    from tests.test_app_pages import page

    wb, _ = bench
    monkeypatch.setenv("SKINFLOW_HOME", str(wb.settings.home))
    monkeypatch.delenv("SKINFLOW_DATABASE_URL", raising=False)
    st.cache_resource.clear()
    try:
        at = page(wb, "train", "admin")
        assert not at.exception, at.exception
        assert any(m.value.startswith("**Activating it fills:** shape") for m in at.markdown)
        table = at.dataframe[-1].value
        assert dict(zip(table["measure"], table["verdict"], strict=True))["color"] == "below"
    finally:
        st.cache_resource.clear()


def test_routed_drafts_are_not_a_source_of_their_own(bench, admin):
    wb, ids = bench
    add_draft(wb, admin, ids[-1], kind="routed", producer="router", version="evidence-x", caption={"color": ["brown"]})
    assert {e.source for e in compute_evidence(wb).sources} == {LLM, MODEL}  # it is made from them


def test_a_small_perfect_sample_does_not_replace_a_large_nearly_perfect_one():
    """The benchmark rerun's case: the tiny VLM right on 21 of 21 held-out items, the draft on 130 of 141."""
    from curation.assist.choice import choose, compare

    draft = {i: float(i >= 11) for i in range(141)}  # 130 of 141
    tiny = {1000 + i: 1.0 for i in range(21)}  # 21 of 21, no item in common with the draft
    chosen, steps = choose({"draft": draft, "tiny": tiny}, min_evidence=20)
    assert chosen == "draft" and len(steps) == 1 and not steps[0].switched and not steps[0].paired
    assert 0.75 < steps[0].p_better < 0.85  # better, more likely than not; not nearly sure enough
    # the same 21 of 21 on images the draft also drafted, where the draft got 10 of 21: that is evidence
    overlap = {i: 1.0 for i in range(21)}
    chosen, steps = choose({"draft": draft, "tiny": overlap}, min_evidence=20)
    assert chosen == "tiny" and steps[0].switched and steps[0].paired and steps[0].n == 21
    # one-sided small samples never win on luck alone: the pseudo-items keep the spread above zero
    assert compare("a", {i: 1.0 for i in range(20)}, "b", {i: 1.0 for i in range(20)}, 20).p_better == 0.5


def test_between_equally_good_sources_the_choice_moves_in_at_most_one_case_in_two_hundred():
    """What 'cannot lose by chance' means: two sources of the same quality (each item right with p = 0.7, on the
    same items) draw 400 times; the one with more evidence is kept in all but about 0.45% of draws (one test per
    caption field at 1 - 0.05/11; 1 of 400 here), while a source really better (0.9) on 120 shared items replaces
    it in most draws (364 of 400)."""
    import numpy as np

    from curation.assist.choice import choose

    rng = np.random.default_rng(0)

    def draw(p: float, n: int) -> dict[int, float]:
        return {i: float(x) for i, x in enumerate(rng.random(n) < p)}

    moved = sum(choose({"old": draw(0.7, 200), "new": draw(0.7, 120)}, 20)[0] == "new" for _ in range(400))
    better = sum(choose({"old": draw(0.7, 200), "new": draw(0.9, 120)}, 20)[0] == "new" for _ in range(400))
    assert moved <= 6 and better >= 340, (moved, better)


def test_a_run_trained_outside_the_app_on_this_workbenchs_export_counts_once_registered(bench, admin, tmp_path):
    """`skinflow suggest --checkpoint FOLDER` registers a `skinflow train` run (tests/test_probe.py runs the real
    commands): its held-out predictions count at once, its training images left out, under its own name."""
    from curation.ops.run_folders import register_run
    from curation.ops.runs import run_dir
    from curation.store.models import Export

    wb, ids = bench
    export = tmp_path / "export"
    with wb.session() as s:
        s.add(Export(path=str(export.resolve()), format="grpo", n_records=30, manifest_sha256="0" * 64))
    folder = tmp_path / "elsewhere" / "cli-run"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"export": str(export), "run_id": "cli-run", "preset": "probe"}))
    (folder / "progress.json").write_text(json.dumps({"status": "running"}))
    assert register_run(wb, admin, folder / "checkpoint-2") is None  # not finished: a checkpoint on the way
    (folder / "progress.json").write_text(json.dumps({"status": "done"}))
    rows = [  # its predictions on every image, the 10 it trained on (bench: export train split) included
        {
            "id": i,
            "model_version": "cli-run:probe",
            "caption": {"color": ["brown"]},
            "diagnoses": [{"key": "melanoma", "score": 0.9}],
        }
        for i in ids
    ]
    (folder / "held_out_predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = {e.source for e in compute_evidence(wb, min_evidence=20).sources}
    assert "model:skinflow:cli-run:probe" not in before  # not in the registry: its folder is never read

    run_id = register_run(wb, admin, folder / "model")
    assert run_id == 2 and run_dir(wb, run_id).resolve() == folder.resolve()
    assert register_run(wb, admin, folder) == run_id  # once only
    report = compute_evidence(wb, min_evidence=20)
    mine = next(e for e in report.sources if e.source == "model:skinflow:cli-run:probe")
    assert mine.measures["color"].n == 20 and f"run #{run_id}" in mine.held_out  # its 10 training images left out
    assert run_id in report.run_ids() and report.run_verdicts(run_id)[0].measure == "color"

    other = tmp_path / "other-run"  # trained on an export this workbench never wrote: an outside model
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"export": str(tmp_path / "theirs"), "run_id": "x"}))
    (other / "progress.json").write_text(json.dumps({"status": "done"}))
    assert register_run(wb, admin, other) is None
    assert register_run(wb, admin, tmp_path) is None  # a bare model folder: nothing says what it learned from
    assert register_run(wb, admin, run_dir(wb, 1) / "model") == 1  # a run the app started, config files or not


def test_the_chosen_source_saying_nothing_on_a_field_is_its_answer(bench):
    """The LLM won color; on this image it leaves color empty: the field stays empty rather than taking the model's
    term (a benchmark measured texture going from 0.31 to 0.56 edits that way)."""
    from curation.assist.routing import route
    from curation.store.models import Draft

    wb, _ = bench
    report = compute_evidence(wb, min_evidence=20)
    llm = Draft(id=2, kind="llm", producer="vision-model", version="caption-v1+schema1", caption={"color": [], "shape": ["oval"]})
    model = Draft(id=3, kind="model", producer="skinflow", version="run-1:stage2", caption={"color": ["red"]})
    routed = route([llm, model], report)
    caption, fields = routed.caption, routed.fields
    assert caption["color"] is None and "color" not in fields
    # the model won shape but says nothing about it here: empty too, not the LLM's "oval"
    assert caption["shape"] is None and "shape" not in fields
    # a source the evidence chose that did not draft this image leaves the field to today's order
    routed = route([llm], report)
    caption, fields = routed.caption, routed.fields
    assert caption["shape"] == ["oval"] and fields["shape"] == LLM


def test_each_field_starts_from_the_best_single_source_and_leaves_it_only_on_strong_evidence():
    """Routing must never lose to the source a team would use alone: two LLMs draft the same 100 images; A is
    better overall, B slightly (not surely) better on texture, clearly better on distribution."""
    from curation.assist.choice import best_single_source, choose
    from schema.fields import FIELD_KEYS

    def scores(share_right: float, offset: int = 0) -> dict[int, float]:
        return {i: float((i + offset) % 100 < share_right * 100) for i in range(100)}

    a = {k: scores(0.8) for k in FIELD_KEYS}
    b = {k: scores(0.6, offset=7) for k in FIELD_KEYS}
    a["texture"], b["texture"] = scores(0.70), scores(0.74, offset=40)  # +0.04 on 100 shared items
    a["distribution"], b["distribution"] = scores(0.5), scores(0.9, offset=50)
    best = best_single_source({"A": a, "B": b}, min_evidence=20)
    assert best == "A"
    texture, steps = choose({"A": a["texture"], "B": b["texture"]}, 20, prefer=best)
    assert texture == "A" and 0.5 < steps[0].p_better < 0.95  # B looks better, not surely: A stays
    assert choose({"A": a["texture"], "B": b["texture"]}, 20)[0] == "B"  # without the preference, the tie went to B
    distribution, steps = choose({"A": a["distribution"], "B": b["distribution"]}, 20, prefer=best)
    assert distribution == "B" and steps[0].switched and steps[0].p_better > 0.99


def test_a_source_without_evidence_cannot_reorder_the_diagnoses_of_the_source_that_earned_them(bench):
    from curation.assist.routing import route
    from curation.store.models import Draft

    wb, _ = bench
    report = compute_evidence(wb, min_evidence=20)
    assert report.chosen["diagnosis_top1"] == MODEL  # run #1's model: right on its 20 held-out images
    proven = Draft(
        id=3, kind="model", producer="skinflow", version="run-1:stage2", caption={}, diagnoses=[{"key": "melanoma", "score": 0.3}]
    )
    unknown = Draft(
        id=4, kind="llm", producer="new-vlm", version="v0", caption={}, diagnoses=[{"key": "nevocytic nevus", "score": 0.9}]
    )
    diagnoses = route([proven, unknown], report).diagnoses
    assert [d["key"] for d in diagnoses] == ["melanoma", "nevocytic nevus"]  # at weight 0.5 the unknown's 0.45 led
    diagnoses = route([proven, unknown], None).diagnoses  # no evidence at all: every source counts half
    assert [d["key"] for d in diagnoses] == ["nevocytic nevus", "melanoma"]
