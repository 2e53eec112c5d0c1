"""Commands of the trainer: train, ablate, predict, suggest (model drafts back into labelling), eval."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from app.cli.common import app, context, out
from schema.errors import SkinflowError
from trainer.config import ABLATION_VARIANTS, PRESET_NOTES

PRESET_HELP = "; ".join(f"{name}: {note}" for name, note in PRESET_NOTES.items()) + "."


@app.command()
def train(
    export_dir: str | None = typer.Option(
        None, "--export", help="An export folder written with --format grpo, or its s3://bucket/folder address."
    ),
    preset: str | None = typer.Option(None, help=PRESET_HELP),
    plan: bool = typer.Option(
        False, "--plan", help="Only estimate GPU memory per part for the preset (nothing loads) and name the largest that fits."
    ),
    gpu_memory_gb: float | None = typer.Option(None, help="With --plan: the GPU size to plan for (default: this machine's)."),
    gpus: int | None = typer.Option(None, min=1, help="With --plan: how many GPUs (default: this machine's, or 1)."),
    ignore_plan: bool = typer.Option(False, help="Start even if the memory estimate exceeds the GPU."),
    config_file: Path | None = typer.Option(None, "--config", help="A TOML file with TrainConfig settings; flags override it."),
    stages: str | None = typer.Option(None, help="Comma-separated stages: 0 SFT warm start, 1 caption GRPO, 2 diagnosis GRPO."),
    model: str | None = typer.Option(
        None,
        help="Pretrained weights (local folder or hub id): the 7B preset's model, or the probe's CLIP/SigLIP image encoder.",
    ),
    output_dir: str | None = typer.Option(None, "--runs", help="Where run folders go (default: runs)."),
    run_id: str | None = typer.Option(None, help="Name of the run folder (default: time + random)."),
    resume: bool = typer.Option(False, help="Continue the run --run-id from its last checkpoint."),
    seed: int | None = typer.Option(None),
    sft_epochs: float | None = typer.Option(None, help="Stage 0 epochs."),
    stage1_steps: int | None = typer.Option(None, help="Stage 1 GRPO steps."),
    stage2_steps: int | None = typer.Option(None, help="Stage 2 GRPO steps."),
    num_generations: int | None = typer.Option(None, help="Completions per prompt (GRPO group size)."),
    batch_size: int | None = typer.Option(None, help="Completions per step (a multiple of --num-generations)."),
    save_steps: int | None = typer.Option(None, help="Checkpoint every this many steps (what --resume restarts from)."),
    no_fdlinear: bool = typer.Option(False, help="Plain linears in the vision tower (ablation)."),
    use_vllm: bool = typer.Option(False, help="Generate with vLLM (GPU machines with vllm installed; needs --no-fdlinear)."),
    lora: bool = typer.Option(
        False, help="LoRA on the language model, FDLinear layers trained whole; each stage's final/ is the merged model."
    ),
) -> None:
    """Train on an export: SFT warm start, GRPO stage I (caption reward), stage II (top-K diagnosis reward); or,
    with --preset probe, linear heads on a frozen image encoder (seconds to minutes on a CPU)."""
    from trainer.config import TrainConfig

    if gpu_memory_gb is not None and not (math.isfinite(gpu_memory_gb) and 0 < gpu_memory_gb <= 10_000):
        raise SkinflowError(f"--gpu-memory-gb {gpu_memory_gb} is not a GPU's size: give the GB of one GPU, e.g. 80")
    overrides = {
        # absolute: the trainer reads it again later from elsewhere (a relative one failed after 44 s of training)
        "export": _export_address(export_dir) if export_dir else None,
        "model": model,
        "output_dir": output_dir,
        "run_id": run_id,
        "seed": seed,
        "sft_epochs": sft_epochs,
        "stage1_steps": stage1_steps,
        "stage2_steps": stage2_steps,
        "num_generations": num_generations,
        "batch_size": batch_size,
        "save_steps": save_steps,
        "stages": tuple(int(s) for s in stages.split(",") if s.strip()) if stages else None,
        "fdlinear": False if no_fdlinear else None,
        "use_vllm": True if use_vllm else None,
        "lora": True if lora else None,
        "check_memory": False if ignore_plan else None,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if config_file is not None:
        config = TrainConfig.from_toml(config_file, **({"preset": preset} if preset else {}), **overrides)
    else:
        config = TrainConfig.for_preset(preset or "tiny", **overrides)
    if plan:
        _print_plan(config, gpu_memory_gb, gpus)
        return
    if export_dir is None:
        raise SkinflowError("give --export FOLDER (an export written with --format grpo), or --plan to only estimate memory")
    from trainer.train import train as run_training

    run_dir = run_training(config, resume=resume)
    out.print(f"run {config.run_id} done: model in {run_dir / 'model'}; metrics in {run_dir / 'metrics.jsonl'}")


def _export_address(given: str) -> str:
    """An s3:// export as given; a folder absolute, since the trainer reads it again later from elsewhere."""
    return given if given.startswith("s3://") else str(Path(given).resolve())


