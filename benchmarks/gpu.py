"""One-GPU training, measured: for each one-GPU preset, Qwen2.5-VL-3B or -7B built from its published
architecture (trainer/configs/, random weights: no hub) with the preset's FDLinear and LoRA, a few GRPO stage I
steps at the preset's settings (image size, batch, generations, completion length, gradient checkpointing, bf16)
on synthetic images, through the trainer's own code (trainer.train.stage_trainer). Recorded: peak GPU memory
(torch.cuda.max_memory_allocated) beside the planner's estimate (trainer/plan.py), seconds per step and generated
tokens per second. Then FDLinear against nn.Linear in bf16 at the 7B vision MLP shapes (1,296 tokens per image,
4 images), forward and forward + backward.

    .venv/bin/python benchmarks/gpu.py                       # on a CUDA machine: writes its section of RESULTS.md
    .venv/bin/python benchmarks/gpu.py --tiny --device cpu   # the same code on a tiny model (what CI runs)

Random weights generate random text up to the completion limit, so every step generates the longest completions
the preset allows: the step times are the worst case for that length, and the memory peak is the real one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from benchmarks.app import record, write_section  # noqa: E402
from schema.caption import render, validate_caption  # noqa: E402
from schema.fields import FIELD_KEYS  # noqa: E402
from schema.taxonomy import default_taxonomy  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.data import ExportData  # noqa: E402
from trainer.fdlinear import FDLinear  # noqa: E402
from trainer.model import FD_KEY, SkinflowQwen2_5_VL, fd_settings, tiny_config, tiny_processor, train_tokenizer  # noqa: E402

ONE_GPU = ("qwen2.5-vl-3b-lora", "qwen2.5-vl-7b-lora", "qwen2.5-vl-7b-qlora")
INSTRUCTIONS = {
    "caption": "Describe the skin lesion with the 11-field caption schema.",
    "diagnosis": "List up to 6 diagnoses, most likely first.",
}
CAPTION = {"color": ["erythematous"], "shape": ["round"], "lesion_type": ["papule"], "number": "single", "size": "<5 mm"}
TITLE = "One-GPU presets and FDLinear in bf16 (benchmarks/gpu.py)"


def synthetic_export(folder: Path, count: int, size: int) -> ExportData:
    """An in-memory export of `count` noise pictures with one verified caption and label each."""
    rng = np.random.default_rng(0)
    taxonomy = default_taxonomy()
    label = sorted(taxonomy.labels)[0]
    rows1, rows2 = [], []
    for i in range(count):
        name = f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / name)
        caption = validate_caption(CAPTION)
        prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": INSTRUCTIONS["caption"]}]}]
        rows1.append(
            {
                "id": i,
                "image": name,
                "split": "train",
                "prompt": prompt,
                "caption": caption.to_json(),
                "caption_text": render(caption),
            }
        )
        rows2.append({"id": i, "image": name, "split": "train", "prompt": prompt, "diagnosis_key": label})
    weights = {key: 1 / len(FIELD_KEYS) for key in FIELD_KEYS}
    return ExportData(folder, rows1, rows2, weights, "uniform", taxonomy, INSTRUCTIONS)


def build(config: TrainConfig, tiny: bool, device: str):
    """(model, processor): the preset's architecture with random weights and its FDLinear layers, on `device`."""
    from trainer.plan import architecture

    texts = [*INSTRUCTIONS.values(), render(validate_caption(CAPTION))]
    tokenizer = train_tokenizer(texts, vocab_size=400)
    processor = tiny_processor(tokenizer, config.image_size)
    fd = fd_settings(config.fd_layers, config.fd_targets, config.fd_num_bases, config.fd_reduction)
    if tiny:
        arch = tiny_config(tokenizer, fd, vision_depth=8)
    else:  # the published sizes; token ids from our own small tokenizer (they only have to be in range)
        arch = architecture(config.model)
        setattr(arch.vision_config, FD_KEY, fd)
        for name, token in (
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        ):
            setattr(arch, name, tokenizer.convert_tokens_to_ids(token))
        arch.text_config.eos_token_id = arch.text_config.pad_token_id = tokenizer.pad_token_id
    dtype = torch.bfloat16 if config.bf16 else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = SkinflowQwen2_5_VL(arch).to(dtype)
    for module in model.modules():  # FDLinear keeps its spectrum in fp32 whatever the model's dtype
        if isinstance(module, FDLinear):
            module.spectrum.data = module.spectrum.data.float()
    model.generation_config.pad_token_id = model.generation_config.eos_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model, processor


