"""Train (admin): "Retrain from curated data", the run's live progress and curves, the runs registry,
comparing two runs, and activating a model (its suggestions then fill the labelling queue)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from app.ui import state
from curation.runs import PRESETS, activate_run, cancel_run, list_runs, log_tail, read_metrics, resume_run, start_training
from schema.errors import SkinflowError


def _curves(metrics: list[dict]) -> None:
    frame = pd.DataFrame(metrics)
    if frame.empty:
        st.caption("No metrics logged yet.")
        return
    keys = [k for k in frame.columns if k.startswith("reward/") and k.endswith("/mean")] + \
        [k for k in ("loss", "kl") if k in frame.columns]
    long = frame.melt(id_vars=["stage", "step"], value_vars=keys, var_name="measure").dropna()
    chart = alt.Chart(long).mark_line(point=True).encode(x="step:Q", y="value:Q", color="stage:N").properties(height=140)
    st.altair_chart(chart.facet(facet="measure:N", columns=3).resolve_scale(y="independent"))


def _run_details(wb, actor, run_id: int) -> None:
    run = next(r for r in list_runs(wb) if r.id == run_id)
    progress = run.progress
    if run.status == "running":
        stages = progress.get("stages") or [0, 1, 2]
        index, step, total = progress.get("stage_index", 0), progress.get("step", 0), max(progress.get("max_steps") or 1, 1)
        st.progress(min(1.0, (index + step / total) / len(stages)),
                    text=f"{progress.get('stage_name', 'starting')}: step {step} of {total}")
        if st.button("Cancel run"):
            try:
                cancel_run(wb, actor, run.id)
            except SkinflowError as e:
                state.show_error(e)
            else:
                st.info("Cancelling: the run stops at its next step and keeps its last checkpoint.")
    elif run.status == "queued":
        st.info("Queued: it starts when the running one finishes.")
    if run.error:
        st.error(run.error)
    if run.status in ("failed", "cancelled") and st.button(f"Resume run #{run.id} from its last checkpoint"):
        try:
            resume_run(wb, actor, run.id)
        except SkinflowError as e:
            state.show_error(e)
        else:
            st.success(f"Run #{run.id} queued again.")
    _curves(read_metrics(wb, run.id))
    with st.expander("Log (last lines)"):
        st.code(log_tail(wb, run.id) or "(empty)", language=None)
    if run.status == "done" and not run.active and st.button(f"Activate run #{run.id}: suggest for the queue"):
        try:
            activate_run(wb, actor, run.id)
        except SkinflowError as e:
            state.show_error(e)
        else:
            st.success(f"Run #{run.id} is active; its suggestions are being computed for every image that needs work.")


def render() -> None:
    actor = state.require_role("admin", "The train page")
    wb = state.workbench()
    st.title("Train")
    st.caption("Retraining takes a fresh export of the verified data (training never reads the live database) and runs "
               "`skinflow train` in the background: closing the browser does not stop it.")
    with st.form("retrain"):
        preset = st.selectbox("Preset", PRESETS, help="tiny: CPU, minutes. qwen2.5-vl-7b: GPUs and pretrained weights.")
        epochs = st.number_input("Warm-start (SFT) epochs (0: the preset's)", min_value=0, max_value=1000, value=0)
        steps = st.number_input("GRPO steps per stage (0: the preset's)", min_value=0, max_value=100_000, value=0)
        if st.form_submit_button("Retrain from curated data"):
            overrides = {"stage1_steps": int(steps), "stage2_steps": int(steps)} if steps else {}
            if epochs:
                overrides["sft_epochs"] = int(epochs)
            try:
                run_id = start_training(wb, actor, preset=preset, overrides=overrides)
            except SkinflowError as e:
                state.show_error(e)
            else:
                st.success(f"Run #{run_id} queued.")
    runs = list_runs(wb)
    if not runs:
        st.info("No training runs yet.")
        return
    st.subheader("Runs")
    st.dataframe(pd.DataFrame([{"run": r.id, "status": r.status, "active": r.active, "preset": r.preset, "by": r.created_by,
                                "started": r.created_at, "finished": r.finished_at, "export": r.export_path, "error": r.error}
                               for r in runs]), hide_index=True, width="stretch")
    chosen = st.selectbox("Run", [r.id for r in runs], format_func=lambda i: next(f"#{r.id} {r.status}" for r in runs if r.id == i))
    if next(r for r in runs if r.id == chosen).status in ("queued", "running"):
        st.fragment(_run_details, run_every="3s")(wb, actor, chosen)  # polls progress.json while it runs
    else:
        _run_details(wb, actor, chosen)
    finished = [r for r in runs if r.metrics]
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
