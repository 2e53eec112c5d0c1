"""The paper's ablation on the synthetic demo set: `skinflow ablate` with the tiny preset.

Builds the demo workbench (300 images, half verified, seed 0), exports it (grpo), runs the four variants
(full, no-fdlinear, no-stage1, baseline) with 3 seeds each at the tiny preset's budget, and writes the
report's tables into benchmarks/RESULTS.md. Resumable: rerun with the same --work folder.

    .venv/bin/python benchmarks/ablation.py [--seeds 3] [--n 300] [--work /tmp/skinflow-ablation]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.app import record, write_section  # noqa: E402
from curation.export.dataset import export_dataset  # noqa: E402
from curation.ops.demo import build_demo  # noqa: E402
from curation.store.auth import get_actor  # noqa: E402
from curation.store.db import open_workbench  # noqa: E402
from curation.store.settings import Settings  # noqa: E402
from trainer.ablate import AblationConfig, run_ablation  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/skinflow-ablation"))
    args = parser.parse_args()
    export = args.work / "export"
    if not (export / "manifest.json").exists():
        wb = open_workbench(Settings.load(environ={}, home=args.work / "wb"))
        build_demo(wb, None, n=args.n, seed=0)
        export_dataset(wb, get_actor(wb, "admin"), export, formats=("grpo",))
        wb.close()
    report = run_ablation(
        AblationConfig(export=str(export), out=str(args.work / "ablation"), seeds=tuple(range(args.seeds))),
        on_progress=lambda line: print(line, flush=True),
    )
    variants = report["variants"]
    # from the runs' own records, so a rerun that only reads finished runs back reports the same
    trained_min = sum(v["train_s"]["mean"] * len(v["seeds"]) for v in variants.values()) / 60
    for name, variant in variants.items():
        top1 = variant["metrics"]["top1"]
        vs = variant.get("vs_reference")
        record(
            f"ablation: {name} top-1 (mean of {args.seeds} seeds)",
            round(top1["mean"], 3),
            "",
            None,
            round(vs["top1"]["difference"], 3) if vs else None,
            "for information (ratio column: difference vs full)",
            None,
        )
    table = (args.work / "ablation" / "report.md").read_text(encoding="utf-8").splitlines()
    body = [line for line in table[1:] if not line.startswith("![")]
    write_section(
        "Ablation on the demo set (benchmarks/ablation.py, `skinflow ablate`)",
        [
            f"Demo set: {args.n} synthetic images, seed 0; tiny preset defaults (SFT 30 epochs, stage I 40 steps, stage II 40 "
            f"steps, batch 8, 4 generations); seeds 0..{args.seeds - 1}; evaluated on the export's test split. "
            f"Training time over all {sum(len(v['seeds']) for v in variants.values())} runs: {trained_min:.1f} min on this "
            "machine "
            "(prediction and evaluation not included; a resumed run counts only its last part).",
            *body,
        ],
    )


if __name__ == "__main__":
    main()
