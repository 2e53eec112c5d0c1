"""benchmarks/gpu.py runs its own code path on a tiny model on the CPU, and keeps what it measured when a part fails
or its time budget runs out."""

import json

import pytest


@pytest.mark.slow  # GRPO steps through the real trainer code on a tiny model: about a minute
def test_the_gpu_benchmark_runs_its_code_on_a_tiny_model_on_the_cpu():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "benchmarks/gpu.py", "--tiny", "--device", "cpu", "--steps", "2", "--repeats", "1"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"part"')]
    trained = {r["part"]: r for r in rows}
    assert list(trained) == ["fdlinear", "qwen2.5-vl-3b-lora", "qwen2.5-vl-7b-qlora", "qwen2.5-vl-7b-lora"]
    assert "4-bit" in trained["qwen2.5-vl-7b-qlora"]["skipped"]  # needs CUDA: said, not faked
    for preset in ("qwen2.5-vl-3b-lora", "qwen2.5-vl-7b-lora"):
        assert trained[preset]["step_s"] > 0 and trained[preset]["tokens_per_s"] > 0
    shapes = trained["fdlinear"]["rows"]
    assert [r["shape"] for r in shapes] == ["1280->3420", "3420->1280"] and all(min(r["train"]) > 0 for r in shapes)
    assert "| FDLinear vs nn.Linear" in result.stdout


@pytest.mark.slow  # four processes that import torch and transformers: about 45 s
def test_the_gpu_benchmark_keeps_what_it_measured_when_a_part_fails_or_the_budget_runs_out(tmp_path):
    """Each part runs in its own process and is appended to the results file at once: a failing part (an unknown
    preset here) leaves the parts before and after it written, and parts past the budget are recorded as not run."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]

    def gpu_bench(*args, results):
        command = [sys.executable, "benchmarks/gpu.py", "--tiny", "--device", "cpu", "--repeats", "1", "--fd-tokens", "8"]
        return subprocess.run([*command, "--results", str(results), *args], cwd=root, capture_output=True, text=True, timeout=300)

    results = tmp_path / "gpu.jsonl"
    done = gpu_bench("--parts", "fdlinear", "no-such-preset", "fdlinear", results=results)
    assert done.returncode == 1, done.stderr[-2000:]  # a part failed: said by the exit code, after writing the rest
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert [line["part"] for line in lines] == ["fdlinear", "no-such-preset", "fdlinear"]
    assert "unknown preset 'no-such-preset'" in lines[1]["error"]
    assert all(len(line["rows"]) == 2 for line in (lines[0], lines[2]))
    assert "| no-such-preset | exit 1" in done.stdout and "| 1280->3420 |" in done.stdout
    late = gpu_bench("--parts", "fdlinear", "qwen2.5-vl-3b-lora", "--budget-s", "0", results=tmp_path / "late.jsonl")
    assert late.returncode == 1
    assert [json.loads(line)["error"].startswith("not run") for line in (tmp_path / "late.jsonl").read_text().splitlines()] == [
        True,
        True,
    ]