def _print_plan(config, memory_gb: float | None, gpus: int | None) -> None:
    from trainer.plan import describe, estimate, gpu_memory

    if config.use_cpu:
        out.print(f"{config.preset} trains on the CPU: no GPU memory to plan")
        return
    found = gpu_memory()
    if memory_gb is None:
        if found is None:
            raise SkinflowError("no CUDA GPU found here; give the size to plan for with --gpu-memory-gb N")
        memory_gb = found[1]
    count = gpus or (found[0] if found else 1)
    for line in describe(estimate(config, gpus=count), memory_gb):
        out.print(line)


@app.command()
def ablate(
    export_dir: str = typer.Option(..., "--export", help="An export folder written with --format grpo (or s3://...)."),
    preset: str = typer.Option("tiny", help=PRESET_HELP),
    seeds: int = typer.Option(3, min=1, help="Seeds per variant (0, 1, ... N-1)."),
    variants: str = typer.Option(",".join(ABLATION_VARIANTS), help=f"Comma-separated: {', '.join(ABLATION_VARIANTS)}."),
    out_dir: Path | None = typer.Option(None, "--out", help="Ablation folder (default: runs/ablation-<time>); rerun to resume."),
    split: str = typer.Option("test", help="The split every variant is evaluated on."),
    model: str | None = typer.Option(None, help="Pretrained weights (local folder or hub id) for the 7B preset."),
    sft_epochs: float | None = typer.Option(None, help="Stage 0 epochs (every variant)."),
    stage1_steps: int | None = typer.Option(None, help="Stage 1 GRPO steps (variants with stage I)."),
    stage2_steps: int | None = typer.Option(None, help="Stage 2 GRPO steps (every variant)."),
    num_generations: int | None = typer.Option(None, help="Completions per prompt (GRPO group size)."),
    batch_size: int | None = typer.Option(None, help="Completions per step (a multiple of --num-generations)."),
    save_steps: int | None = typer.Option(None, help="Checkpoint every this many steps (what a resume restarts from)."),
) -> None:
    """Test the paper's claims on your data: the recipe with FDLinear and/or stage I removed, same budget and
    seeds, each evaluated on the same split; one report with paired differences against the full recipe."""
    import time

    from trainer.ablate import AblationConfig, run_ablation

    overrides = {
        "model": model,
        "sft_epochs": sft_epochs,
        "stage1_steps": stage1_steps,
        "stage2_steps": stage2_steps,
        "num_generations": num_generations,
        "batch_size": batch_size,
        "save_steps": save_steps,
    }
    out_dir = out_dir or Path("runs") / time.strftime("ablation-%Y%m%d-%H%M%S")
    config = AblationConfig(
        export=_export_address(export_dir),
        out=str(out_dir),
        preset=preset,
        seeds=tuple(range(seeds)),
        variants=tuple(v.strip() for v in variants.split(",") if v.strip()),
        split=split,
        overrides={k: v for k, v in overrides.items() if v is not None},
    )
    report = run_ablation(config, on_progress=lambda line: out.print(line))
    if report is None:
        out.print(f"ablation cancelled; run the same command again to resume it ({out_dir})")
        return
    for name, variant in report["variants"].items():
        top1, top6 = variant["metrics"]["top1"], variant["metrics"]["top6"]
        out.print(
            f"{name}: top-1 {top1['mean']:.3f} ± {top1['std']:.3f}, top-6 {top6['mean']:.3f} ± {top6['std']:.3f}",
        )
    out.print(f"report: {out_dir / 'report.md'}")


