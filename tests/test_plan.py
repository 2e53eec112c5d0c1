"""The planner's terms one by one, on a configuration small enough to work out by hand (trainer/plan.py).

Each number below was computed on paper from the formula in the planner's docstring, not by calling it: dropping
a term, scaling the activations, or giving Adam 4 bytes instead of 8 fails a test here."""

import re
from dataclasses import replace
from pathlib import Path

import pytest

from trainer import plan
from trainer.config import PRESET_NOTES, TrainConfig

GB = 1024**3

SMALL = plan.Shapes(
    total=1000,
    language_linears=600,
    trainable=100,
    fdlinear=40,
    fdlinear_blocks=(30, 50),
    full=False,
    quantize_4bit=False,
    reference=False,
    checkpointing=True,
    shard=1,
    batch=2,
    completion=10,
    sequence=50,
    patches=16,
    hidden=8,
    intermediate=16,
    layers=3,
    vocab=100,
    kv_heads=2,
    head_dim=4,
    vision_hidden=4,
    vision_intermediate=8,
    vision_depth=2,
)


def test_what_is_held_all_the_time():
    assert plan.weights_bytes(SMALL) == 2000  # 1000 params x 2 B (bf16)
    assert plan.gradient_bytes(SMALL) == 400  # 100 trainable x 4 B
    assert plan.adam_bytes(SMALL) == 800  # 100 trainable x 2 moments x 4 B
    assert plan.reference_bytes(SMALL) == 0  # LoRA: trl turns the adapters off for the KL term
    assert plan.peft_fdlinear_copy_bytes(SMALL) == 160  # peft's fp32 copy of the 40 FDLinear params
    four_bit = replace(SMALL, quantize_4bit=True)
    assert plan.weights_bytes(four_bit) == pytest.approx(600 * 0.52 + 400 * 2)  # 312 + 800 = 1112
    full = replace(SMALL, full=True, trainable=1000, reference=True, shard=4)
    assert plan.weights_bytes(full) == 1000  # fp32 4000, sharded over 4 GPUs
    assert (plan.gradient_bytes(full), plan.adam_bytes(full)) == (1000, 2000)
    assert plan.reference_bytes(full) == 500  # bf16 copy 2000 / 4
    assert plan.peft_fdlinear_copy_bytes(full) == 0  # no peft in a full fine-tune


def test_a_training_step():
    # language, checkpointed: 3 layers x 50 x 2 x 8 x 2 B = 4,800 of layer inputs, plus one layer recomputed:
    # 50 x 2 x (17 x 8 + 8 x 16) = 100 x 264 = 26,400
    assert plan.language_activation_bytes(SMALL) == 31_200
    assert plan.language_activation_bytes(replace(SMALL, checkpointing=False)) == 3 * 26_400
    # vision: 2 blocks x 16 x 2 x 4 x 2 = 512, plus one block: 16 x 2 x (68 + 64) = 4,224
    assert plan.vision_activation_bytes(SMALL) == 4_736
    # FDLinear's per-image weights, fp32: the largest block's (50) x 2 images x 4 B when checkpointed, else all
    assert plan.fdlinear_weight_bytes(SMALL) == 400
    assert plan.fdlinear_weight_bytes(replace(SMALL, checkpointing=False)) == 640  # (30 + 50) x 2 x 4
    # logits: bf16 for 2 x 10 positions x 100 words, and their gradient: 8,000; one sequence's fp32 log-softmax 4,000
    assert plan.logits_bytes(SMALL) == 12_000


def test_generation_and_the_peak():
    assert plan.kv_cache_bytes(SMALL) == 9_600  # K and V x 3 layers x 2 x 50 x 2 heads x 4 dims x 2 B
    parts = plan.plan_parts(SMALL)
    static, step = 2000 + 400 + 800 + 0 + 160, 31_200 + 4_736 + 400 + 12_000  # 3,360 and 48,336 > 9,600
    assert parts["CUDA context and fragmentation"] == pytest.approx(1.5 * GB + 0.1 * (static + step))
    assert plan.peak(parts) == pytest.approx(static + step + 1.5 * GB + 0.1 * (static + step))
    generation_bound = replace(SMALL, kv_heads=40)  # KV cache 192,000: generation is the larger phase now
    assert plan.peak(plan.plan_parts(generation_bound)) == pytest.approx((static + 192_000) * 1.1 + 1.5 * GB)


def test_the_counts_group_fdlinear_by_vision_block():
    counts = plan.count_parameters(TrainConfig.for_preset("qwen2.5-vl-7b-lora"))
    assert len(counts.fdlinear_blocks) == 8  # the last 8 vision blocks carry FDLinear in the one-GPU presets
    assert sum(counts.fdlinear_blocks) == sum(o * i for o, i in counts.fdlinear_shapes)


def test_docs_and_help_quote_the_planner_never_a_second_number():
    assert not any(re.search(r"\d\s*GB", note) for note in PRESET_NOTES.values()), PRESET_NOTES
    guide = (Path(__file__).resolve().parents[1] / "docs" / "guide" / "training.md").read_text()
    quoted = dict(re.findall(r"^\| `([\w.-]+)` \| about ([\d.]+) GB \(planner\)", guide, flags=re.M))
    assert set(quoted) == {"qwen2.5-vl-3b-lora", "qwen2.5-vl-7b-lora", "qwen2.5-vl-7b-qlora"}, quoted
    for preset, gb in quoted.items():
        assert float(gb) == round(plan.estimate(TrainConfig.for_preset(preset)).total / GB, 1), preset
