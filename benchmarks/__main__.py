"""Every benchmark the issues asked for, one table: `python -m benchmarks` (or `make bench`).

Each benchmark still runs alone (`python benchmarks/<name>.py`) and rewrites its own section of
benchmarks/RESULTS.md; this runs them in turn with their defaults, prints one table (measure, value, floor
or peer, ratio, goal, met or not) and writes it as the Summary section at the top of RESULTS.md, with the
date and the machine. `--only export fdlinear` runs a subset. labelstudio_import needs a Label Studio
server and runs only when LABEL_STUDIO_URL is set (`bash .ci/labelstudio .venv/bin/python -m benchmarks
--only labelstudio_import`); bucket needs an S3-compatible server and runs only when SKINFLOW_TEST_S3 is set
(`bash .ci/seaweedfs .venv/bin/python -m benchmarks --only bucket`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.app import RECORDED, RESULTS, commit_id  # noqa: E402

ORDER = (
    "ingest",
    "csv_import",
    "app",
    "browser",
    "drafting",
    "export",
    "fdlinear",
    "train_tiny",
    "ablation",
    "suggestions",
    "labelstudio_import",
    "bucket",
)
NEEDS = {"labelstudio_import": "LABEL_STUDIO_URL", "bucket": "SKINFLOW_TEST_S3"}  # a server the benchmark runs against


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _number(value) -> str:
    if value is None:
        return ""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=ORDER, help="run these benchmarks only")
    args = parser.parse_args()
    chosen = args.only or [name for name in ORDER if os.environ.get(NEEDS.get(name, "PATH"))]
    failures = []
    for name in chosen:
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        argv = sys.argv
        sys.argv = [f"benchmarks/{name}.py"]  # each benchmark with its own defaults
        try:
            importlib.import_module(f"benchmarks.{name}").main()
        except Exception as e:  # noqa: BLE001 - one broken benchmark must not hide the others' numbers
            traceback.print_exc()
            failures.append(name)
            RECORDED.append(
                {
                    "measure": f"{name}: FAILED ({type(e).__name__})",
                    "value": None,
                    "unit": "",
                    "reference": None,
                    "ratio": None,
                    "goal": "",
                    "met": False,
                }
            )
        finally:
            sys.argv = argv
        print(f"== {name} took {time.perf_counter() - start:.0f} s", flush=True)

    header = ["measure", "value", "unit", "floor or peer", "ratio", "goal", "met"]
    rows = [
        [
            r["measure"],
            _number(r["value"]),
            r["unit"],
            _number(r["reference"]),
            _number(r["ratio"]),
            r["goal"],
            "" if r["met"] is None else ("yes" if r["met"] else "NO"),
        ]
        for r in RECORDED
    ]
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(*header)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
    except ImportError:
        for row in rows:
            print(" | ".join(row))
    lines = [
        f"Run of `python -m benchmarks` ({', '.join(chosen)}) at commit {commit_id()} on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; "
        f"{os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}. Details in the sections below.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = text.find("## Summary")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + text[end + 1 if end >= 0 else len(text) :]
    head, _, rest = text.partition("\n## ")
    summary = "\n".join(["## Summary (python -m benchmarks)", "", *lines, ""])
    RESULTS.write_text(head.rstrip() + "\n\n" + summary + ("\n## " + rest if rest else ""))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
