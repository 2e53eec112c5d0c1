"""The image store in a bucket, measured against a real S3-compatible server (SeaweedFS on 127.0.0.1).

1. Import throughput from a bucket: `skinflow import s3://bucket/prefix/` of N photo-like JPEGs (800x600, camera
   EXIF) into a fresh workbench, against boto3's own concurrent download of the same objects (16 in flight, the
   bodies read and dropped: the least any importer must do). Goal: ours/raw >= 0.7. For reference, the same files
   imported from a local folder (what the guards cost without a bucket).
2. Submit -> next image in a real browser (Debian chromium, Playwright, `skinflow app`), p95 over the same demo
   images with the pictures in the bucket and in the folder under the home, on this machine. Goal: bucket/local
   <= 1.2.

    bash .ci/seaweedfs .venv/bin/python benchmarks/bucket.py [--n 2000] [--rounds 30]

Needs the AWS_* variables and SKINFLOW_TEST_S3 that .ci/seaweedfs sets; prints the ratios and rewrites its section of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.app import percentile, record, write_section  # noqa: E402
from benchmarks.browser import PASSWORD, build, submit_to_next  # noqa: E402
from curation.ingest import import_path  # noqa: E402
from curation.store.auth import add_user  # noqa: E402
from curation.store.db import open_workbench  # noqa: E402
from curation.store.settings import Settings  # noqa: E402
from schema.bucket import TRANSFERS, s3_client  # noqa: E402
from tests.browser_app import CHROMIUM, chromium, free_port, log_in, serve  # noqa: E402

IMPORT_GOAL = 0.7
BROWSER_GOAL = 1.2


def photo_jpeg(rng: np.random.Generator, size: tuple[int, int]) -> bytes:
    """A photo-like JPEG (smooth shading, texture, noise) with camera EXIF, as a clinic's camera writes it."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(120, 220, 3)
    shade = 1 + 0.15 * np.sin(xx / rng.uniform(40, 120)) * np.cos(yy / rng.uniform(40, 120))
    pixels = base[None, None, :] * shade[..., None] + rng.normal(0, 6, (h, w, 3))
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Camera", "Model"
    out = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


def upload(bucket: str, prefix: str, n: int, size: tuple[int, int], folder: Path) -> int:
    """N distinct pictures under the prefix, and the same files in `folder` (not timed); their total bytes."""
    client, rng = s3_client(), np.random.default_rng(0)
    bodies = [photo_jpeg(rng, size) for _ in range(n)]
    folder.mkdir(parents=True)
    for i, body in enumerate(bodies):
        (folder / f"img_{i:05d}.jpg").write_bytes(body)

    def put(item: tuple[int, bytes]) -> None:
        client.put_object(Bucket=bucket, Key=f"{prefix}/img_{item[0]:05d}.jpg", Body=item[1])

    with ThreadPoolExecutor(max_workers=TRANSFERS) as pool:
        list(pool.map(put, enumerate(bodies)))
    return sum(map(len, bodies))


