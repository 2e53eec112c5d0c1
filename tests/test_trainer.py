"""The trainer: checkpoints that reload exactly, the 7B construction path on a tiny model of the same class,
configs, export checks, and a fast end-to-end run (SFT, GRPO I and II, prediction) on a demo export."""

import json

import pytest
import torch
from PIL import Image
from transformers import Qwen2_5_VLForConditionalGeneration

from trainer.config import TrainConfig
from trainer.errors import TrainerError
from trainer.fdlinear import FDLinear
from trainer.model import SkinflowQwen2_5_VL, fd_settings, load


def chat_batch(processor, n=2):
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe"}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    images = [Image.new("RGB", (112, 112), (200 - 40 * i, 90, 80)) for i in range(n)]
    return processor(text=[text] * n, images=images, return_tensors="pt", padding=True)


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_a_saved_fdlinear_model_reloads_exactly(tiny_model, tmp_path):
    model, processor = tiny_model(fd=fd_settings(None))
    with torch.no_grad():  # trained-looking gates and language model, so a lost or re-initialised weight shows
        for module in model.modules():
            if isinstance(module, FDLinear):
                torch.nn.init.normal_(module.in_gate.weight)
                torch.nn.init.normal_(module.basis_gate.bias)
        model.lm_head.weight.mul_(1.5)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    again, processor_again = load(tmp_path)
    assert type(again) is SkinflowQwen2_5_VL and type(processor_again).__name__ == "SkinflowProcessor"
    assert sum(isinstance(m, FDLinear) for m in again.modules()) == 6  # 2 vision blocks x 3 MLP linears
    assert any(k.startswith("model.language_model.") for k in again.state_dict())
    assert_same_state(model, again)
    batch = chat_batch(processor)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, again(**batch).logits)


def test_a_pretrained_qwen_gets_fdlinear_on_the_last_blocks_and_starts_unchanged(tiny_model, tmp_path):
    """The 7B preset's construction path, on a tiny model of the same class: plain pretrained weights,
    FDLinear on the MLP linears of the last block(s), outputs unchanged at start, exact reload."""
    plain, processor = tiny_model(fd=None)
    plain.__class__ = Qwen2_5_VLForConditionalGeneration  # what a hub checkpoint is
    plain.save_pretrained(tmp_path / "pretrained")
    processor.save_pretrained(tmp_path / "pretrained")
    patched, processor = load(tmp_path / "pretrained", fd=fd_settings([-1]))
    visual = patched.model.visual
    assert isinstance(visual.blocks[-1].mlp.down_proj, FDLinear) and not isinstance(visual.blocks[0].mlp.down_proj, FDLinear)
    batch = chat_batch(processor)
    with torch.no_grad():
        reference, ours = plain(**batch).logits, patched(**batch).logits
    assert ((ours - reference).norm() / reference.norm()).item() <= 1e-5
    patched.save_pretrained(tmp_path / "ours")
    processor.save_pretrained(tmp_path / "ours")
    again, _ = load(tmp_path / "ours")
    assert_same_state(patched, again)


ONE_GPU_PRESETS = ("qwen2.5-vl-3b-lora", "qwen2.5-vl-7b-lora", "qwen2.5-vl-7b-qlora")


