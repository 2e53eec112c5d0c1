"""Retraining from the workbench: a detached `skinflow train` process per run, its row kept in step
with reality (done, failed when killed, cancelled), and activation filling the queue with suggestions."""

import os
import signal
import time

import pytest
from sqlalchemy import func, select

from curation.ops.demo import build_demo
from curation.ops.run_folders import read_metrics
from curation.ops.runs import (
    AblationRequest,
    RunError,
    activate_run,
    cancel_run,
    list_runs,
    refresh_runs,
    resume_run,
    run_dir,
    runs_dir,
    start_training,
)
from curation.store.models import Draft, Image, TrainingRun
from curation.store.workflow import get_workflow_settings

FAST = {"sft_epochs": 1, "stage1_steps": 2, "stage2_steps": 2, "num_generations": 2, "batch_size": 4}


@pytest.fixture
def curated(wb, admin):
    build_demo(wb, admin, n=20, seed=0, verified_fraction=0.6, annotated_fraction=0.1)
    yield wb
    # detached runs outlive a failed test: stop them, or they slow down every test after this one
    from curation.store.models import TrainingRun

    with wb.session() as s:
        pids = [pid for (pid,) in s.execute(select(TrainingRun.pid).where(TrainingRun.pid.is_not(None)))]
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def wait_for(wb, run_id, statuses, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        refresh_runs(wb)
        run = next(r for r in list_runs(wb) if r.id == run_id)
        if run.status in statuses:
            return run
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} still {run.status}; log:\n" + "\n".join(open(run.log_path).read().splitlines()[-30:]))


def queue_and_suggested(wb, version: str) -> tuple[int, int]:
    """(images that need work, images with a model suggestion of this version)."""
    with wb.session() as s:
        needing = s.scalar(select(func.count()).select_from(Image).where(Image.status.in_(("pending", "annotated"))))
        suggested = s.scalar(
            select(func.count(func.distinct(Draft.image_id))).where(Draft.kind == "model", Draft.version == version)
        )
    return needing, suggested