def raw_rate(bucket: str, prefix: str) -> float:
    """Objects per second: list, then get every object's body with TRANSFERS in flight (boto3 alone)."""
    client = s3_client()
    start = time.perf_counter()
    keys = [
        item["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
        for item in page.get("Contents", [])
    ]
    with ThreadPoolExecutor(max_workers=TRANSFERS) as pool:
        sizes = list(pool.map(lambda key: len(client.get_object(Bucket=bucket, Key=key)["Body"].read()), keys))
    assert len(sizes) == len(keys)
    return len(keys) / (time.perf_counter() - start)


def import_rate(home: Path, source: str | Path, n: int) -> float:
    """Pictures per second of `skinflow import SOURCE` (an s3:// prefix or a local folder) into a fresh workbench."""
    wb = open_workbench(Settings.load(environ={}, home=home))
    admin = add_user(wb, None, "admin", "admin", "admin-password")[0]
    start = time.perf_counter()
    report = import_path(wb, admin, source)
    seconds = time.perf_counter() - start
    assert report.imported == n, report.summary()
    wb.close()
    return n / seconds


def browser_p95(home: Path, rounds: int, image_store: str | None) -> tuple[float, float]:
    build(home, rounds + 5, rounds + 5, image_store=image_store)
    env = {"SKINFLOW_IMAGE_STORE": image_store} if image_store else {}
    with serve(home, free_port(), env=env) as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1500, "height": 1300})
        log_in(page, url, "annotator", PASSWORD)
        seconds = submit_to_next(page, rounds)
    return sorted(seconds)[len(seconds) // 2], percentile(seconds, 0.95)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="pictures imported from the bucket")
    parser.add_argument("--rounds", type=int, default=30, help="Submit -> next rounds per store")
    args = parser.parse_args()
    test_bucket = os.environ.get("SKINFLOW_TEST_S3")
    if not test_bucket:
        sys.exit("needs an S3-compatible server: bash .ci/seaweedfs .venv/bin/python benchmarks/bucket.py")
    bucket = test_bucket.removeprefix("s3://").split("/")[0]
    run = f"bench-{uuid.uuid4().hex[:8]}"
    size = (800, 600)
    with tempfile.TemporaryDirectory() as tmp:
        total = upload(bucket, f"{run}/src", args.n, size, Path(tmp) / "files")
        raw = raw_rate(bucket, f"{run}/src")
        ours = import_rate(Path(tmp) / "wb", f"s3://{bucket}/{run}/src/", args.n)
        local = import_rate(Path(tmp) / "local-wb", Path(tmp) / "files", args.n)
    ratio, against_local = ours / raw, ours / local
    verdict = "met" if ratio >= IMPORT_GOAL else "NOT met"
    print(
        f"import from a bucket: {ours:.0f} pictures/s, raw boto3 download {raw:.0f}/s: ratio {ratio:.2f} ({verdict}); "
        f"the same files from a local folder {local:.0f}/s: bucket/local {against_local:.2f}"
    )
    record(f"import {args.n:,} JPEGs from a bucket / raw download", ratio, "x", raw, ratio, ">= 0.7", ratio >= IMPORT_GOAL)
    record(f"import {args.n:,} JPEGs from a bucket / from a local folder", against_local, "x", local, against_local, "", None)

    if not Path(CHROMIUM).exists():
        sys.exit("needs Debian chromium for the browser part: apt-get install chromium")
    with tempfile.TemporaryDirectory() as tmp:
        local_p50, local_p95 = browser_p95(Path(tmp) / "local", args.rounds, None)
        bucket_p50, bucket_p95 = browser_p95(Path(tmp) / "bucket", args.rounds, f"s3://{bucket}/{run}/store")
    slower = bucket_p95 / local_p95
    browser_verdict = "met" if slower <= BROWSER_GOAL else "NOT met"
    print(f"Submit -> next p95: bucket {bucket_p95:.2f} s, local {local_p95:.2f} s: ratio {slower:.2f} ({browser_verdict})")
    record("browser Submit -> next p95, bucket / local store", slower, "x", local_p95, slower, "<= 1.2", slower <= BROWSER_GOAL)
    write_section(
        "Images in a bucket (benchmarks/bucket.py)",
        [
            f"SeaweedFS on 127.0.0.1 (.ci/seaweedfs), boto3, {os.cpu_count()} CPUs. The server shares the machine's "
            "cores with the workbench, and loopback has no network latency: a remote bucket makes downloads slower "
            "for both sides of the first ratio, and the prefetch in Annotate matters more.",
            "",
            f"Import: {args.n:,} distinct photo-like JPEGs ({size[0]}x{size[1]}, camera EXIF, {total / args.n / 1e3:.0f} kB "
            "each) under one prefix. Raw: list, then every body read by boto3 with 16 in flight. Ours: `import_path("
            "'s3://...')` into a fresh workbench (download 16 in flight, size cap, decode, metadata stripped, sha256, "
            "content-addressed write, rows in batches of 200, audit).",
            "",
            "| measure | pictures/s | goal | ratio |",
            "|---|---|---|---|",
            f"| raw boto3 download | {raw:.0f} | | |",
            f"| skinflow import s3:// | {ours:.0f} | >= 0.7 of raw | {ratio:.2f} ({verdict}) |",
            f"| skinflow import of the same files from a local folder | {local:.0f} | | bucket/local {against_local:.2f} |",
            "",
            "What bounds the import is not the bucket: every picture is decoded and its metadata stripped by rewriting "
            "the JPEG (about 20 ms of CPU per 800x600 picture here), which the raw download does not do; the same "
            "files imported from a local folder set the pace the bucket import can reach on this machine.",
            "",
            f"Annotate in a real browser (Debian chromium, Playwright, `skinflow app`): {args.rounds} rounds after 2 "
            "warm-up rounds, from the click on Submit to the next image fully rendered, on the same demo images with "
            "the pictures in the folder under the home and in the bucket (a fresh cache: each picture downloaded on "
            "first use, the next two fetched ahead while the current one is open).",
            "",
            "| store | p50 s | p95 s | goal | bucket/local |",
            "|---|---|---|---|---|",
            f"| folder | {local_p50:.2f} | {local_p95:.2f} | | |",
            f"| bucket | {bucket_p50:.2f} | {bucket_p95:.2f} | <= 1.2x local | {slower:.2f} ({browser_verdict}) |",
        ],
    )


if __name__ == "__main__":
    main()
