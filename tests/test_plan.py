"""The planner's terms one by one, on a configuration small enough to work out by hand (trainer/plan.py).

Each number below was computed on paper from the formula in the planner's docstring, not by calling it: dropping
a term, scaling the activations, or giving Adam 4 bytes instead of 8 fails a test here."""

import re
from dataclasses import replace
from pathlib import Path

import pytest

from trainer import plan
from trainer.config import PRESET_NOTES, TrainConfig
from trainer.errors import TrainerError
from trainer.model import fd_settings, load

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


def test_the_planner_counts_what_peft_trains_on_the_real_model(pretrained_deep):
    from peft import get_peft_model

    from trainer.model import lora_config
    from trainer.plan import count_parameters

    config = TrainConfig.for_preset("qwen2.5-vl-7b-lora", model=str(pretrained_deep))
    counts = count_parameters(config)  # on the meta device, from config.json alone
    model, _ = load(pretrained_deep, fd=fd_settings(config.fd_layers, config.fd_targets))
    assert counts.total == sum(p.numel() for p in model.parameters())
    peft_model = get_peft_model(model, lora_config(model, r=config.lora_r, alpha=config.lora_alpha, dropout=0.0))
    trained = {n: p.numel() for n, p in peft_model.named_parameters() if p.requires_grad}
    assert counts.lora == sum(v for n, v in trained.items() if "lora_" in n)
    assert counts.fdlinear == sum(v for n, v in trained.items() if "modules_to_save" in n)
    assert len(counts.fdlinear_shapes) == 24


def test_plan_says_what_fits_on_a_24_and_an_80_gb_gpu(monkeypatch, grpo_export, tmp_path):
    from typer.testing import CliRunner

    from app.cli import app
    from trainer import plan

    def planned(*args):
        result = CliRunner().invoke(app, ["train", "--plan", *args])
        assert result.exit_code == 0, result.output
        return result.output

    small = planned("--preset", "qwen2.5-vl-7b-lora", "--gpu-memory-gb", "24")
    assert "does not fit; the largest preset that fits is qwen2.5-vl-7b-qlora" in small and "weights: 15." in small
    assert planned("--preset", "qwen2.5-vl-7b-lora", "--gpu-memory-gb", "80").rstrip().endswith("fits")
    assert "the largest preset that fits is qwen2.5-vl-7b-lora" in planned("--preset", "qwen2.5-vl-7b", "--gpu-memory-gb", "80")
    assert "fits" in planned("--preset", "qwen2.5-vl-7b", "--gpu-memory-gb", "80", "--gpus", "4").splitlines()[-1]
    assert "on the CPU" in planned("--preset", "tiny")
    lora, qlora = (plan.estimate(TrainConfig.for_preset(p)) for p in ("qwen2.5-vl-7b-lora", "qwen2.5-vl-7b-qlora"))
    full = plan.estimate(TrainConfig.for_preset("qwen2.5-vl-7b"), gpus=4)
    assert lora.parts["reference model"] == 0 and full.parts["reference model"] > 0  # LoRA: adapters off, no copy
    assert qlora.parts["weights"] < lora.parts["weights"] / 2
    unchecked = plan.estimate(TrainConfig.for_preset("qwen2.5-vl-7b-lora", gradient_checkpointing=False))
    assert unchecked.parts["activations: language model"] > 5 * lora.parts["activations: language model"]
    # a run that would not fit is refused before anything loads, with the advice
    monkeypatch.setattr(plan, "gpu_memory", lambda: (1, 24.0))
    from trainer.train import train

    config = TrainConfig.for_preset("qwen2.5-vl-7b-lora", export=str(grpo_export), output_dir=str(tmp_path), run_id="big")
    with pytest.raises(TrainerError, match="largest preset that fits is qwen2.5-vl-7b-qlora"):
        train(config)
    assert not (tmp_path / "big").exists()
