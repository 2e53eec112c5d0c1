"""App and queue speed at scale.

1. Annotate page server-side round trip (AppTest: render the page, then click Submit and render the
   next image) with 100,000 images in the database. Goal: <= 200 ms.
2. Next-item queue query (curation.labelling.queue.next_item: find the next image and lease it) with
   1,000,000 images and 20 annotators working at once. Goal: p95 <= 5 ms.

    .venv/bin/python benchmarks/app.py [--app-images 100000] [--queue-images 1000000]

Prints measured/goal ratios and rewrites its sections of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text  # noqa: E402

from curation.labelling.queue import next_item, skip  # noqa: E402
from curation.ops.demo import build_demo  # noqa: E402
from curation.store.auth import add_user, get_actor  # noqa: E402
from curation.store.db import open_workbench  # noqa: E402
from curation.store.settings import Settings  # noqa: E402
from curation.store.workflow import update_workflow_settings  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")
APP = Path(__file__).resolve().parents[1] / "app" / "ui" / "main.py"


def bulk_images(wb, n: int, template_path: str) -> None:
    """n pending image rows pointing at one real stored file (the page needs a picture to show)."""
    now = "2026-11-22 00:00:00"
    with wb.engine.begin() as connection:
        start = connection.execute(text("SELECT coalesce(max(id), 0) FROM images")).scalar() + 1
        batch = []
        for i in range(start, start + n):
            batch.append({"id": i, "sha": f"{i:064x}", "path": template_path, "now": now})
            if len(batch) == 50_000:
                _insert(connection, batch)
                batch = []
        if batch:
            _insert(connection, batch)


def _insert(connection, batch) -> None:
    connection.execute(
        text(
            "INSERT INTO images (id, sha256, file_path, source, source_ref, meta, status, created_at, diagnosis_key, "
            "fitzpatrick, width, height) "
            "VALUES (:id, :sha, :path, 'bench', '', '{}', 'pending', :now, 'psoriasis', 3, 256, 256)"
        ),
        batch,
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bench_app(n_images: int, rounds: int) -> dict:
    from streamlit.testing.v1 import AppTest

    with tempfile.TemporaryDirectory() as home:
        os.environ["SKINFLOW_HOME"] = home
        wb = open_workbench(Settings.load())
        build_demo(wb, None, n=20, seed=0, verified_fraction=0.0, annotated_fraction=0.0)
        admin, annotator = get_actor(wb, "admin"), get_actor(wb, "annotator")
        update_workflow_settings(wb, admin, gold_rate=0.0)
        with wb.engine.connect() as c:
            template = c.execute(text("SELECT file_path FROM images LIMIT 1")).scalar()
        bulk_images(wb, n_images - 20, template)
        at = AppTest.from_file(str(APP), default_timeout=60)
        at.session_state["actor"] = annotator
        at.session_state["login_at"] = time.time()
        at.run()
        render, submit = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            at.run()
            render.append(time.perf_counter() - start)
            image_id = at.session_state["annotate_item"]["image_id"]
            button = at.button(key=f"a-{image_id}-0-submit")
            start = time.perf_counter()
            button.click().run()
            submit.append(time.perf_counter() - start)
            assert at.session_state["annotate_item"]["image_id"] != image_id, "submit did not move on"
        wb.close()
    return {
        "render_p50": statistics.median(render),
        "submit_p50": statistics.median(submit),
        "submit_p95": percentile(submit, 0.95),
    }


def bench_queue(n_images: int, annotators: int, rounds: int) -> dict:
    with tempfile.TemporaryDirectory() as home:
        wb = open_workbench(Settings.load(environ={}, home=Path(home)))
        admin, _ = add_user(wb, None, "admin", "admin", "bench-password")
        update_workflow_settings(wb, admin, gold_rate=0.0)
        start = time.perf_counter()
        bulk_images(wb, n_images, "none.jpg")
        load_s = time.perf_counter() - start
        people = [add_user(wb, admin, f"ann{i}", "annotator", "bench-password")[0] for i in range(annotators)]
        timings = {"sequential": [], "random": []}
        for strategy, values in timings.items():
            for _ in range(rounds):
                for person in people:  # everyone holds a lease: the query has to step over the others'
                    begin = time.perf_counter()
                    item = next_item(wb, person, strategy=strategy)
                    values.append(time.perf_counter() - begin)
                    skip(wb, person, item.image_id)
        wb.close()
    return {
        "load_s": load_s,
        **{f"{k}_p50": statistics.median(v) for k, v in timings.items()},
        **{f"{k}_p95": percentile(v, 0.95) for k, v in timings.items()},
    }


RECORDED: list[dict] = []  # rows for the one table `python -m benchmarks` prints


def record(
    measure: str, value: float, unit: str, reference: float | None, ratio: float | None, goal: str, met: bool | None
) -> None:
    """One row of the suite's table: the measured value, its floor or peer, their ratio, the goal, met or not
    (None: for information)."""
    RECORDED.append(
        {"measure": measure, "value": value, "unit": unit, "reference": reference, "ratio": ratio, "goal": goal, "met": met}
    )


def commit_id() -> str:
    """The commit the numbers were measured at, "+changes" when the working tree differed from it (RESULTS.md
    itself aside: each run rewrites it), "unknown" outside a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    changed = [line for line in status.stdout.splitlines() if not line.endswith("benchmarks/RESULTS.md")]
    return head.stdout.strip() + ("+changes" if changed else "")


