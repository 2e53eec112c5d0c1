"""Train (admin): "Retrain from curated data", the run's live progress and curves, the runs registry,
comparing two runs, activating a model (its suggestions then fill the labelling queue), and ablations
(the recipe with FDLinear and/or stage I removed, one report)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from app.ui import state
from app.ui.widgets import plain
from curation.assist.evidence import source_evidence
from curation.export.splits import SPLITS
from curation.ops.run_folders import ablation_report, read_metrics
from curation.ops.runs import (
    ABLATION_VARIANTS,
    NO_ABLATION_PRESETS,
    PRESETS,
    AblationRequest,
    activate_run,
    budget_overrides,
    cancel_run,
    list_runs,
    log_tail,
    resume_run,
    start_training,
)
from curation.store.models import UNFINISHED_RUN_STATUSES
from schema.errors import SkinflowError
from schema.run_files import RunProgress


def _curves(metrics: list[dict]) -> None:
    frame = pd.DataFrame(metrics)
    if frame.empty:
        st.caption("No metrics logged yet.")
        return
    keys = [k for k in frame.columns if k.startswith("reward/") and k.endswith("/mean")] + [
        k for k in ("loss", "kl") if k in frame.columns
    ]
    long = frame.melt(id_vars=["stage", "step"], value_vars=keys, var_name="measure").dropna()
    chart = alt.Chart(long).mark_line(point=True).encode(x="step:Q", y="value:Q", color="stage:N").properties(height=140)
    st.altair_chart(chart.facet(facet="measure:N", columns=3).resolve_scale(y="independent"))


def _live_progress(wb, actor, run) -> None:
    ablation = run.kind == "ablation"
    progress = run.progress or RunProgress(status="running")
    st.progress(progress.fraction(ablation), text=progress.describe(ablation))
    if ablation:
        stopping = "the current variant stops at its next step; resuming skips the finished ones."
    else:
        stopping = "the run stops at its next step and keeps its last checkpoint."
    if st.button("Cancel ablation" if run.kind == "ablation" else "Cancel run"):
        try:
            cancel_run(wb, actor, run.id)
        except SkinflowError as e:
            state.show_error(e)
        else:
            st.info(f"Cancelling: {stopping}")


def _run_details(wb, actor, run_id: int, polling: bool = False) -> None:
    run = next(r for r in list_runs(wb) if r.id == run_id)
    if run.elsewhere:  # several app servers share the database: the run's process and folder are on its own
        st.info(f"Run #{run.id} ({run.status}) belongs to the server {run.elsewhere}: open the app there to follow it.")
        return
    if polling and run.status not in UNFINISHED_RUN_STATUSES:
        st.rerun()  # it finished: the whole page again, so the Runs table above stops saying "running"
    if run.status == "running":
        _live_progress(wb, actor, run)
    elif run.status == "queued":
        st.info("Queued: it starts when the running one finishes.")
    if run.error:
        st.error(plain(run.error))  # the end of the run's log
    if run.status in ("failed", "cancelled") and st.button(f"Resume run #{run.id} from its last checkpoint"):
        try:
            resume_run(wb, actor, run.id)
        except SkinflowError as e:
            state.show_error(e)
        else:
            st.success(f"Run #{run.id} queued again.")
    if run.kind == "ablation":
        _ablation_table(wb, run.id)
    else:
        _curves(read_metrics(wb, run.id))
    with st.expander("Log (last lines)"):
        st.code(log_tail(wb, run.id) or "(empty)", language=None)
    if run.status == "done" and run.kind == "train":
        _verdicts(wb, actor, run.id)
    if (
        run.status == "done"
        and run.kind == "train"
        and not run.active
        and st.button(f"Activate run #{run.id}: suggest for the queue")
    ):
        try:
            activate_run(wb, actor, run.id)
        except SkinflowError as e:
            state.show_error(e)
        else:
            st.success(f"Run #{run.id} is active; its suggestions are being computed for every image that needs work.")


def _verdicts(wb, actor, run_id: int) -> None:
    """Per field, whether this run's model beats the best source so far on held-out images: what activating it
    changes in the Annotate form (it fills the fields it wins; the others keep their better source)."""
    verdicts = source_evidence(wb, actor).run_verdicts(run_id)
    if verdicts is None:
        st.caption("No held-out evidence for this run yet (its val/test predictions or suggestions on verified images).")
        return
    wins = [v.measure for v in verdicts if v.verdict == "beats"]
    st.markdown(f"**Activating it fills:** {', '.join(wins) or 'no field: another source is better or evidence is short'}")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "measure": v.measure,
                    "this run": v.run.mean,
                    "n": v.run.n,
                    "best other source": v.best_other,
                    "its score": v.best_other_score.mean if v.best_other_score else None,
                    "P(this run is better)": v.p_better,
                    "verdict": v.verdict,
                }
                for v in verdicts
            ]
        ),
        hide_index=True,
        width="stretch",
    )


def _ablation_table(wb, run_id: int) -> None:
    report = ablation_report(wb, run_id)
    if report is None:
        st.caption("The table appears here when every variant is trained and evaluated.")
        return
    st.markdown(
        f"**Ablation**: {len(report['seeds'])} seed(s), {report['n_items']} {report['split']} items; mean ± spread over "
        f"seeds; differences are variant − {report['reference']} with 95% bootstrap intervals."
    )
    rows = []
    for name, variant in report["variants"].items():
        row = {"variant": name, "what": variant["description"]}
        for metric in ("top1", "top6", "group9_accuracy", "malignant_miss_rate", "caption_reward"):
            stat = variant["metrics"][metric]
            row[metric] = None if stat["mean"] is None else f"{stat['mean']:.3f} ± {stat['std']:.3f}"
        vs = variant.get("vs_reference")
        if vs and vs["top1"]["difference"] is not None:
            low, high = vs["top1"]["difference_ci95"] or (None, None)
            row["Δ top1 vs full"] = f"{vs['top1']['difference']:+.3f}" + (
                f" [{low:+.3f}, {high:+.3f}]" if low is not None else ""
            )
        row["train s"] = round(variant["train_s"]["mean"] or 0)
        row["parameters"] = (variant["parameters"] or {}).get("total")
        rows.append(row)
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.image(report["chart"])
    st.caption(f"Full report: {report['markdown']}")


def _ablation_form(wb, actor) -> None:
    with st.expander("Ablation: is FDLinear / stage I worth it on our data?"):
        st.caption(
            "Trains every chosen variant with the same steps and seeds on one fresh export and evaluates each on the "
            "same split (`skinflow ablate`). With the tiny preset, about 2-3 minutes per variant and seed on a CPU."
        )
        with st.form("ablation"):
            preset = st.selectbox("Ablation preset", [p for p in PRESETS if p not in NO_ABLATION_PRESETS], key="ablation-preset")
            variants = st.multiselect("Variants", ABLATION_VARIANTS, default=list(ABLATION_VARIANTS))
            split = st.selectbox(
                "Evaluate on",
                SPLITS[::-1],
                key="ablation-split",
                help="The export split every variant is scored on (test unless it is too small).",
            )
            seeds = st.number_input("Seeds", min_value=1, max_value=10, value=3, key="ablation-seeds")
            epochs = st.number_input(
                "Warm-start (SFT) epochs (0: the preset's)", min_value=0, max_value=1000, value=0, key="ablation-epochs"
            )
            steps = st.number_input(
                "GRPO steps per stage (0: the preset's)", min_value=0, max_value=100_000, value=0, key="ablation-steps"
            )
            if st.form_submit_button("Start ablation"):
                try:
                    run_id = start_training(
                        wb,
                        actor,
                        preset=preset,
                        overrides=budget_overrides(int(epochs), int(steps)),
                        ablation=AblationRequest(seeds=int(seeds), variants=tuple(variants), split=split),
                    )
                except SkinflowError as e:
                    state.show_error(e)
                else:
                    st.success(f"Ablation #{run_id} queued.")


def render() -> None:
    actor = state.require_role("admin", "The train page")
    wb = state.workbench()
    st.title("Train")
    st.caption(
        "Retraining takes a fresh export of the verified data (training never reads the live database) and runs "
        "`skinflow train` in the background: closing the browser does not stop it."
    )
    with st.form("retrain"):
        preset = st.selectbox(
            "Preset",
            PRESETS,
            help="tiny: CPU, minutes. probe: CPU, a frozen image encoder with linear heads per field and for the "
            "diagnosis (the budget fields below do not apply to it). qwen2.5-vl-3b-lora / 7b-qlora: one 24 GB GPU; "
            "qwen2.5-vl-7b-lora: one 80 GB GPU; qwen2.5-vl-7b: several GPUs. `skinflow train --plan` says what fits.",
        )
        epochs = st.number_input("Warm-start (SFT) epochs (0: the preset's)", min_value=0, max_value=1000, value=0)
        steps = st.number_input("GRPO steps per stage (0: the preset's)", min_value=0, max_value=100_000, value=0)
        weights = st.text_input(
            "Pretrained weights folder (optional)",
            help="probe: the image encoder, a local CLIP or SigLIP checkpoint folder (empty: a small built-in encoder "
            "with random weights, for trying the workflow). Qwen presets: the model folder (empty: the preset's hub id, "
            "which needs network).",
        )
        if st.form_submit_button("Retrain from curated data"):
            overrides = budget_overrides(int(epochs), int(steps)) | ({"model": weights.strip()} if weights.strip() else {})
            try:
                run_id = start_training(wb, actor, preset=preset, overrides=overrides)
            except SkinflowError as e:
                state.show_error(e)
            else:
                st.success(f"Run #{run_id} queued.")
    _ablation_form(wb, actor)
    runs = list_runs(wb)
    if not runs:
        st.info("No training runs yet.")
        return
    st.subheader("Runs")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "run": r.id,
                    "kind": r.kind,
                    "status": r.status,
                    "active": r.active,
                    "preset": r.preset,
                    "by": r.created_by,
                    "started": r.created_at,
                    "finished": r.finished_at,
                    "export": r.export_path,
                    "error": r.error,
                }
                for r in runs
            ]
        ),
        hide_index=True,
        width="stretch",
    )
    chosen = st.selectbox(
        "Run", [r.id for r in runs], format_func=lambda i: next(f"#{r.id} {r.kind} {r.status}" for r in runs if r.id == i)
    )
    if next(r for r in runs if r.id == chosen).status in UNFINISHED_RUN_STATUSES:
        st.fragment(_run_details, run_every="3s")(wb, actor, chosen, polling=True)  # polls progress.json while it runs
    else:
        _run_details(wb, actor, chosen)
    finished = [r for r in runs if r.metrics and r.kind == "train"]
    if len(finished) >= 2:
        st.subheader("Compare two runs")
        left, right = st.columns(2)
        a = left.selectbox("First", [r.id for r in finished], key="cmp-a")
        b = right.selectbox("Second", [r.id for r in finished], index=1, key="cmp-b")
        rows = []
        for run_id in (a, b):
            metrics = next(r.metrics for r in finished if r.id == run_id)
            for stage, values in metrics.items():
                for key, value in values.items():
                    if key.startswith("reward/") or key in ("loss", "kl", "train_loss"):
                        rows.append({"run": f"#{run_id}", "stage": stage, "measure": key, "value": value})
        if rows:
            table = pd.DataFrame(rows).pivot_table(index=["stage", "measure"], columns="run", values="value")
            st.dataframe(table, width="stretch")
