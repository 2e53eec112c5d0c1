"""`skinflow train`: the SkinFlow recipe over trl, on a `grpo` export folder.

    stage 0  SFT warm start (trl SFTTrainer): image + instruction -> verified caption / diagnosis name
    stage 1  GRPO (trl GRPOTrainer): caption_reward (weighted by the export's weight set) + caption format
    stage 2  GRPO from the stage 1 checkpoint: diagnosis_reward (positional top-K, partial credit, safety
             penalty) + diagnosis format

runs/<id>/ holds config.json (the resolved TrainConfig), initial/ (the starting model), stage<n>/ (trl's
checkpoints) and stage<n>/final/ (the model the next stage starts from), metrics.jsonl (one line per trl
log: stage, step, loss, rewards mean/std per function, KL, learning rate, seconds) and progress.json (what
the app polls: status, stage, step, max steps). A stage whose final/ exists is not rerun; an interrupted
stage resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from schema.files import write_json_atomic
from schema.run_files import RunProgress, write_progress
from trainer.config import TrainConfig
from trainer.data import ExportData, load_export
from trainer.errors import TrainerError
from trainer.model import SkinflowQwen2_5_VL, build_tiny, fd_settings, four_bit_config, load, lora_config, merge_adapter
from trainer.predict import predict_held_out
from trainer.rewards import bind, caption_format_reward, caption_reward, diagnosis_format_reward, diagnosis_reward


def register_architecture() -> None:
    """trl builds GRPO's reference model with getattr(transformers, config.architectures[0]).from_pretrained(...):
    our class must be findable there, or the reference comes back without its FDLinear layers (or, with no
    such name, trl fails on config.auto_map). Set on sys.modules["transformers"] at the time of use: importing
    some transformers submodules (the PIL image processor) replaces that module object, so a `transformers`
    name bound at import time can be a stale one that trl never looks at."""
    setattr(sys.modules["transformers"], SkinflowQwen2_5_VL.__name__, SkinflowQwen2_5_VL)


STAGE_NAMES = {0: "SFT warm start", 1: "GRPO stage I (caption reward)", 2: "GRPO stage II (diagnosis reward)"}


class RunLog(TrainerCallback):
    """Appends trl's logs to metrics.jsonl and keeps progress.json current."""

    def __init__(self, run_dir: Path, stage: int, stages: tuple[int, ...], cancel_file: Path | None = None):
        self.run_dir, self.stage, self.stages, self.start = run_dir, stage, stages, time.monotonic()
        self.cancel_files = [run_dir / "cancel", *([cancel_file] if cancel_file else [])]
        self.cancelled = False

    def progress(self, status: str, step: int, max_steps: int) -> None:
        write_progress(
            self.run_dir,
            RunProgress(
                status=status,
                stage=self.stage,
                stage_name=STAGE_NAMES[self.stage],
                stages=list(self.stages),
                stage_index=self.stages.index(self.stage),
                step=step,
                max_steps=max_steps,
                pid=os.getpid(),
                updated=time.time(),
            ),
        )

    def on_train_begin(self, args, state, control, **kwargs):
        self.progress("running", state.global_step, state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        # The app cancels by writing runs/<id>/cancel (an ablation: its own folder's): stop at this step
        # boundary with a checkpoint.
        if any(path.exists() for path in self.cancel_files):
            self.cancelled = True
            control.should_save = True
            control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        row = {"stage": self.stage, "step": state.global_step, "seconds": round(time.monotonic() - self.start, 3)}
        for key, value in (logs or {}).items():
            if isinstance(value, (int, float)):
                row[key.replace("rewards/", "reward/")] = value
        with (self.run_dir / "metrics.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row, sort_keys=True) + "\n")
        self.progress("running", state.global_step, state.max_steps)


# -- datasets ---------------------------------------------------------------------------------------
def _dataset(rows: list[dict[str, Any]]):
    from datasets import Dataset, Image

    return Dataset.from_list(rows).cast_column("image", Image())


def diagnosis_answer(data: ExportData, key: str) -> str:
    return data.taxonomy.label(key).display


def sft_rows(data: ExportData, split: str = "train") -> list[dict[str, Any]]:
    rows = []
    for r in data.rows(1, split):
        rows.append(
            {
                "image": str(data.image_path(r)),
                "prompt": r["prompt"],
                "completion": [{"role": "assistant", "content": r["caption_text"]}],
            }
        )
    for r in data.rows(2, split):
        rows.append(
            {
                "image": str(data.image_path(r)),
                "prompt": r["prompt"],
                "completion": [{"role": "assistant", "content": diagnosis_answer(data, r["diagnosis_key"])}],
            }
        )
    return rows


def grpo_rows(data: ExportData, stage: int, split: str = "train") -> list[dict[str, Any]]:
    column = "caption" if stage == 1 else "diagnosis_key"
    return [
        {
            "image": str(data.image_path(r)),
            "prompt": r["prompt"],
            column: json.dumps(r[column], sort_keys=True) if stage == 1 else r[column],
        }
        for r in data.rows(stage, split)
    ]


def stage_rewards(config: TrainConfig, data: ExportData, stage: int) -> list[Callable]:
    if stage == 1:
        return [bind(caption_reward, weights=data.weights), caption_format_reward]
    settings = {"taxonomy": data.taxonomy, "k": config.k}
    return [
        bind(
            diagnosis_reward,
            partial_credit=config.partial_credit,
            group_credit=config.group_credit,
            safety_penalty=config.safety_penalty,
            **settings,
        ),
        bind(diagnosis_format_reward, **settings),
    ]


# -- stages -----------------------------------------------------------------------------------------
def _common_args(config: TrainConfig, out: Path, learning_rate: float) -> dict[str, Any]:
    return {
        "output_dir": str(out),
        "learning_rate": learning_rate,
        "seed": config.seed,
        "report_to": "none",
        "logging_steps": config.logging_steps,
        "save_steps": config.save_steps,
        "save_total_limit": 2,
        "use_cpu": config.use_cpu,
        "bf16": config.bf16,
        "gradient_checkpointing": config.gradient_checkpointing,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
        **config.extra,
    }


def stage_trainer(config: TrainConfig, data: ExportData, stage: int, model, processor, out: Path):
    """The trl trainer of one stage (SFT for 0, GRPO for 1 and 2), with LoRA when the config says so."""
    peft = {}
    if config.lora:
        peft["peft_config"] = lora_config(model, r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout)
    if stage == 0:
        from trl import SFTConfig, SFTTrainer

        args = SFTConfig(
            **_common_args(config, out, config.sft_learning_rate),
            num_train_epochs=config.sft_epochs,
            per_device_train_batch_size=config.batch_size,
            max_length=None,
            lr_scheduler_type="cosine",
        )
        return SFTTrainer(model=model, args=args, train_dataset=_dataset(sft_rows(data)), processing_class=processor, **peft)
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        **_common_args(config, out, config.stage1_learning_rate if stage == 1 else config.stage2_learning_rate),
        max_steps=config.stage1_steps if stage == 1 else config.stage2_steps,
        per_device_train_batch_size=config.batch_size,
        num_generations=config.num_generations,
        beta=config.beta,
        temperature=config.temperature,
        max_completion_length=config.stage1_max_completion_length if stage == 1 else config.stage2_max_completion_length,
        use_vllm=config.use_vllm,
        lr_scheduler_type="constant",
        log_completions=False,
    )
    register_architecture()
    return GRPOTrainer(
        model=model,
        args=args,
        reward_funcs=stage_rewards(config, data, stage),
        train_dataset=_dataset(grpo_rows(data, stage)),
        processing_class=processor,
        **peft,
    )


def complete_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in step order, only whole ones: the Trainer writes trainer_state.json last, so a
    checkpoint folder without it is one a killed process was halfway through writing."""
    found = [p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return sorted((p for p in found if (p / "trainer_state.json").is_file()), key=lambda p: int(p.name.split("-")[-1]))


def _last_checkpoint(folder: Path) -> Path | None:
    """The newest whole checkpoint; half-written ones (a kill mid-save) are deleted so that the
    resumed run can write that step again cleanly."""
    whole = set(complete_checkpoints(folder))
    for partial in folder.glob("checkpoint-*"):
        if partial not in whole and partial.is_dir():
            shutil.rmtree(partial)
    return max(whole, key=lambda p: int(p.name.split("-")[-1])) if whole else None


def initial_model(config: TrainConfig, data: ExportData, run_dir: Path) -> Path:
    """The starting model, saved once in runs/<id>/initial (so a resumed run starts from the same one)."""
    folder = run_dir / "initial"
    if (folder / "config.json").exists():
        return folder
    fd = fd_settings(config.fd_layers, config.fd_targets, config.fd_num_bases, config.fd_reduction) if config.fdlinear else None
    if config.model is None:
        model, processor = build_tiny(data.texts(), seed=config.seed, fd=fd, image_size=config.image_size)
    else:
        import torch

        model, processor = load(config.model, dtype=torch.bfloat16 if config.bf16 else torch.float32, fd=fd)
        pixels = config.image_size * config.image_size
        processor.image_processor.min_pixels = processor.image_processor.max_pixels = pixels
    staging = run_dir / ".initial.tmp"
    model.save_pretrained(staging)
    processor.save_pretrained(staging)
    os.replace(staging, folder)
    return folder


def _load_options(config: TrainConfig) -> dict[str, Any]:
    """How a stage loads its starting model: bf16 weights for the one-GPU (LoRA) presets, and the language model in
    4-bit for QLoRA (which needs CUDA and bitsandbytes: refused here, before anything loads, otherwise)."""
    import torch

    if config.quantize_4bit:
        import importlib.util

        if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
            raise TrainerError(
                "4-bit loading (the qwen2.5-vl-7b-qlora preset) needs a CUDA GPU and bitsandbytes "
                "(pip install -e '.[qlora]' on that machine); `skinflow train --plan` names a preset that fits here"
            )
        return {"dtype": torch.bfloat16, "quantization_config": four_bit_config()}
    return {"dtype": torch.bfloat16} if config.lora and config.bf16 else {}


def _train_stages(config: TrainConfig, data: ExportData, run_dir: Path, cancel_file: Path | None) -> Path | None:
    """The recipe's stages from the initial model; returns the final model's folder, or None when cancelled."""
    import torch

    options = _load_options(config)  # refuses a setting this machine cannot load before building anything
    torch.manual_seed(config.seed)
    source = initial_model(config, data, run_dir)
    for stage in config.stages:
        out = run_dir / f"stage{stage}"
        final = out / "final"
        if (final / "config.json").exists():
            source = final
            continue
        log = RunLog(run_dir, stage, config.stages, cancel_file)
        model, processor = load(source, **options)
        trainer = stage_trainer(config, data, stage, model, processor, out)
        trainer.add_callback(log)
        last = _last_checkpoint(out)
        trainer.train(resume_from_checkpoint=str(last) if last else None)
        if log.cancelled:
            log.progress("cancelled", trainer.state.global_step, trainer.state.max_steps)
            return None
        staging = out / ".final.tmp"
        if config.quantize_4bit:  # merged into a full-precision copy of the stage's start, not into 4-bit weights
            trainer.model.save_pretrained(out / "adapter")
            merge_adapter(source, out / "adapter").save_pretrained(staging)
        elif config.lora:  # an adapter folder has no config.json: the next stage, predict and eval get the merged model
            trainer.model.merge_and_unload().save_pretrained(staging)
        else:
            trainer.save_model(str(staging))
        processor.save_pretrained(staging)
        os.replace(staging, final)
        log.progress("stage done", trainer.state.global_step, trainer.state.max_steps)
        source = final
    (run_dir / "model").unlink(missing_ok=True)
    (run_dir / "model").symlink_to(source.relative_to(run_dir))
    return source


def _train_probe(config: TrainConfig, data: ExportData, run_dir: Path, cancel_file: Path | None) -> Path | None:
    from trainer.probe import train_probe

    if not train_probe(config, run_dir, data, [run_dir / "cancel", *([cancel_file] if cancel_file else [])]):
        write_progress(run_dir, RunProgress(status="cancelled", pid=os.getpid(), updated=time.time()))
        return None
    return run_dir / "model"


def train(config: TrainConfig, *, resume: bool = False, cancel_file: Path | None = None) -> Path:
    """Run the configured stages (or fit the probe); returns the run folder. With resume, an existing run_id
    continues. The run stops (with a checkpoint) when <run folder>/cancel or `cancel_file` appears."""
    data = load_export(config.export)
    probe = config.preset == "probe"
    if not probe and config.check_memory:
        from trainer.plan import check_fits

        check_fits(config)
    if not probe and not data.rows(2, "train") and 2 in config.stages:
        raise TrainerError("the export has no training rows with a diagnosis; stage 2 needs verified diagnoses")
    run_id = config.run_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    config.run_id = run_id
    run_dir = Path(config.output_dir) / run_id
    if run_dir.exists() and not resume:
        raise TrainerError(f"run folder {run_dir} exists; pass --resume to continue it or choose another --run-id")
    if resume and not run_dir.exists():
        raise TrainerError(f"nothing to resume: {run_dir} does not exist")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "cancel").unlink(missing_ok=True)  # resuming a cancelled run
    write_json_atomic(run_dir / "config.json", config.to_dict())
    source = (_train_probe if probe else _train_stages)(config, data, run_dir, cancel_file)
    if source is None:  # cancelled
        return run_dir
    if config.held_out_predictions:
        stages = ["probe"] if probe else list(config.stages)
        write_progress(
            run_dir,
            RunProgress(
                status="running",
                stage_name="predicting held-out images",
                stages=stages,
                stage_index=len(stages) - 1,
                step=1,
                max_steps=1,
                pid=os.getpid(),
                updated=time.time(),
            ),
        )
        predict_held_out(run_dir, data)
    write_progress(
        run_dir, RunProgress(status="done", stages=list(config.stages), model=str(source), pid=os.getpid(), updated=time.time())
    )
    return run_dir
