"""One TrainConfig for every stage and preset; loadable from TOML, overridden by CLI flags.

Presets (PRESETS below; PRESET_NOTES says what each is for): `tiny` (a Qwen2.5-VL built from config, trained
from scratch on the CPU in minutes, SFT warm start on), `qwen2.5-vl-7b` (pretrained weights from `model`, bf16,
the paper's learning rates, no warm start, several GPUs), the one-GPU presets `qwen2.5-vl-3b-lora`,
`qwen2.5-vl-7b-lora` and `qwen2.5-vl-7b-qlora` (LoRA on the language model, FDLinear on the last 8 vision blocks;
the last with a 4-bit language model), and `probe` (trainer/probe.py: a frozen CLIP/SigLIP image encoder from
`model` plus linear heads; the GRPO and FDLinear settings do not apply to it).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.errors import TrainerError

# Light on purpose (no torch): the CLI builds its help from these lists, and curation/ops/runs.py keeps
# copies that tests/test_single_source.py checks against them.
MLP_TARGETS = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
# LoRA goes on the language model's attention and MLP projections only: a bare list of names would also hit the
# vision tower's MLPs (same names), and peft refuses FDLinear modules; those are trained whole (modules_to_save).
LORA_TARGETS = r"model\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
# `skinflow ablate` variants, reference first (trainer/ablate.py runs them)
ABLATION_VARIANTS: dict[str, str] = {
    "full": "FDLinear + stage I + stage II",
    "no-fdlinear": "plain linears, same stages",
    "no-stage1": "FDLinear, without stage I",
    "baseline": "plain linears, without stage I",
}
# what each preset is for, in a few words (the CLI's and the Train page's help)
PRESET_NOTES: dict[str, str] = {
    "tiny": "CPU, from scratch, minutes",
    "qwen2.5-vl-7b": "pretrained weights, several GPUs",
    "probe": "CPU, frozen image encoder + linear heads, seconds to minutes",
    "qwen2.5-vl-3b-lora": "one GPU, LoRA (train --plan says how much memory)",
    "qwen2.5-vl-7b-lora": "one GPU, LoRA, the 7B",
    "qwen2.5-vl-7b-qlora": "one GPU, 4-bit language model + LoRA (CUDA, bitsandbytes)",
}

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "stages": (0, 1, 2),
        "model": None,
        "image_size": 112,
        "bf16": False,
        "fd_layers": None,
        "sft_learning_rate": 3e-3,
        "stage1_learning_rate": 1e-4,
        "stage2_learning_rate": 1e-4,
        "sft_epochs": 30.0,
        "stage1_steps": 40,
        "stage2_steps": 40,
        "batch_size": 8,
        "num_generations": 4,
        "stage1_max_completion_length": 64,
        "stage2_max_completion_length": 24,
        "temperature": 1.0,
        "gradient_checkpointing": False,
        "use_cpu": True,
    },
    "qwen2.5-vl-7b": {
        "stages": (1, 2),
        "model": "Qwen/Qwen2.5-VL-7B-Instruct",
        "image_size": 448,
        "bf16": True,
        "fd_layers": (-8, -7, -6, -5, -4, -3, -2, -1),  # the MLP linears of the last 8 vision blocks
        "sft_learning_rate": 1e-5,
        "stage1_learning_rate": 1e-6,
        "stage2_learning_rate": 5e-7,  # the paper's rates
        "sft_epochs": 1.0,
        "stage1_steps": 500,
        "stage2_steps": 500,
        "batch_size": 8,
        "num_generations": 8,
        "stage1_max_completion_length": 256,
        "stage2_max_completion_length": 96,
        "temperature": 1.0,
        "gradient_checkpointing": True,
        "use_cpu": False,
    },
    # trainer/probe.py: no stages and no generation; `model` is the image encoder (None: a small one built
    # from config with random weights), image_size that built encoder's input
    "probe": {"model": None, "image_size": 64, "use_cpu": True},
}
# One GPU: LoRA on the language model (no reference copy: trl switches the adapters off for the KL term), FDLinear
# on the last 8 vision blocks trained whole, gradient checkpointing, fewer generations per prompt than the paper's 8
# where memory is short. LoRA learning rates are the usual 1e-5 range, not the full fine-tune's 1e-6.
_ONE_GPU = {
    "stages": (1, 2),
    "image_size": 448,
    "bf16": True,
    "fd_layers": (-8, -7, -6, -5, -4, -3, -2, -1),
    "sft_learning_rate": 1e-4,
    "stage1_learning_rate": 1e-5,
    "stage2_learning_rate": 1e-5,
    "sft_epochs": 1.0,
    "stage1_steps": 500,
    "stage2_steps": 500,
    "stage1_max_completion_length": 256,
    "stage2_max_completion_length": 96,
    "temperature": 1.0,
    "gradient_checkpointing": True,
    "use_cpu": False,
    "lora": True,
    "lora_r": 16,
    "lora_alpha": 32,
}
PRESETS["qwen2.5-vl-3b-lora"] = {**_ONE_GPU, "model": "Qwen/Qwen2.5-VL-3B-Instruct", "batch_size": 8, "num_generations": 4}
PRESETS["qwen2.5-vl-7b-lora"] = {**_ONE_GPU, "model": "Qwen/Qwen2.5-VL-7B-Instruct", "batch_size": 8, "num_generations": 8}
PRESETS["qwen2.5-vl-7b-qlora"] = {
    **_ONE_GPU,
    "model": "Qwen/Qwen2.5-VL-7B-Instruct",
    "batch_size": 4,
    "num_generations": 4,
    "quantize_4bit": True,
}


@dataclass
class TrainConfig:
    preset: str = "tiny"
    export: str = ""  # an export folder written with --format grpo
    output_dir: str = "runs"  # runs/<run_id>/
    run_id: str | None = None
    stages: tuple[int, ...] = (0, 1, 2)  # 0: SFT warm start, 1: GRPO caption reward, 2: GRPO diagnosis reward
    model: str | None = None  # local path or hub id (7B preset); None: build the tiny model
    seed: int = 0
    image_size: int = 112  # pixels per side the processor resizes to
    # FDLinear in the vision tower
    fdlinear: bool = True
    fd_layers: tuple[int, ...] | None = None  # vision block indices (negative from the end); None: all
    fd_targets: tuple[str, ...] = MLP_TARGETS
    fd_num_bases: int = 4
    fd_reduction: float = 1 / 16
    # optimisation
    sft_learning_rate: float = 3e-3
    stage1_learning_rate: float = 1e-4
    stage2_learning_rate: float = 1e-4
    sft_epochs: float = 30.0
    stage1_steps: int = 40
    stage2_steps: int = 40
    batch_size: int = 8  # completions per optimiser step (GRPO: prompts x num_generations)
    gradient_accumulation_steps: int = 1
    num_generations: int = 4
    stage1_max_completion_length: int = 64
    stage2_max_completion_length: int = 24
    temperature: float = 1.0
    beta: float = 0.04  # KL to the reference policy
    # stage II reward
    k: int = 6
    partial_credit: bool = True  # the nine-group credit and the malignant-as-benign safety penalty, together
    group_credit: float = 0.5
    safety_penalty: float = 0.5
    # machine
    bf16: bool = False
    use_cpu: bool = True
    gradient_checkpointing: bool = False
    use_vllm: bool = False
    # LoRA (peft) on the language model; FDLinear layers train whole; each stage's final/ is the merged model
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    check_memory: bool = True  # refuse a GPU run whose memory estimate (trainer/plan.py) exceeds the GPU
    quantize_4bit: bool = False  # the language model in 4-bit NF4 (bitsandbytes, CUDA); vision tower and lm_head stay bf16
    save_steps: int = 20
    logging_steps: int = 1
    # after the last stage, predict the export's val and test images into held_out_predictions.jsonl: the
    # workbench's evidence per field then knows whether this run beats its current best source, before activation
    held_out_predictions: bool = True
    # the probe preset (trainer/probe.py)
    probe_steps: int = 300  # full-batch Adam steps per fit of the linear heads
    probe_learning_rate: float = 0.05
    probe_folds: int = 3  # cross-validation folds that choose each head's L2 penalty and each field's threshold
    probe_l2: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)  # the penalties tried
    embed_batch_size: int = 16  # images per encoder forward pass
    embedding_cache: str | None = None  # None: <output_dir>/embedding-cache
    extra: dict[str, Any] = field(default_factory=dict)  # passed to trl's configs as is

    @classmethod
    def for_preset(cls, preset: str, **overrides: Any) -> TrainConfig:
        if preset not in PRESETS:
            raise TrainerError(f"unknown preset {preset!r}; use one of: {', '.join(PRESETS)}")
        return cls(preset=preset, **{**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}})

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        try:
            doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise TrainerError(f"cannot read the training config {path}: {e}") from None
        doc = doc.get("train", doc)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise TrainerError(f"unknown setting(s) {unknown} in {path}; known: {', '.join(sorted(known))}")
        return cls.for_preset(doc.pop("preset", overrides.pop("preset", None) or "tiny"), **{**doc, **overrides})

    def __post_init__(self) -> None:
        self.stages = tuple(sorted(set(int(s) for s in self.stages)))
        if not self.stages or any(s not in (0, 1, 2) for s in self.stages):
            raise TrainerError(f"stages must be a subset of 0, 1, 2 (got {self.stages})")
        if self.fd_layers is not None:
            self.fd_layers = tuple(int(i) for i in self.fd_layers)
        self.fd_targets = tuple(self.fd_targets)
        if self.num_generations < 2:
            raise TrainerError("num_generations must be at least 2: GRPO compares completions within a group")
        if self.batch_size % self.num_generations:
            raise TrainerError(f"batch_size ({self.batch_size}) must be a multiple of num_generations ({self.num_generations})")
        self.probe_l2 = tuple(float(v) for v in self.probe_l2)
        if not self.probe_l2 or min(self.probe_l2) < 0:
            raise TrainerError(f"probe_l2 must list one or more penalties >= 0 (got {self.probe_l2})")
        if self.use_vllm and self.fdlinear:
            raise TrainerError(
                "vLLM generation cannot carry FDLinear's per-image gates (it runs its own copy of the model without "
                "them); turn one off: --no-fdlinear, or generate with transformers (leave out --use-vllm)"
            )
        if self.quantize_4bit and not self.lora:
            raise TrainerError("a 4-bit language model cannot be trained itself; quantize_4bit needs lora")
        if self.lora and self.lora_r < 1:
            raise TrainerError(f"lora_r must be at least 1 (got {self.lora_r})")
        if self.k < 1:
            raise TrainerError("k (diagnoses per answer) must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