def write_section(title: str, lines: list[str]) -> None:
    """Replace the section `title` of RESULTS.md with `lines`, stamped with the commit and the time of the run."""
    stamp = f"_Measured at commit {commit_id()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC._"
    lines = [*lines, "", stamp]
    text_ = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = text_.find(f"## {title}")
    if start >= 0:
        end = text_.find("\n## ", start + 1)
        text_ = text_[:start] + text_[end + 1 if end >= 0 else len(text_) :]
    RESULTS.write_text(text_.rstrip() + "\n\n" + "\n".join([f"## {title}", "", *lines, ""]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app-images", type=int, default=100_000)
    parser.add_argument("--queue-images", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    app = bench_app(args.app_images, args.rounds)
    ratio = 0.200 / app["submit_p95"]
    print(
        f"annotate round trip at {args.app_images:,} images: render p50 {app['render_p50'] * 1000:.0f} ms, "
        f"submit+next p50 {app['submit_p50'] * 1000:.0f} ms, p95 {app['submit_p95'] * 1000:.0f} ms; "
        f"goal 200 ms -> ratio goal/measured {ratio:.2f} ({'meets' if ratio >= 1 else 'misses'})"
    )
    record(
        f"annotate round trip p95 at {args.app_images:,} images",
        app["submit_p95"] * 1000,
        "ms",
        200,
        ratio,
        "<= 200 ms (goal/measured >= 1)",
        ratio >= 1,
    )
    write_section(
        "Annotate page round trip (benchmarks/app.py)",
        [
            f"{args.app_images:,} images; AppTest, logged-in annotator, {args.rounds} rounds; server side only (no browser).",
            "",
            "| measure | p50 ms | p95 ms | goal | goal/measured |",
            "|---|---|---|---|---|",
            f"| render the page | {app['render_p50'] * 1000:.0f} | | | |",
            f"| click Submit, store, render the next image | {app['submit_p50'] * 1000:.0f} | {app['submit_p95'] * 1000:.0f} "
            f"| <= 200 | {ratio:.2f} |",
        ],
    )

    queue = bench_queue(args.queue_images, 20, 5)
    rows = []
    for strategy in ("sequential", "random"):
        p95 = queue[f"{strategy}_p95"]
        r = 0.005 / p95
        rows.append(f"| {strategy} | {queue[f'{strategy}_p50'] * 1000:.2f} | {p95 * 1000:.2f} | <= 5 | {r:.2f} |")
        record(
            f"next item ({strategy}) p95 at {args.queue_images:,} images",
            p95 * 1000,
            "ms",
            5,
            r,
            "<= 5 ms (goal/measured >= 1)",
            r >= 1,
        )
        print(
            f"next item ({strategy}) at {args.queue_images:,} images: p50 {queue[f'{strategy}_p50'] * 1000:.2f} ms, "
            f"p95 {p95 * 1000:.2f} ms; goal 5 ms -> ratio {r:.2f} ({'meets' if r >= 1 else 'misses'})"
        )
    write_section(
        "Next-item queue query (benchmarks/app.py)",
        [
            f"{args.queue_images:,} pending images (loaded in {queue['load_s']:.0f} s), 20 annotators each holding a lease, "
            "5 rounds of next_item + skip per annotator and strategy. next_item = find the next image and lease it "
            "(one transaction, including the write).",
            "",
            "| strategy | p50 ms | p95 ms | goal | goal/measured |",
            "|---|---|---|---|---|",
            *rows,
        ],
    )


if __name__ == "__main__":
    main()