@pytest.mark.slow  # real training processes: tens of seconds each (make test-slow, .ci/run)
def test_retrain_runs_in_the_background_and_activation_fills_the_queue(curated, admin, decoys):
    decoys.plant(runs_dir(curated))  # started among decoy packages, run among them: never imported (issue 31)
    run_id = start_training(curated, admin, overrides=FAST)
    run = next(r for r in list_runs(curated) if r.id == run_id)
    assert run.status == "running" and run.export_path and os.path.isdir(run.export_path)
    with pytest.raises(RunError, match="only a finished run"):
        activate_run(curated, admin, run_id)
    second = start_training(curated, admin, overrides=FAST)  # one slot: the second one waits
    assert next(r for r in list_runs(curated) if r.id == second).status == "queued"
    assert cancel_run(curated, admin, second) == "cancelled"
    run = wait_for(curated, run_id, {"done", "failed"})
    assert run.status == "done", run.error
    assert {"stage0", "stage1", "stage2"} <= set(run.metrics) and "reward/diagnosis_reward/mean" in run.metrics["stage2"]
    assert os.path.isfile(os.path.join(run.checkpoint_path, "config.json"))
    assert {row["stage"] for row in read_metrics(curated, run_id)} == {0, 1, 2}

    pid = activate_run(curated, admin, run_id)
    assert get_workflow_settings(curated).active_run_id == run_id
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.5)
    needing, suggested = queue_and_suggested(curated, f"run-{run_id}:stage2")
    log = (run_dir(curated, run_id).parent / f"run-{run_id}-suggest.log").read_text()
    assert needing > 0 and suggested == needing, log
    assert decoys.imported() == []

    # the queue follows each strategy over the scores the suggestions produced
    from curation.labelling.queue import next_item
    from curation.store.auth import add_user
    from curation.store.models import QueueScore
    from curation.store.workflow import update_workflow_settings

    update_workflow_settings(curated, admin, gold_rate=0.0)
    with curated.session() as s:
        pending = {i for (i,) in s.execute(select(Image.id).where(Image.status == "pending"))}
        scores = {q.image_id: q for q in s.scalars(select(QueueScore))}
    for strategy in ("uncertainty", "disagreement"):
        scored = sorted(
            (i for i in pending if getattr(scores[i], strategy) is not None), key=lambda i: (-getattr(scores[i], strategy), i)
        )
        expected = (scored + sorted(pending - set(scored)))[:3]  # unscored ones (no parseable caption) follow by id
        people = [add_user(curated, admin, f"{strategy}{k}", "annotator")[0] for k in range(3)]
        served = [next_item(curated, person, strategy=strategy).image_id for person in people]
        assert served == expected, strategy
        from curation.labelling.queue import release

        with curated.session() as s:  # hand the leases back for the next strategy
            for person, image_id in zip(people, served, strict=True):
                release(s, person.id, image_id)

    # and the annotate page shows the suggestion as a prefill source with its diagnoses as choices
    import streamlit as st

    from tests.test_app_pages import page

    st.cache_resource.clear()
    os.environ["SKINFLOW_HOME"] = str(curated.settings.home)
    try:
        viewer = add_user(curated, admin, "viewer", "annotator")[0]
        at = page(curated, "annotate", viewer.username)
        image_id = at.session_state["annotate_item"]["image_id"]
        with curated.session() as s:
            model = s.scalars(select(Draft).where(Draft.image_id == image_id, Draft.kind == "model")).one()
        choices = [b for b in at.button_group if b.label.startswith("Suggested diagnoses")]
        from app.ui.widgets import taxonomy_label

        shown = choices[0].options if choices else []  # the suggestion's top-6, one click each, rank and chance shown
        expected = [
            f"{rank} · {taxonomy_label(curated.taxonomy, d['key'])} · {float(d['score']):.0%}"
            for rank, d in enumerate(model.diagnoses[:6], start=1)
        ]
        assert expected == list(shown[:6]), shown
        if model.caption is not None:  # a readable suggested caption is also a prefill source
            assert any(str(o).startswith("model: skinflow run-") for o in at.selectbox(key=f"src-{image_id}").options)
    finally:
        os.environ.pop("SKINFLOW_HOME", None)
        st.cache_resource.clear()


def _alive(pid):
    from curation.ops.jobs import _children

    child = _children.get(pid)
    return child is not None and child.poll() is None


@pytest.mark.slow  # real training processes: tens of seconds each (make test-slow, .ci/run)
def test_a_killed_training_process_is_marked_failed_with_the_reason(curated, admin):
    from trainer.train import complete_checkpoints

    run_id = start_training(curated, admin, overrides={**FAST, "sft_epochs": 500, "save_steps": 5})
    run = next(r for r in list_runs(curated) if r.id == run_id)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run_dir(curated, run_id) / "progress.json").exists():
        time.sleep(0.3)
    while time.monotonic() < deadline and not complete_checkpoints(run_dir(curated, run_id) / "stage0"):
        time.sleep(0.3)  # killed after its first whole checkpoint, so the resume has something to resume from
    os.killpg(run_pid(curated, run_id), signal.SIGKILL)
    run = wait_for(curated, run_id, {"failed", "done", "cancelled"}, timeout=30)
    assert run.status == "failed" and "ended without finishing" in run.error

    # resumed: it continues from the last whole checkpoint instead of starting over (a half-written
    # newer one, if the kill landed mid-save, is skipped)
    checkpoint_step = int(complete_checkpoints(run_dir(curated, run_id) / "stage0")[-1].name.split("-")[-1])
    logged = len(read_metrics(curated, run_id))
    resume_run(curated, admin, run_id)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(read_metrics(curated, run_id)) <= logged:
        time.sleep(0.3)
    resumed = read_metrics(curated, run_id)[logged:]
    assert resumed and min(r["step"] for r in resumed) > checkpoint_step
    cancel_run(curated, admin, run_id)
    assert wait_for(curated, run_id, {"cancelled", "failed", "done"}, timeout=90).status == "cancelled"