@pytest.mark.parametrize("preset", ONE_GPU_PRESETS)
def test_one_gpu_presets_put_lora_on_the_language_model_train_fdlinear_whole_and_merge_to_an_ordinary_model(
    preset, pretrained_deep, tmp_path
):
    """The construction path of each one-GPU preset on a tiny model of the same class (the real sizes need a GPU:
    benchmarks/gpu.py): LoRA placement, trainable parameters per part, identity at start, merge, reload."""
    import re

    from peft import get_peft_model

    from trainer.config import LORA_TARGETS
    from trainer.model import lora_config

    config = TrainConfig.for_preset(preset)
    assert config.lora and config.gradient_checkpointing and config.fd_layers == tuple(range(-8, 0))
    plain, processor = load(pretrained_deep)
    model, _ = load(pretrained_deep, fd=fd_settings(config.fd_layers, config.fd_targets))
    batch = chat_batch(processor)
    with torch.no_grad():
        reference = plain(**batch).logits
    peft_model = get_peft_model(model, lora_config(model, r=config.lora_r, alpha=config.lora_alpha, dropout=0.0))
    lora_layers = {name.rsplit(".lora_A", 1)[0] for name, _ in peft_model.named_modules() if name.endswith(".lora_A")}
    assert len(lora_layers) == 2 * 7 and all(re.search(LORA_TARGETS + "$", name) for name in lora_layers)
    copies = [m for name, m in peft_model.named_modules() if name.endswith("modules_to_save.default")]
    assert len(copies) == 8 * 3 and all(isinstance(m, FDLinear) for m in copies)
    trainable = {name: p.numel() for name, p in peft_model.named_parameters() if p.requires_grad}
    lora_count = sum(n for name, n in trainable.items() if "lora_" in name)
    fd_count = sum(n for name, n in trainable.items() if "modules_to_save" in name)
    assert lora_count + fd_count == sum(trainable.values())  # nothing else trains: embeddings, lm_head, attention...
    text = plain.config.text_config
    per_layer = sum(
        config.lora_r * (a + b)
        for a, b in [(text.hidden_size, text.hidden_size)] * 2  # q, o
        + [(text.hidden_size, 2 * 32)] * 2  # k, v: 2 key-value heads of 32
        + [(text.hidden_size, text.intermediate_size)] * 2  # gate, up
        + [(text.intermediate_size, text.hidden_size)]  # down
    )
    assert lora_count == text.num_hidden_layers * per_layer
    assert fd_count == sum(p.numel() for m in copies for p in m.parameters())
    with torch.no_grad():
        at_start = peft_model(**batch).logits
    assert ((at_start - reference).norm() / reference.norm()).item() <= 1e-5  # identity at start
    torch.manual_seed(1)
    with torch.no_grad():  # as if trained: adapters and FDLinear gates away from their start
        for name, param in peft_model.named_parameters():
            if "lora_B" in name or ("modules_to_save" in name and "gate" in name):
                param.normal_(0, 0.02)
        trained = peft_model(**batch).logits
    assert ((trained - reference).norm() / reference.norm()).item() > 1e-3
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = peft_model.merge_and_unload()
    with torch.no_grad():
        assert ((merged(**batch).logits - trained).norm() / trained.norm()).item() <= 1e-4
    merged.save_pretrained(tmp_path / "final")
    processor.save_pretrained(tmp_path / "final")
    again, _ = load(tmp_path / "final")
    assert sum(isinstance(m, FDLinear) for m in again.modules()) == 24
    assert_same_state(merged, again)
    if config.quantize_4bit:  # QLoRA merges into a fresh full-precision copy of the base, never into 4-bit weights
        from trainer.model import FOUR_BIT_SKIP, four_bit_config, merge_adapter

        start, _ = load(pretrained_deep, fd=fd_settings(config.fd_layers, config.fd_targets))  # the stage's start
        start.save_pretrained(tmp_path / "base")
        processor.save_pretrained(tmp_path / "base")
        reloaded = merge_adapter(tmp_path / "base", tmp_path / "adapter", dtype=torch.float32)
        assert_same_state(merged, reloaded)
        assert set(four_bit_config().llm_int8_skip_modules) == set(FOUR_BIT_SKIP) == {"visual", "lm_head"}


def test_qlora_is_refused_clearly_without_cuda(grpo_export, tmp_path, pretrained_deep):
    from trainer.train import train

    config = TrainConfig.for_preset(
        "qwen2.5-vl-7b-qlora", export=str(grpo_export), model=str(pretrained_deep), output_dir=str(tmp_path), run_id="q"
    )
    with pytest.raises(TrainerError, match="needs a CUDA GPU and bitsandbytes"):
        train(config)
    assert not (tmp_path / "q" / "initial").exists()  # refused before the model is built


def test_presets_config_files_and_overrides(tmp_path):
    big = TrainConfig.for_preset("qwen2.5-vl-7b")
    assert (big.stage1_learning_rate, big.stage2_learning_rate) == (1e-6, 5e-7)
    assert big.stages == (1, 2) and big.bf16 and big.fd_layers == (-8, -7, -6, -5, -4, -3, -2, -1)
    tiny = TrainConfig.for_preset("tiny")
    assert tiny.stages == (0, 1, 2) and tiny.model is None
    toml = tmp_path / "train.toml"
    toml.write_text('[train]\npreset = "tiny"\nstage1_steps = 7\nk = 3\nfd_layers = [1]\n')
    config = TrainConfig.from_toml(toml, stage1_steps=9)
    assert (config.stage1_steps, config.k, config.fd_layers) == (9, 3, (1,))
    toml.write_text("stage1_stepz = 7\n")
    with pytest.raises(TrainerError, match="unknown setting"):
        TrainConfig.from_toml(toml)
    with pytest.raises(TrainerError, match="unknown preset"):
        TrainConfig.for_preset("gpt-5")
    with pytest.raises(TrainerError, match="multiple of num_generations"):
        TrainConfig.for_preset("tiny", batch_size=6, num_generations=4)
    with pytest.raises(TrainerError, match="stages"):
        TrainConfig.for_preset("tiny", stages=(3,))


