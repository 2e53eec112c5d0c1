"""One-GPU training, measured: for each one-GPU preset, Qwen2.5-VL-3B or -7B built from its published
architecture (trainer/configs/, random weights: no hub) with the preset's FDLinear and LoRA, a few GRPO stage I
steps at the preset's settings (image size, batch, generations, completion length, gradient checkpointing, bf16)
on synthetic images, through the trainer's own code (trainer.train.stage_trainer). Recorded: peak GPU memory,
allocated and reserved (torch.cuda.max_memory_allocated / _reserved), beside the planner's estimate
(trainer/plan.py: allocated is compared with the plan without its context-and-fragmentation share, reserved with
the whole plan), seconds per step and generated tokens per second. And FDLinear against nn.Linear in bf16 at the
7B vision MLP shapes (1,296 tokens per image, 4 images), forward and forward + backward.

Made for a one-shot run on a lent GPU (a 10-minute slot):
- checks first, before anything is built: a CUDA build of torch (a box set up with the pinned torch from PyPI's
  CPU index has none: the error says how to install the CUDA build), bitsandbytes for the QLoRA preset (skipped,
  with the reason, when missing), flash-attn (optional, reported);
- the cheapest informative parts first: the FDLinear bf16 table, the 3B LoRA steps, the 7B QLoRA steps, then the
  7B LoRA steps;
- each part in its own process (no reference cycle or allocator cache of one counts in the next one's peak), its
  result appended to a JSON lines file as soon as it is measured, so a timeout or a failure keeps what was done;
- --budget-s (default 540) bounds the whole run: each part gets what is left, and a part with less than
  --min-part-s left is recorded as not run.

    make bench-gpu                                            # on a CUDA machine: writes its section of RESULTS.md
    .venv/bin/python benchmarks/gpu.py --tiny --device cpu    # the same code on a tiny model (the slow suite)

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
from functools import partial
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

ONE_GPU = ("qwen2.5-vl-3b-lora", "qwen2.5-vl-7b-qlora", "qwen2.5-vl-7b-lora")  # cheapest informative first
FDLINEAR = "fdlinear"
CUDA_TORCH = "pip install --force-reinstall torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
INSTRUCTIONS = {
    "caption": "Describe the skin lesion with the 11-field caption schema.",
    "diagnosis": "List up to 6 diagnoses, most likely first.",
}
CAPTION = {"color": ["erythematous"], "shape": ["round"], "lesion_type": ["papule"], "number": "single", "size": "<5 mm"}
TITLE = "One-GPU presets and FDLinear in bf16 (benchmarks/gpu.py)"
GB = 1024**3


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
    from trainer.plan import OVERHEAD, estimate
    from trainer.train import stage_trainer

    overrides = {"stage1_steps": steps, "logging_steps": 1, "save_steps": 10_000, "use_cpu": device == "cpu"}
    if tiny:  # the same code on a model that fits anywhere
        overrides |= {"image_size": 112, "bf16": False, "batch_size": 4, "num_generations": 2, "stage1_max_completion_length": 16}
    config = TrainConfig.for_preset(preset, **overrides)
    if config.quantize_4bit and (device == "cpu" or not has_module("bitsandbytes")):
        return {"preset": preset, "skipped": "4-bit loading needs CUDA and bitsandbytes (pip install -e '.[qlora]')"}
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
    cuda = device == "cuda"
    plan = None if tiny else estimate(config)
    return {
        "preset": preset,
        "step_s": step_s,
        "tokens_per_s": tokens / step_s,
        "allocated_gb": torch.cuda.max_memory_allocated() / GB if cuda else None,
        "reserved_gb": torch.cuda.max_memory_reserved() / GB if cuda else None,
        "planned_gb": plan.total / GB if plan else None,
        "planned_without_overhead_gb": (plan.total - plan.parts[OVERHEAD]) / GB if plan else None,
    }


def bench_fdlinear(device: str, repeats: int, tokens: int = 1296) -> list[dict]:
    """FDLinear vs nn.Linear in bf16 at the 7B vision MLP shapes: 4 images of `tokens` tokens (1,296: 448 px)."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    rows = []
    for fan_in, fan_out in ((1280, 3420), (3420, 1280)):
        linear = nn.Linear(fan_in, fan_out, device=device, dtype=dtype)
        layer = FDLinear.from_linear(linear)
        x = torch.randn(4, tokens, fan_in, device=device, dtype=dtype, requires_grad=False)

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

        def train_step(module, x=x):
            module.zero_grad(set_to_none=True)
            module(x).float().sum().backward()

        with torch.no_grad():
            forward = (timed(partial(linear, x)), timed(partial(layer, x)))
        backward = (timed(partial(train_step, linear)), timed(partial(train_step, layer)))
        rows.append({"shape": f"{fan_in}->{fan_out}", "forward": forward, "train": backward})
    return rows


def has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def preflight(device: str) -> dict:
    """What this machine can run, found before anything is built; raises SystemExit where nothing can run."""
    found = {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "bitsandbytes": has_module("bitsandbytes"),
        "flash_attn": has_module("flash_attn"),
    }
    if device == "cuda" and torch.version.cuda is None:
        raise SystemExit(f"torch {torch.__version__} is a CPU build: install the CUDA build first ({CUDA_TORCH})")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU visible here: run with --tiny --device cpu, or on a machine with a GPU")
    if device == "cuda":
        found["gpu"] = torch.cuda.get_device_name(0)
        found["gpu_memory_gb"] = torch.cuda.get_device_properties(0).total_memory / GB
    return found