def run_pid(wb, run_id):
    from curation.store.models import TrainingRun

    with wb.session() as s:
        return s.get(TrainingRun, run_id).pid


@pytest.mark.slow  # real training processes: tens of seconds each (make test-slow, .ci/run)
def test_cancel_stops_at_a_step_and_keeps_a_checkpoint(curated, admin):
    run_id = start_training(curated, admin, overrides={**FAST, "sft_epochs": 500})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not read_metrics(curated, run_id):
        time.sleep(0.3)
    assert cancel_run(curated, admin, run_id) == "running"  # asked; it stops at its next step
    run = wait_for(curated, run_id, {"cancelled", "failed", "done"}, timeout=60)
    assert run.status == "cancelled", run.error
    assert list((run_dir(curated, run_id) / "stage0").glob("checkpoint-*"))
    with pytest.raises(RunError, match="only queued or running"):
        cancel_run(curated, admin, run_id)


def test_bad_requests_are_refused(curated, admin, annotator):
    with pytest.raises(RunError, match="unknown preset"):
        start_training(curated, admin, preset="huge")
    with pytest.raises(RunError, match="unknown training setting"):
        start_training(curated, admin, overrides={"learning_rate": 1})
    with pytest.raises(Exception, match="admin"):
        start_training(curated, annotator)
    with pytest.raises(RunError, match="two or more"):
        start_training(curated, admin, ablation=AblationRequest(variants=("full",)))
    with pytest.raises(RunError, match="two or more"):
        start_training(curated, admin, ablation=AblationRequest(variants=("full", "wider")))
    with pytest.raises(RunError, match="seeds must be"):
        start_training(curated, admin, ablation=AblationRequest(seeds=0))
    with pytest.raises(RunError, match="sets seeds and stages"):
        start_training(curated, admin, overrides={"seed": 3}, ablation=AblationRequest())
    with pytest.raises(RunError, match="no FDLinear layers or GRPO stages to ablate"):
        start_training(curated, admin, preset="probe", ablation=AblationRequest())
    assert list_runs(curated) == []


def test_an_ablation_on_an_export_without_records_in_its_split_is_refused(curated, admin):
    curated.settings = curated.settings.model_copy(update={"split_fractions": (0.9, 0.1, 0.0)})  # no test split asked
    with pytest.raises(RunError, match="no verified 'test' records"):
        start_training(curated, admin, ablation=AblationRequest(variants=("full", "baseline"), seeds=1, split="test"))
    assert list_runs(curated) == []


def train_page(wb, monkeypatch):
    import streamlit as st

    from curation.store.auth import get_actor
    from tests.test_app_pages import page

    monkeypatch.setenv("SKINFLOW_HOME", str(wb.settings.home))
    st.cache_resource.clear()
    return page(wb, "train", "admin"), get_actor


def test_train_page_before_any_run(curated, admin, monkeypatch):
    at, _ = train_page(curated, monkeypatch)
    assert not at.exception and [t.value for t in at.title] == ["Train"]
    assert any("No training runs yet" in i.value for i in at.info)
    assert any(b.label == "Retrain from curated data" for b in at.button)


@pytest.mark.slow
def test_a_run_started_from_the_page_outlives_the_page_session(curated, admin, monkeypatch):
    at, _ = train_page(curated, monkeypatch)
    at.number_input[0].set_value(2)  # SFT epochs
    at.number_input[1].set_value(2)  # GRPO steps per stage
    [b for b in at.button if b.label == "Retrain from curated data"][0].click().run()
    assert not at.exception and any("queued" in m.value for m in at.success), [e.value for e in at.error]
    run = list_runs(curated)[0]
    del at  # the browser session ends; the detached process does not
    assert run.status == "running" and os.path.exists(f"/proc/{run_pid(curated, run.id)}")
    run = wait_for(curated, run.id, {"done", "failed"})
    assert run.status == "done", run.error
    at, _ = train_page(curated, monkeypatch)
    assert not at.exception and any(b.label == f"Activate run #{run.id}: suggest for the queue" for b in at.button)


