"""`skinflow train --plan`: will a preset fit on this GPU? An estimate made before anything loads.

Parameters are counted exactly by building the model on PyTorch's meta device (no memory, no weights) from the
checkpoint's config.json, or, for the hub ids of the presets, from the published architecture fields kept in
trainer/configs/ (no hub needed). The rest is arithmetic over the preset's settings, per GPU, in bytes:

    weights       bf16 (2 B/param); a 4-bit language model 0.52 B/param for its linears (NF4 + double-quantised
                  scales), embeddings, vision tower and lm_head in bf16; a full fine-tune loads fp32 (4 B/param)
    trainable     LoRA adapters (fp32) and FDLinear layers, or every parameter for a full fine-tune: gradient (4 B)
                  and Adam's two moments (8 B) per trainable parameter; ZeRO-3 shards these and the weights over
                  the GPUs
    reference     a full fine-tune with beta > 0 keeps a frozen copy of the weights (bf16); with LoRA trl switches
                  the adapters off instead, so none
    activations   per micro-batch (batch_size completions, each with its image): the language model's layer inputs
                  (with gradient checkpointing) or every layer's activations (about s*b*(17h + 8i) bytes per
                  layer), the same for the vision tower, FDLinear's per-image weights (out x in fp32 per layer and
                  image, kept for the backward pass), and the completion logits in fp32 (twice: logits and
                  log-softmax)
    overhead      CUDA context, allocator fragmentation: 1.5 GB + 10%

It is an estimate: benchmarks/gpu.py measures the real peak on a GPU and prints it beside this number.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from trainer.config import PRESETS, TrainConfig
from trainer.errors import TrainerError

GB = 1024**3
CONFIGS = Path(__file__).with_name("configs")
PUBLISHED = {  # hub id -> the architecture fields kept here
    "Qwen/Qwen2.5-VL-3B-Instruct": CONFIGS / "qwen2.5-vl-3b.json",
    "Qwen/Qwen2.5-VL-7B-Instruct": CONFIGS / "qwen2.5-vl-7b.json",
}
# the GPU presets, most capable first: the advice names the first that fits
GPU_PRESETS = ("qwen2.5-vl-7b", "qwen2.5-vl-7b-lora", "qwen2.5-vl-7b-qlora", "qwen2.5-vl-3b-lora")
PROMPT_TEXT_TOKENS = 80  # instruction and chat template around the image
FIXED_OVERHEAD = 1.5 * GB
NF4_BYTES = 0.52


def architecture(model: str | None):
    """The Qwen2.5-VL config of a preset's model: a local folder's config.json or a published one kept here."""
    from transformers import Qwen2_5_VLConfig

    if model in PUBLISHED:
        doc = json.loads(PUBLISHED[model].read_text(encoding="utf-8"))
        doc.pop("_source", None)
        return Qwen2_5_VLConfig(**doc)
    if model and (Path(model) / "config.json").is_file():
        return Qwen2_5_VLConfig.from_pretrained(model)
    raise TrainerError(
        f"cannot plan for model {model!r}: give a local checkpoint folder (with config.json) or one of {', '.join(PUBLISHED)}"
    )


@dataclass(frozen=True)
class Counts:
    total: int
    vision: int
    language_linears: int  # what 4-bit loading quantises
    lora: int
    fdlinear: int
    fdlinear_shapes: tuple[tuple[int, int], ...]  # (out, in) of each FDLinear layer


def count_parameters(config: TrainConfig) -> Counts:
    """Exact counts on the meta device: the model with the preset's FDLinear layers and LoRA placement."""
    layers = tuple(config.fd_layers) if config.fd_layers is not None else None
    return _count(
        config.model, config.fdlinear, layers, tuple(config.fd_targets), config.fd_num_bases, config.fd_reduction, config.lora_r
    )


@functools.lru_cache(maxsize=32)
def _count(
    model_id: str | None,
    fdlinear: bool,
    fd_layers: tuple[int, ...] | None,
    fd_targets: tuple[str, ...],
    num_bases: int,
    reduction: float,
    lora_r: int,
) -> Counts:
    import re

    import torch
    from torch import nn

    from trainer.config import LORA_TARGETS
    from trainer.fdlinear import FDLinear, patch_vision_tower
    from trainer.model import FOUR_BIT_SKIP

    arch = architecture(model_id)
    with torch.device("meta"):
        from transformers import Qwen2_5_VLForConditionalGeneration

        model = Qwen2_5_VLForConditionalGeneration(arch)
        if fdlinear:
            patch_vision_tower(
                model.model.visual,
                layers=list(fd_layers) if fd_layers is not None else None,
                targets=fd_targets,
                num_bases=num_bases,
                reduction=reduction,
            )
    pattern = re.compile(LORA_TARGETS)
    lora = linears = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and not any(part in name.split(".") for part in FOUR_BIT_SKIP):
            linears += module.weight.numel()
        if isinstance(module, nn.Linear) and pattern.fullmatch(name):
            lora += lora_r * (module.in_features + module.out_features)
    fd_modules = [m for m in model.modules() if isinstance(m, FDLinear)]
    return Counts(
        total=sum(p.numel() for p in model.parameters()),
        vision=sum(p.numel() for p in model.model.visual.parameters()),
        language_linears=linears,
        lora=lora,
        fdlinear=sum(p.numel() for m in fd_modules for p in m.parameters()),
        fdlinear_shapes=tuple((m.out_features, m.in_features) for m in fd_modules),
    )


