"""Drafting throughput: 1,000 images at concurrency 32 against a chat-completions server with
200 ms latency (tests/fake_llm.py on 127.0.0.1). Efficiency = ideal time / measured time, where
ideal = images x latency / concurrency (perfect overlap, zero client cost). Goal >= 0.90.

    .venv/bin/python benchmarks/drafting.py [--n 1000] [--concurrency 32] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.app import record, write_section  # noqa: E402
from curation.assist.drafting import draft_images  # noqa: E402
from curation.ingest.folder import import_folder  # noqa: E402
from curation.store.auth import add_user  # noqa: E402
from curation.store.db import open_workbench  # noqa: E402
from curation.store.settings import Settings  # noqa: E402

GOAL = 0.90


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs = [run_once(args) for _ in range(args.repeats)]
    efficiencies = sorted(r[0] for r in runs)
    median = statistics.median(efficiencies)
    seconds = statistics.median(r[1] for r in runs)
    rate = args.n / seconds
    ideal = args.n * args.latency / args.concurrency
    print(
        f"median of {args.repeats}: efficiency {median:.2f} (range {efficiencies[0]:.2f}-{efficiencies[-1]:.2f}; "
        f"{'meets' if median >= GOAL else 'misses'} goal {GOAL}), {rate:.1f} requests/s"
    )
    record(
        f"LLM drafting efficiency ({args.n} images, {args.latency * 1000:.0f} ms latency)",
        median,
        "of ideal",
        ideal,
        median,
        f">= {GOAL}",
        median >= GOAL,
    )
    write_section(
        "LLM drafting (benchmarks/drafting.py)",
        [
            f"{args.n} images (512x384 JPEG), concurrency {args.concurrency}, fake chat-completions server (its own process) on "
            f"127.0.0.1 with {args.latency * 1000:.0f} ms latency; the real openai client; every draft validated and committed. "
            f"{args.repeats} runs on a 2-core machine that also runs the server.",
            "",
            "| median s | ideal s | efficiency median (range) | goal | requests/s | max in flight |",
            "|---|---|---|---|---|---|",
            f"| {seconds:.2f} | {ideal:.2f} | {median:.2f} ({efficiencies[0]:.2f}-{efficiencies[-1]:.2f}) | >= {GOAL} | "
            f"{rate:.1f} | "
            f"{max(r[2] for r in runs)} |",
            "",
            "The client is CPU-bound on one core (the event loop: httpx and the SDK cost about 4-5 ms per request) "
            "while the server uses the other; the spread between runs is this shared machine's noise.",
        ],
    )


def run_once(args) -> tuple[float, float, int]:
    """(efficiency, seconds, max in flight) of one drafting run against a fresh server process."""
    # the server runs in its own process, as a real one would: sharing this process's GIL would slow the client
    server_process = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_llm", "--latency", str(args.latency)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    url = server_process.stdout.readline().strip()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "images"
            folder.mkdir()
            rng = np.random.default_rng(0)
            for i in range(args.n):  # distinct pictures (noise: no two are duplicates), 512 px like a downsized photo
                pixels = rng.integers(90, 200, (384, 512, 3), dtype=np.uint8)
                PILImage.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=85)
            wb = open_workbench(Settings.load(environ={}, home=Path(tmp) / "wb", llm_base_url=url, llm_model="fake-vlm"))
            admin, _ = add_user(wb, None, "admin", "admin", "bench-password")
            import_folder(wb, admin, folder)
            report = draft_images(wb, admin, concurrency=args.concurrency)
            wb.close()
        stats = json.loads(urllib.request.urlopen(url.removesuffix("/v1") + "/stats", data=b"{}").read())
    finally:
        server_process.terminate()  # never leave the server running, even when the run fails
        server_process.wait(timeout=10)
    assert report.done == args.n, report.summary()
    ideal = args.n * args.latency / args.concurrency
    efficiency = ideal / report.seconds
    print(
        f"{args.n} images, concurrency {args.concurrency}, latency {args.latency * 1000:.0f} ms: {report.seconds:.2f} s "
        f"(ideal {ideal:.2f} s), efficiency {efficiency:.2f}, {args.n / report.seconds:.1f} requests/s, "
        f"max in flight {stats['max_in_flight']}"
    )
    return efficiency, report.seconds, stats["max_in_flight"]


if __name__ == "__main__":
    main()