@pytest.mark.slow
def test_an_ablation_started_from_the_train_page_shows_its_table_when_done(curated, admin, monkeypatch, decoys):
    decoys.plant(runs_dir(curated))  # started among decoy packages, run among them: never imported (issue 31)
    at, _ = train_page(curated, monkeypatch)
    at.multiselect(key=at.multiselect[0].key).set_value(["full", "baseline"])
    at.number_input(key="ablation-seeds").set_value(1)
    at.selectbox(key="ablation-split").set_value("train")
    at.number_input(key="ablation-epochs").set_value(1)
    at.number_input(key="ablation-steps").set_value(2)
    [b for b in at.button if b.label == "Start ablation"][0].click().run()
    assert not at.exception and any("Ablation #" in m.value for m in at.success), [e.value for e in at.error]
    run = list_runs(curated)[0]
    assert run.kind == "ablation" and run.status == "running" and run.checkpoint_path is None
    run = wait_for(curated, run.id, {"done", "failed"}, timeout=900)
    assert run.status == "done", run.error
    with pytest.raises(RunError, match="is an ablation"):
        activate_run(curated, admin, run.id)
    folder = run_dir(curated, run.id)
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["baseline", "full"]
    at, _ = train_page(curated, monkeypatch)
    assert not at.exception and at.selectbox[-1].value == run.id  # the newest run is the one shown
    table = [frame.value for frame in at.dataframe if "variant" in frame.value.columns]
    assert table and list(table[0]["variant"]) == ["full", "baseline"] and "Δ top1 vs full" in table[0].columns
    assert not any(b.label.startswith("Activate run") for b in at.button)
    assert decoys.imported() == []


@pytest.mark.slow  # two real processes (train, then suggest): about a minute
def test_the_probe_preset_retrains_from_the_page_and_its_activation_fills_the_queue(curated, admin, monkeypatch):
    at, _ = train_page(curated, monkeypatch)
    assert "probe" not in at.selectbox(key="ablation-preset").options  # nothing to ablate in a probe
    at.selectbox[0].set_value("probe")
    [b for b in at.button if b.label == "Retrain from curated data"][0].click().run()
    assert not at.exception and any("queued" in m.value for m in at.success), [e.value for e in at.error]
    run = wait_for(curated, list_runs(curated)[0].id, {"done", "failed"})
    assert run.status == "done" and run.preset == "probe", run.error
    assert os.path.isfile(os.path.join(run.checkpoint_path, "probe.json"))
    assert {row["stage"] for row in read_metrics(curated, run.id)} == {"probe"}
    at, _ = train_page(curated, monkeypatch)
    [b for b in at.button if b.label == f"Activate run #{run.id}: suggest for the queue"][0].click().run()
    assert not at.exception and get_workflow_settings(curated).active_run_id == run.id
    deadline, needing, suggested = time.monotonic() + 180, -1, 0
    while time.monotonic() < deadline and suggested != needing:
        time.sleep(1)
        needing, suggested = queue_and_suggested(curated, f"run-{run.id}:probe")
    log = (run_dir(curated, run.id).parent / f"run-{run.id}-suggest.log").read_text()
    assert needing > 0 and suggested == needing, log


