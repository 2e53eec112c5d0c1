"""`skinflow train --plan`: will a preset fit on this GPU? An estimate made before anything loads.

Parameters are counted exactly by building the model on PyTorch's meta device (no memory, no weights) from the
checkpoint's config.json, or, for the hub ids of the presets, from the published architecture fields kept in
trainer/configs/ (no hub needed). The rest is arithmetic over the preset's settings (`Shapes`), per GPU, in
bytes, one function per term (each checked against a small configuration worked out by hand in
tests/test_plan.py):

  held all the time
    weights         bf16 (2 B/param); a 4-bit language model 0.52 B/param for its linears (NF4 + double-quantised
                    scales), embeddings, vision tower and lm_head in bf16; a full fine-tune loads fp32 (4 B/param)
    gradients       4 B per trainable parameter (LoRA adapters and FDLinear layers, or every parameter)
    optimiser       Adam's two fp32 moments: 8 B per trainable parameter. ZeRO-3 shards these three over the GPUs
    reference       a full fine-tune with beta > 0 keeps a frozen bf16 copy; with LoRA trl switches the adapters
                    off instead, so none
    FDLinear copies with LoRA, peft trains a copy of each FDLinear (modules_to_save) in fp32 (4 B/param) beside
                    the frozen original counted in the weights
  a training step (forward and backward of one micro-batch: batch_size completions, each with its image)
    activations     the language model's layer inputs with gradient checkpointing (plus one layer's full set,
                    recomputed in the backward pass), or every layer's (about s*b*(17h + 8i) bytes per layer);
                    the same for the vision tower over its patches
    FDLinear per-image weights  out x in fp32 per layer and image; with checkpointing only one vision block's
                    layers are alive at a time (the block being recomputed), without it every block's
    completion logits  as trl computes them: only the completion positions, in the model's dtype (bf16), kept
                    for the backward pass with a gradient of the same size, and log-softmax taken one sequence at
                    a time in fp32: b*c*V*2*2 + c*V*4
  generation (before the step, not at the same time)
    KV cache        keys and values of every layer for the prompt and the completion, bf16:
                    2 * layers * b * s * kv_heads * head_dim * 2
  overhead          CUDA context, allocator fragmentation: 1.5 GB + 10% of the rest

The peak is what is held all the time plus the larger of the training step and generation, plus the overhead.
It is an estimate: benchmarks/gpu.py measures the real peak on a GPU (reserved and allocated) beside it.
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
    fdlinear_blocks: tuple[int, ...] = ()  # per patched vision block: the sum of out x in of its FDLinear layers


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
    fd_named = [(name, m) for name, m in model.named_modules() if isinstance(m, FDLinear)]
    fd_modules = [m for _, m in fd_named]
    blocks: dict[str, int] = {}
    for name, m in fd_named:  # "model.visual.blocks.31.mlp.gate_proj" -> block "31"
        block = name.split(".blocks.", 1)[-1].split(".", 1)[0]
        blocks[block] = blocks.get(block, 0) + m.out_features * m.in_features
    return Counts(
        total=sum(p.numel() for p in model.parameters()),
        vision=sum(p.numel() for p in model.model.visual.parameters()),
        language_linears=linears,
        lora=lora,
        fdlinear=sum(p.numel() for m in fd_modules for p in m.parameters()),
        fdlinear_shapes=tuple((m.out_features, m.in_features) for m in fd_modules),
        fdlinear_blocks=tuple(blocks.values()),
    )


STATIC = ("weights", "gradients", "optimiser (Adam)", "reference model", "FDLinear copies (peft, fp32)")
TRAINING_STEP = (
    "activations: language model",
    "activations: vision tower",
    "FDLinear per-image weights",
    "completion logits",
)
GENERATION = ("generation: KV cache",)
OVERHEAD = "CUDA context and fragmentation"


@dataclass(frozen=True)
class Plan:
    preset: str
    gpus: int
    parts: dict[str, float]  # bytes per GPU, by part

    @property
    def total(self) -> float:
        """What is held all the time, plus the larger of a training step and generation, plus the overhead."""
        return peak(self.parts)


def peak(parts: dict[str, float]) -> float:
    static = sum(parts[p] for p in STATIC)
    return static + max(sum(parts[p] for p in TRAINING_STEP), sum(parts[p] for p in GENERATION)) + parts[OVERHEAD]


@dataclass(frozen=True, kw_only=True)
class Shapes:
    """Everything the estimate reads: exact counts from the meta model, sizes from the architecture and preset."""

    total: int  # parameters
    language_linears: int
    trainable: int  # LoRA + FDLinear, or every parameter for a full fine-tune
    fdlinear: int
    fdlinear_blocks: tuple[int, ...]  # out x in summed per patched vision block
    full: bool  # a full fine-tune (no LoRA)
    quantize_4bit: bool
    reference: bool  # a full fine-tune with beta > 0
    checkpointing: bool
    shard: int  # GPUs ZeRO-3 shards the static parts over (1 without)
    batch: int  # completions per micro-batch, each with its image
    completion: int  # tokens
    sequence: int  # image tokens + prompt + completion
    patches: int  # vision tower positions per image
    hidden: int
    intermediate: int
    layers: int
    vocab: int
    kv_heads: int
    head_dim: int
    vision_hidden: int
    vision_intermediate: int
    vision_depth: int


def weights_bytes(x: Shapes) -> float:
    if x.quantize_4bit:
        return (x.language_linears * NF4_BYTES + (x.total - x.language_linears) * 2) / x.shard
    return x.total * (4 if x.full else 2) / x.shard


def gradient_bytes(x: Shapes) -> float:
    return x.trainable * 4 / x.shard


def adam_bytes(x: Shapes) -> float:
    return x.trainable * 8 / x.shard


def reference_bytes(x: Shapes) -> float:
    return x.total * 2 / x.shard if x.reference else 0.0


def peft_fdlinear_copy_bytes(x: Shapes) -> float:
    return 0.0 if x.full else x.fdlinear * 4.0


def _layer_activations(positions: int, batch: int, hidden: int, intermediate: int) -> int:
    return positions * batch * (17 * hidden + 8 * intermediate)


def language_activation_bytes(x: Shapes) -> float:
    one_layer = _layer_activations(x.sequence, x.batch, x.hidden, x.intermediate)
    if x.checkpointing:
        return float(x.layers * x.sequence * x.batch * x.hidden * 2 + one_layer)
    return float(x.layers * one_layer)


def vision_activation_bytes(x: Shapes) -> float:
    one_block = _layer_activations(x.patches, x.batch, x.vision_hidden, x.vision_intermediate)
    if x.checkpointing:
        return float(x.vision_depth * x.patches * x.batch * x.vision_hidden * 2 + one_block)
    return float(x.vision_depth * one_block)


def fdlinear_weight_bytes(x: Shapes) -> float:
    if not x.fdlinear_blocks:
        return 0.0
    held = max(x.fdlinear_blocks) if x.checkpointing else sum(x.fdlinear_blocks)
    return float(held * x.batch * 4)


def logits_bytes(x: Shapes) -> float:
    return float(x.batch * x.completion * x.vocab * 2 * 2 + x.completion * x.vocab * 4)


def kv_cache_bytes(x: Shapes) -> float:
    return float(2 * x.layers * x.batch * x.sequence * x.kv_heads * x.head_dim * 2)


def plan_parts(x: Shapes) -> dict[str, float]:
    parts = {
        "weights": weights_bytes(x),
        "gradients": gradient_bytes(x),
        "optimiser (Adam)": adam_bytes(x),
        "reference model": reference_bytes(x),
        "FDLinear copies (peft, fp32)": peft_fdlinear_copy_bytes(x),
        "activations: language model": language_activation_bytes(x),
        "activations: vision tower": vision_activation_bytes(x),
        "FDLinear per-image weights": fdlinear_weight_bytes(x),
        "completion logits": logits_bytes(x),
        "generation: KV cache": kv_cache_bytes(x),
        OVERHEAD: 0.0,
    }
    parts[OVERHEAD] = FIXED_OVERHEAD + 0.1 * peak(parts)
    return parts


def shapes(config: TrainConfig, *, gpus: int = 1) -> Shapes:
    arch = architecture(config.model)
    text, vision = arch.text_config, arch.vision_config
    counts = count_parameters(config)
    full = not config.lora
    patches = (config.image_size // vision.patch_size) ** 2
    completion = max(config.stage1_max_completion_length, config.stage2_max_completion_length)
    heads = text.num_attention_heads
    return Shapes(
        total=counts.total,
        language_linears=counts.language_linears,
        trainable=counts.total if full else counts.lora + counts.fdlinear,
        fdlinear=counts.fdlinear,
        fdlinear_blocks=counts.fdlinear_blocks,
        full=full,
        quantize_4bit=bool(config.quantize_4bit),
        reference=full and config.beta > 0,
        checkpointing=bool(config.gradient_checkpointing),
        shard=gpus if full and gpus > 1 else 1,
        batch=config.batch_size,
        completion=completion,
        sequence=patches // vision.spatial_merge_size**2 + PROMPT_TEXT_TOKENS + completion,
        patches=patches,
        hidden=text.hidden_size,
        intermediate=text.intermediate_size,
        layers=text.num_hidden_layers,
        vocab=text.vocab_size,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads,
        vision_hidden=vision.hidden_size,
        vision_intermediate=vision.intermediate_size,
        vision_depth=vision.depth,
    )


def estimate(config: TrainConfig, *, gpus: int = 1) -> Plan:
    """Peak memory per GPU of `config`'s training (see the module docstring for the model)."""
    return Plan(config.preset, gpus, plan_parts(shapes(config, gpus=gpus)))


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