def run_part(part: str, args) -> dict:
    """One part, measured in this process (the child's side)."""
    if part == FDLINEAR:
        return {"part": FDLINEAR, "rows": bench_fdlinear(args.device, args.repeats, args.fd_tokens)}
    with tempfile.TemporaryDirectory() as tmp:
        return {"part": part, **bench_preset(part, tiny=args.tiny, device=args.device, steps=args.steps, tmp=Path(tmp))}


def run_in_child(part: str, args, seconds: float) -> dict:
    """A part in its own process, given `seconds`; what it measured, or why it did not finish."""
    import subprocess

    command = [sys.executable, __file__, "--child", part, "--device", args.device, "--steps", str(args.steps)]
    command += ["--repeats", str(args.repeats), "--fd-tokens", str(args.fd_tokens), *(["--tiny"] if args.tiny else [])]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds)
    except subprocess.TimeoutExpired:
        return {"part": part, "error": f"timed out after {seconds:.0f} s (the budget left for it)"}
    lines = [line for line in done.stdout.splitlines() if line.startswith('{"part"')]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"part": part, "error": f"exit {done.returncode}: {' / '.join(tail)[-600:]}"}
    return {**json.loads(lines[-1]), "seconds": time.perf_counter() - start}


def report(results: list[dict], found: dict, args) -> list[str]:
    device_name = found.get("gpu", "CPU")
    lines = [
        f"{device_name}; torch {found['torch']} (CUDA {found['torch_cuda']}), bitsandbytes "
        f"{'yes' if found['bitsandbytes'] else 'no'}, flash-attn {'yes' if found['flash_attn'] else 'no'}; "
        f"{'tiny model of the same class' if args.tiny else 'published 3B/7B architectures, random weights'}; "
        f"{args.steps} GRPO stage I steps per preset at its settings (the first left out of the step time); each "
        "part in its own process. Allocated is compared with the plan without its context-and-fragmentation share, "
        "reserved with the whole plan.",
        "",
        "| preset | allocated GB | reserved GB | planned GB (without overhead) | allocated / planned | reserved / "
        "planned | s per step | generated tokens/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    fd_rows = []
    for r in results:
        if r["part"] == FDLINEAR:
            fd_rows = r.get("rows", [])
            if "error" in r:
                lines.append(f"| FDLinear table | {r['error']} | | | | | | |")
            continue
        if "skipped" in r or "error" in r:
            lines.append(f"| {r['part']} | {r.get('skipped') or r.get('error')} | | | | | | |")
            continue

        def gb(value) -> str:
            return f"{value:.1f}" if value else "n/a"

        alloc_ratio = r["allocated_gb"] / r["planned_without_overhead_gb"] if r["allocated_gb"] and r["planned_gb"] else None
        reserved_ratio = r["reserved_gb"] / r["planned_gb"] if r["reserved_gb"] and r["planned_gb"] else None
        lines.append(
            f"| {r['part']} | {gb(r['allocated_gb'])} | {gb(r['reserved_gb'])} | {gb(r['planned_gb'])} "
            f"({gb(r['planned_without_overhead_gb'])}) | {f'{alloc_ratio:.2f}' if alloc_ratio else ''} | "
            f"{f'{reserved_ratio:.2f}' if reserved_ratio else ''} | {r['step_s']:.2f} | {r['tokens_per_s']:.0f} |"
        )
        if reserved_ratio:
            record(
                f"GPU {r['part']}: reserved peak / planned",
                reserved_ratio,
                "ratio",
                None,
                reserved_ratio,
                "for information",
                None,
            )
    lines += ["", f"| FDLinear vs nn.Linear, 4 x {args.fd_tokens:,} tokens | forward ratio | forward + backward ratio |"]
    lines += ["|---|---|---|"]
    for row in fd_rows:
        lines.append(
            f"| {row['shape']} | {row['forward'][1] / row['forward'][0]:.2f} | {row['train'][1] / row['train'][0]:.2f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny model of the same class (CI, any machine)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--parts", nargs="*", default=[FDLINEAR, *ONE_GPU], help="in this order (default: cheapest first)")
    parser.add_argument("--fd-tokens", type=int, default=1296, help="tokens per image in the FDLinear table")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--budget-s", type=float, default=540.0, help="the whole run, every part included")
    parser.add_argument("--min-part-s", type=float, default=30.0, help="a part with less time left is not started")
    parser.add_argument("--results", type=Path, default=None, help="JSON lines, one per part (default: a new file)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # one part, in this process
    args = parser.parse_args()
    if args.tiny:
        args.repeats = min(args.repeats, 2)
    if args.child:
        print(json.dumps(run_part(args.child, args)), flush=True)
        return
    deadline = time.perf_counter() + args.budget_s
    found = preflight(args.device)
    print(json.dumps({"preflight": found}), flush=True)
    results_file = args.results or ROOT / "benchmarks" / f"gpu-results-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    results_file.parent.mkdir(parents=True, exist_ok=True)
    results = []
    for part in args.parts:
        left = deadline - time.perf_counter()
        if left < args.min_part_s:
            result = {"part": part, "error": f"not run: {left:.0f} s of the budget left"}
        else:
            result = run_in_child(part, args, left)
        results.append(result)
        with results_file.open("a", encoding="utf-8") as out:  # kept whatever happens to the next part
            out.write(json.dumps(result) + "\n")
        print(json.dumps(result), flush=True)
    lines = report(results, found, args)
    print("\n".join(lines))
    print(f"results: {results_file}")
    if args.device == "cuda" and not args.tiny:
        write_section(TITLE, lines)
    if any("error" in r for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