class StepClock(TrainerCallback):
    """Seconds per optimiser step (the first, with compilation and allocator warm-up, is left out by the caller)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.times.append(now - self.start)
        self.start = now


def bench_preset(preset: str, *, tiny: bool, device: str, steps: int, tmp: Path) -> dict:
    from trainer.plan import estimate
    from trainer.train import stage_trainer

    overrides = {"stage1_steps": steps, "logging_steps": 1, "save_steps": 10_000, "use_cpu": device == "cpu"}
    if tiny:  # the same code on a model that fits anywhere
        overrides |= {"image_size": 112, "bf16": False, "batch_size": 4, "num_generations": 2, "stage1_max_completion_length": 16}
    config = TrainConfig.for_preset(preset, **overrides)
    if config.quantize_4bit and device == "cpu":
        return {"preset": preset, "skipped": "4-bit loading needs CUDA and bitsandbytes"}
    model, processor = build(config, tiny, "cpu" if config.quantize_4bit else device)
    if config.quantize_4bit:  # the real path: a bf16 checkpoint loaded with the language model in 4-bit
        from trainer.model import load
        from trainer.train import _load_options

        model.save_pretrained(tmp / "base")
        processor.save_pretrained(tmp / "base")
        del model
        model, processor = load(tmp / "base", device_map={"": 0}, **_load_options(config))
    data = synthetic_export(tmp, config.batch_size * 2, config.image_size)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer = stage_trainer(config, data, 1, model, processor, tmp / preset)
    clock = StepClock()
    trainer.add_callback(clock)
    trainer.train()
    step_s = statistics.median(clock.times[1:] or clock.times)
    tokens = config.batch_size * config.stage1_max_completion_length  # random weights: every completion runs to the limit
    peak = torch.cuda.max_memory_allocated() / 1024**3 if device == "cuda" else None
    planned = None if tiny else estimate(config).total / 1024**3
    del trainer, model
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"preset": preset, "step_s": step_s, "tokens_per_s": tokens / step_s, "peak_gb": peak, "planned_gb": planned}


def bench_fdlinear(device: str, repeats: int) -> list[dict]:
    """FDLinear vs nn.Linear in bf16 at the 7B vision MLP shapes: 4 images of 1,296 tokens."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    rows = []
    for fan_in, fan_out in ((1280, 3420), (3420, 1280)):
        linear = nn.Linear(fan_in, fan_out, device=device, dtype=dtype)
        layer = FDLinear.from_linear(linear)
        x = torch.randn(4, 1296, fan_in, device=device, dtype=dtype, requires_grad=False)

        def timed(fn) -> float:
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            samples = []
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                if device == "cuda":
                    torch.cuda.synchronize()
                samples.append(time.perf_counter() - start)
            return statistics.median(samples)

        def train_step(module):
            module.zero_grad(set_to_none=True)
            module(x).float().sum().backward()

        with torch.no_grad():
            forward = (timed(lambda: linear(x)), timed(lambda: layer(x)))
        backward = (timed(lambda: train_step(linear)), timed(lambda: train_step(layer)))
        rows.append({"shape": f"{fan_in}->{fan_out}", "forward": forward, "train": backward})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny model of the same class (CI, any machine)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--presets", nargs="*", default=list(ONE_GPU))
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA GPU here: run with --tiny --device cpu, or on a machine with a GPU")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            folder = Path(tmp) / preset
            folder.mkdir()
            results.append(bench_preset(preset, tiny=args.tiny, device=args.device, steps=args.steps, tmp=folder))
            print(json.dumps(results[-1]), flush=True)
    fd_rows = bench_fdlinear(args.device, args.repeats if not args.tiny else 2)
    for row in fd_rows:
        print(json.dumps(row), flush=True)
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    lines = [
        f"{device_name}; {'tiny model of the same class' if args.tiny else 'published 3B/7B architectures, random weights'}; "
        f"{args.steps} GRPO stage I steps per preset at its settings (the first left out of the step time).",
        "",
        "| preset | peak GB (measured) | planned GB (trainer/plan.py) | measured / planned | s per step | generated tokens/s |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['preset']} | {r['skipped']} | | | | |")
            continue
        ratio = r["peak_gb"] / r["planned_gb"] if r["peak_gb"] and r["planned_gb"] else None
        cells = [
            f"{r['peak_gb']:.1f}" if r["peak_gb"] else "n/a (CPU)",
            f"{r['planned_gb']:.1f}" if r["planned_gb"] else "n/a (tiny)",
            f"{ratio:.2f}" if ratio else "",
            f"{r['step_s']:.2f}",
            f"{r['tokens_per_s']:.0f}",
        ]
        lines.append(f"| {r['preset']} | " + " | ".join(cells) + " |")
        if ratio:
            record(f"GPU {r['preset']}: peak memory measured / planned", ratio, "ratio", None, ratio, "for information", None)
    lines += ["", "| FDLinear vs nn.Linear, 4 x 1,296 tokens | forward ratio | forward + backward ratio |", "|---|---|---|"]
    for row in fd_rows:
        lines.append(
            f"| {row['shape']} | {row['forward'][1] / row['forward'][0]:.2f} | {row['train'][1] / row['train'][0]:.2f} |"
        )
    print("\n".join(lines))
    if args.device == "cuda" and not args.tiny:
        write_section(TITLE, lines)


if __name__ == "__main__":
    main()