def test_missing_or_malformed_exports_are_refused_clearly(tmp_path, grpo_export):
    from trainer.data import load_export

    with pytest.raises(TrainerError, match="does not exist"):
        load_export(tmp_path / "nope")
    (tmp_path / "canonical").mkdir()
    with pytest.raises(TrainerError, match="not a grpo export"):
        load_export(tmp_path / "canonical")
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(grpo_export, broken)
    with (broken / "grpo" / "stage1.jsonl").open("a") as handle:
        handle.write("{not json\n")
    with pytest.raises(TrainerError, match="line 17 is not valid JSON"):
        load_export(broken)


def test_tiny_end_to_end_train_resume_and_predict(grpo_export, tmp_path):
    from trainer.train import train

    config = TrainConfig.for_preset(
        "tiny",
        export=str(grpo_export),
        output_dir=str(tmp_path / "runs"),
        run_id="e2e",
        sft_epochs=1.0,
        stage1_steps=2,
        stage2_steps=2,
        save_steps=1,
        batch_size=4,
        num_generations=2,
        stage1_max_completion_length=16,
        stage2_max_completion_length=8,
    )
    run = train(config)
    assert (run / "model").resolve() == (run / "stage2" / "final").resolve()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in rows} == {0, 1, 2}
    assert any("reward/caption_reward/mean" in r and "kl" in r for r in rows if r["stage"] == 1)
    assert any("reward/diagnosis_reward/std" in r and "learning_rate" in r for r in rows if r["stage"] == 2)
    assert all("seconds" in r and "step" in r for r in rows)
    assert json.loads((run / "progress.json").read_text())["status"] == "done"
    assert json.loads((run / "config.json").read_text())["stage1_steps"] == 2
    # the run predicted what it did not train on (the export's val and test images): the workbench's evidence
    stage1_rows = [json.loads(line) for line in (grpo_export / "grpo" / "stage1.jsonl").read_text().splitlines()]
    held_out = [json.loads(line) for line in (run / "held_out_predictions.jsonl").read_text().splitlines()]
    assert sorted(p["id"] for p in held_out) == sorted(r["id"] for r in stage1_rows if r["split"] in ("val", "test"))
    assert held_out and {p["model_version"] for p in held_out} == {"e2e:stage2"}
    # the stage 2 model is the stage 1 model trained on: different weights, same layers
    stage1, _ = load(run / "stage1" / "final")
    stage2, _ = load(run / "stage2" / "final")
    assert sum(isinstance(m, FDLinear) for m in stage2.modules()) == 6
    assert any(not torch.equal(a, b) for a, b in zip(stage1.state_dict().values(), stage2.state_dict().values(), strict=True))

    # interrupted in stage 2 after its first checkpoint: resume finishes it from there and reruns nothing else
    import shutil

    shutil.rmtree(run / "stage2" / "final")
    shutil.rmtree(run / "stage2" / "checkpoint-2")
    stage1_mtime = (run / "stage1" / "final" / "config.json").stat().st_mtime
    with pytest.raises(TrainerError, match="--resume"):
        train(config)
    train(config, resume=True)
    assert (run / "stage2" / "final" / "config.json").exists()
    assert (run / "stage1" / "final" / "config.json").stat().st_mtime == stage1_mtime
    resumed = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][len(rows) :]
    assert resumed and {r["stage"] for r in resumed} == {2} and min(r["step"] for r in resumed) == 2

    from trainer.predict import predict_to_file

    manifest = tmp_path / "four.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"image": str(grpo_export / r["image"]), "id": r["id"]}) + "\n"
            for r in [json.loads(line) for line in (grpo_export / "grpo" / "stage1.jsonl").read_text().splitlines()][:4]
        )
    )
    out = tmp_path / "predictions.jsonl"
    assert predict_to_file(run, manifest, out, batch_size=2) == 4
    predictions = [json.loads(line) for line in out.read_text().splitlines()]
    for p in predictions:
        scores = [d["score"] for d in p["diagnoses"]]
        assert len(scores) == 6 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0 + 1e-6
        assert p["model_version"] == "e2e:stage2" and isinstance(p["caption_text"], str)
        assert (p["caption"] is None) == (p["caption_error"] is not None)
    assert [p["id"] for p in predictions] == [json.loads(line)["id"] for line in manifest.read_text().splitlines()]

    # `skinflow eval --checkpoint`: predicts the split, then the report
    from typer.testing import CliRunner

    from app.cli import app

    result = CliRunner().invoke(
        app,
        ["eval", "--export", str(grpo_export), "--checkpoint", str(run), "--split", "train", "--out", str(tmp_path / "report")],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    train_rows = [
        r
        for r in (json.loads(line) for line in (grpo_export / "grpo" / "stage2.jsonl").read_text().splitlines())
        if r["split"] == "train"
    ]
    assert report["n_diagnosis"] == len(train_rows) and 0 <= report["headline"]["top6"] <= 1
    assert (tmp_path / "report" / "reliability.png").exists()


def test_tiny_with_lora_trains_adapters_and_fdlinear_only_and_every_stage_reloads_as_an_ordinary_model(grpo_export, tmp_path):
    from typer.testing import CliRunner

    from app.cli import app

    flags = ["--sft-epochs", "2", "--stage1-steps", "2", "--stage2-steps", "2", "--batch-size", "4", "--num-generations", "2"]
    result = CliRunner().invoke(
        app,
        ["train", "--export", str(grpo_export), "--preset", "tiny", "--lora", "--runs", str(tmp_path), "--run-id", "l", *flags],
    )
    assert result.exit_code == 0, result.output
    run = tmp_path / "l"
    assert json.loads((run / "config.json").read_text())["lora"] is True
    initial = load(run / "initial")[0].state_dict()
    previous = initial
    for stage in (0, 1, 2):
        model, _ = load(run / f"stage{stage}" / "final")  # a merged, ordinary checkpoint: config.json, no adapter
        state = model.state_dict()
        assert sum(isinstance(m, FDLinear) for m in model.modules()) == 6
        assert set(state) == set(initial) and not any("lora_" in k or "modules_to_save" in k for k in state)
        if stage == 0:  # what LoRA + modules_to_save trained, and what stayed frozen
            changed = {k for k in state if not torch.equal(state[k], previous[k])}
            assert "model.language_model.layers.0.self_attn.q_proj.weight" in changed  # LoRA, merged
            assert "model.language_model.layers.0.mlp.down_proj.weight" in changed
            assert "model.visual.blocks.0.mlp.up_proj.spectrum" in changed  # FDLinear, trained whole
            frozen = ("model.language_model.embed_tokens.weight", "model.visual.blocks.0.attn.qkv.weight", "lm_head.weight")
            assert not changed & set(frozen)
            assert not any(k.startswith("model.language_model.layers.0.input_layernorm") for k in changed)
        previous = state
    assert (run / "model").resolve() == (run / "stage2" / "final").resolve()
    assert json.loads((run / "progress.json").read_text())["status"] == "done"


def test_vllm_cannot_generate_with_fdlinear_gates():
    with pytest.raises(TrainerError, match="per-image gates"):
        TrainConfig.for_preset("tiny", use_vllm=True)
    assert TrainConfig.for_preset("tiny", use_vllm=True, fdlinear=False).use_vllm


def test_train_refuses_a_bad_export_before_building_anything(tmp_path):
    from trainer.train import train

    with pytest.raises(TrainerError, match="not a grpo export"):
        (tmp_path / "x").mkdir()
        train(TrainConfig.for_preset("tiny", export=str(tmp_path / "x"), output_dir=str(tmp_path / "runs")))
    assert not (tmp_path / "runs").exists()


def test_a_half_written_checkpoint_is_skipped_and_removed_on_resume(tmp_path):
    from trainer.train import _last_checkpoint

    for step, files in (
        (5, ("config.json", "model.safetensors", "trainer_state.json")),
        (10, ("config.json",)),
        (2, ("config.json", "model.safetensors", "trainer_state.json")),
    ):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name in files:
            (folder / name).write_text("{}")
    assert _last_checkpoint(tmp_path) == tmp_path / "checkpoint-5"  # step order, not name order; 10 is half-written
    assert not (tmp_path / "checkpoint-10").exists() and (tmp_path / "checkpoint-2").exists()
    assert _last_checkpoint(tmp_path / "nothing-here") is None


def test_trl_finds_our_architecture_on_the_transformers_module_it_uses():
    """trl resolves a saved model's class by name on `transformers` when it builds GRPO's reference model; the
    module object can be replaced by a later transformers import, so registration must reach the current one."""
    import sys

    import trl.trainer.utils as trl_utils

    from trainer.train import register_architecture

    register_architecture()
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil  # noqa: F401

    assert trl_utils.transformers is sys.modules["transformers"]
    assert trl_utils.transformers.SkinflowQwen2_5_VL.__module__ == "trainer.model"