def _process_state(pid: int) -> str | None:
    """The kernel's state letter for a pid ("Z": a zombie nobody reaped), None once it is gone."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(") ", 1)[1][:1]
    except OSError:
        return None


def test_a_finished_background_job_leaves_no_zombie_in_the_app_process(wb, admin):
    """The activation's suggest job ends (here at once: its checkpoint folder is empty) and nothing in the app polls
    it: it must still be reaped, or every activation and run leaves a zombie until the app exits."""
    from curation.store.models import TrainingRun

    with wb.session() as s:
        run = TrainingRun(preset="tiny", status="done", config={"kind": "train"})
        s.add(run)
        s.flush()
        run_id = run.id
    run_dir(wb, run_id).mkdir(parents=True)
    pid = activate_run(wb, admin, run_id)
    deadline = time.monotonic() + 120
    while _process_state(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _process_state(pid) is None, f"the suggest job {pid} is still there, state {_process_state(pid)}"
    assert "nothing to suggest" in (wb.settings.home / "runs" / f"run-{run_id}-suggest.log").read_text()  # it ran


def test_the_probe_encoder_is_chosen_by_folder_and_a_wrong_one_is_refused_at_once(curated, admin, tmp_path):
    from curation.ops.runs import _command
    from trainer.probe_encoder import build_encoder

    with pytest.raises(RunError, match="no config.json in it"):
        start_training(curated, admin, preset="probe", overrides={"model": str(tmp_path / "nowhere")})
    with curated.session() as s:
        assert s.scalars(select(TrainingRun)).all() == []  # nothing queued
    model, processor = build_encoder(32, seed=0)
    model.save_pretrained(tmp_path / "encoder")
    processor.save_pretrained(tmp_path / "encoder")
    run_id = start_training(curated, admin, preset="probe", overrides={"model": str(tmp_path / "encoder")})
    with curated.session() as s:
        command = _command(curated, s.get(TrainingRun, run_id))
    assert command[command.index("--model") + 1] == str((tmp_path / "encoder").resolve())
    assert command[command.index("--preset") + 1] == "probe"


def test_the_train_page_takes_the_encoder_folder_and_says_what_is_wrong(curated, admin, tmp_path):
    import streamlit as st

    from tests.test_app_pages import page

    st.cache_resource.clear()
    os.environ["SKINFLOW_HOME"] = str(curated.settings.home)
    try:
        at = page(curated, "train", admin.username)
        [s for s in at.selectbox if s.label == "Preset"][0].set_value("probe")
        [t for t in at.text_input if t.label.startswith("Pretrained weights folder")][0].input(str(tmp_path / "nowhere"))
        [b for b in at.button if b.label == "Retrain from curated data"][0].click().run()
        assert not at.exception and at.error and "no config\\.json in it" in at.error[0].value  # markdown-escaped
    finally:
        os.environ.pop("SKINFLOW_HOME", None)
        st.cache_resource.clear()
    with curated.session() as s:
        assert s.scalars(select(TrainingRun)).all() == []


def test_a_server_watches_starts_and_cancels_only_its_own_runs(wb, admin, tmp_path):
    """Two app servers on one database (docs/deploy.md): a run's process and folder are on the server that started
    it; another server must neither mark it failed (its pid is not alive there) nor launch its queued runs."""
    from curation.ops.runs import this_server
    from curation.store.db import open_workbench
    from curation.store.settings import Settings

    other = open_workbench(Settings.load(environ={}, home=tmp_path / "other-home", database_url=wb.settings.db_url))
    assert this_server(other) != this_server(wb)
    with wb.session() as s:
        mine = {"export_path": str(tmp_path / "export"), "server": this_server(wb)}
        running = TrainingRun(preset="tiny", status="running", pid=2**22 + 1, config=mine)  # no such process
        queued = TrainingRun(preset="tiny", status="queued", config=mine)
        s.add_all([running, queued])
        s.flush()
        running_id, queued_id = running.id, queued.id

    refresh_runs(other)
    with wb.session() as s:
        assert (s.get(TrainingRun, running_id).status, s.get(TrainingRun, queued_id).status) == ("running", "queued")
    with pytest.raises(RunError, match=f"belongs to the server {this_server(wb)}"):
        cancel_run(other, admin, queued_id)
    assert {r.id: r.elsewhere for r in list_runs(other)}[running_id] == this_server(wb)

    cancel_run(wb, admin, queued_id)  # its own server may
    refresh_runs(wb)  # and sees its run's process gone
    with wb.session() as s:
        assert (s.get(TrainingRun, running_id).status, s.get(TrainingRun, queued_id).status) == ("failed", "cancelled")
    other.close()