@dataclass(frozen=True)
class Plan:
    preset: str
    gpus: int
    parts: dict[str, float]  # bytes per GPU, by part

    @property
    def total(self) -> float:
        return sum(self.parts.values())


def estimate(config: TrainConfig, *, gpus: int = 1) -> Plan:
    """Peak memory per GPU of a training step of `config` (see the module docstring for the model)."""
    arch = architecture(config.model)
    text, vision = arch.text_config, arch.vision_config
    counts = count_parameters(config)
    full = not config.lora
    shard = gpus if full and gpus > 1 else 1  # ZeRO-3 shards weights and optimiser state of a full fine-tune
    if config.quantize_4bit:
        weights = counts.language_linears * NF4_BYTES + (counts.total - counts.language_linears) * 2
    else:
        weights = counts.total * (4 if full else 2)
    trainable = counts.total if full else counts.lora + counts.fdlinear
    batch = config.batch_size
    patches = (config.image_size // vision.patch_size) ** 2
    image_tokens = patches // vision.spatial_merge_size**2
    completion = max(config.stage1_max_completion_length, config.stage2_max_completion_length)
    sequence = image_tokens + PROMPT_TEXT_TOKENS + completion
    h, i, layers = text.hidden_size, text.intermediate_size, text.num_hidden_layers
    per_layer_full = sequence * batch * (17 * h + 8 * i)
    if config.gradient_checkpointing:
        language = layers * sequence * batch * h * 2 + per_layer_full
    else:
        language = layers * per_layer_full
    vh, vi = vision.hidden_size, vision.intermediate_size
    vision_full = patches * batch * (17 * vh + 8 * vi)
    vision_act = (
        vision.depth * patches * batch * vh * 2 + vision_full if config.gradient_checkpointing else vision.depth * vision_full
    )
    fd_weights = sum(out * inp * 4 for out, inp in counts.fdlinear_shapes) * batch
    logits = batch * completion * text.vocab_size * 4 * 2
    parts = {
        "weights": weights / shard,
        "gradients": trainable * 4 / shard,
        "optimiser (Adam)": trainable * 8 / shard,
        "reference model": counts.total * 2 / shard if full and config.beta > 0 else 0.0,
        "activations: language model": float(language),
        "activations: vision tower": float(vision_act),
        "FDLinear per-image weights": float(fd_weights),
        "completion logits": float(logits),
    }
    parts["CUDA context and fragmentation"] = FIXED_OVERHEAD + 0.1 * sum(parts.values())
    return Plan(config.preset, gpus, parts)


def gpu_memory() -> tuple[int, float] | None:
    """(GPUs, GB of the smallest) on this machine, or None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    sizes = [torch.cuda.get_device_properties(i).total_memory / GB for i in range(torch.cuda.device_count())]
    return len(sizes), min(sizes)


def fits(plan: Plan, memory_gb: float) -> bool:
    return plan.total <= memory_gb * GB


def advise(memory_gb: float, gpus: int = 1) -> str | None:
    """The most capable GPU preset whose estimate fits, or None."""
    for preset in GPU_PRESETS:
        if PRESETS[preset].get("lora") is None and gpus < 2:
            continue  # the full fine-tune is for several GPUs (ZeRO-3)
        if fits(estimate(TrainConfig.for_preset(preset), gpus=gpus), memory_gb):
            return preset
    return None


def describe(plan: Plan, memory_gb: float) -> list[str]:
    lines = [f"{plan.preset} on {plan.gpus} GPU(s) of {memory_gb:g} GB: about {plan.total / GB:.1f} GB per GPU"]
    lines += [f"  {part}: {size / GB:.2f} GB" for part, size in plan.parts.items() if size]
    if fits(plan, memory_gb):
        lines.append("fits")
    else:
        better = advise(memory_gb, plan.gpus)
        lines.append(
            "does not fit; "
            + (f"the largest preset that fits is {better}" if better else "no GPU preset fits: train tiny or probe on the CPU")
        )
    return lines


def check_fits(config: TrainConfig) -> None:
    """Refuse, before anything loads, a GPU run whose estimate exceeds this machine's smallest GPU (no GPU: no check)."""
    found = gpu_memory()
    if found is None or config.use_cpu:
        return
    gpus, memory_gb = found
    try:
        plan = estimate(config, gpus=gpus)
    except TrainerError:
        return  # a model the planner does not know (no config.json to read): nothing to check against
    if not fits(plan, memory_gb):
        lines = describe(plan, memory_gb)
        raise TrainerError(f"{lines[0]}: {lines[-1]} (estimate by `skinflow train --plan`; pass --ignore-plan to try anyway)")