@app.command()
def predict(
    checkpoint: Path = typer.Option(..., help="A run folder (runs/<id>) or a checkpoint folder."),
    images: Path = typer.Option(
        ..., help='JSONL of {"image": path} rows (an export\'s grpo/stage1.jsonl works) or one path per line.'
    ),
    out_file: Path = typer.Option(..., "--out", help="Where to write the predictions (JSONL)."),
    batch_size: int = typer.Option(8, min=1),
    k: int = typer.Option(6, min=1, help="Diagnoses per image."),
) -> None:
    """Caption and top-K diagnoses (with scores) for each image, as JSONL for `skinflow` to import as suggestions."""
    from trainer.predict import predict_to_file

    count = predict_to_file(checkpoint, images, out_file, batch_size=batch_size, k=k)
    out.print(f"{count} predictions written to {out_file}")


@app.command()
def suggest(
    ctx: typer.Context,
    predictions: Path | None = typer.Option(None, help="A prediction file from `skinflow predict` (JSONL) to import."),
    checkpoint: Path | None = typer.Option(
        None, help="Or: a run folder; predict every image that still needs work, then import."
    ),
    limit: int | None = typer.Option(None, help="With --checkpoint: at most this many images."),
    batch_size: int = typer.Option(8, min=1),
) -> None:
    """Model suggestions (model drafts) for the labelling queue, shown beside the LLM draft when annotating."""
    from curation.assist.suggestions import import_predictions, suggest_with_model

    if (predictions is None) == (checkpoint is None):
        raise SkinflowError("give either --predictions FILE (from `skinflow predict`) or --checkpoint RUN_FOLDER")
    c = context(ctx)
    wb, actor = c.workbench(), c.actor()
    if checkpoint is not None:
        from curation.ops.run_folders import register_run
        from trainer.predict import predict_to_file

        # a run trained with `skinflow train` on this workbench's export counts like one the app started
        run_id = register_run(wb, actor, checkpoint)
        out.print(f"run #{run_id} in the run registry" if run_id else "an outside model (its export is not this workbench's)")
        made = suggest_with_model(
            wb,
            actor,
            lambda manifest, out_file: predict_to_file(checkpoint, manifest, out_file, batch_size=batch_size),
            limit=limit,
        )
        if made is None:
            out.print("no image needs work: nothing to suggest")
            return
        out.print(f"predicted {made.predicted} images with {checkpoint}")
        report = made.report
    else:
        report = import_predictions(wb, actor, predictions)
    out.print(f"{report.added} suggestions added, {report.already_there} already there, {len(report.skipped)} skipped")
    for line, why in report.skipped[:20]:
        out.print(f"line {line}: {why}")


@app.command("eval")
def eval_(
    ctx: typer.Context,
    export_dir: str = typer.Option(
        ..., "--export", help="The export folder (written with --format grpo, or its s3:// address) to evaluate on."
    ),
    out_dir: Path = typer.Option(..., "--out", help="Report folder: report.md, report.json, PNG charts (and predictions.jsonl)."),
    predictions: Path | None = typer.Option(None, help="A prediction file from `skinflow predict`."),
    checkpoint: Path | None = typer.Option(None, help="Or: a run folder or checkpoint to predict with first."),
    llm: str | None = typer.Option(None, help="Or: an OpenAI-compatible model (SKINFLOW_LLM_BASE_URL), same prompt as drafting."),
    split: str = typer.Option("test", help="train, val or test."),
    baseline: Path | None = typer.Option(None, help="A second prediction file: paired comparison (difference with CI, McNemar)."),
) -> None:
    """Clinically grounded evaluation: top-1/3/6, group levels, clinical score, malignant misses, fairness,
    calibration, long tail, captions, with bootstrap CIs."""
    from trainer.data import export_folder, load_export
    from trainer.evaluate import evaluate_files

    if sum(x is not None for x in (predictions, checkpoint, llm)) != 1:
        raise SkinflowError("give exactly one of --predictions FILE, --checkpoint RUN or --llm MODEL")
    export_dir = export_folder(export_dir)  # a bucket's export: one verified local copy for all that follows
    out_dir.mkdir(parents=True, exist_ok=True)
    if checkpoint is not None:
        from trainer.predict import predict_split

        predictions = predict_split(checkpoint, load_export(export_dir), split, out_dir)
    elif llm is not None:
        from curation.assist.drafting import write_llm_predictions

        data = load_export(export_dir)
        predictions = write_llm_predictions(
            context(ctx).settings(), data.taxonomy, data.split_images(split), out_dir / "predictions.jsonl", model=llm
        )
    report = evaluate_files(export_dir, predictions, out_dir, split=split, baseline=baseline)
    h = report["headline"]
    shown = ", ".join(f"{k} {v:.3f}" for k, v in h.items() if v is not None)
    out.print(f"{report['n_diagnosis']} {split} items: {shown}; report in {out_dir / 'report.md'}")
