"""Import speed: the same images into Label Studio and into the workbench.

Run by hand where Label Studio is installed; .ci/labelstudio starts a throwaway server and runs a command:

    bash .ci/labelstudio .venv/bin/python benchmarks/labelstudio_import.py [--n 10000]

or against a server of your own: LABEL_STUDIO_URL=... LABEL_STUDIO_API_KEY=... .venv/bin/python benchmarks/labelstudio_import.py

Three timings over the same n JPEGs (256x256, camera EXIF in every file):
- ours: `skinflow import FOLDER` (sanitise, content hash, perceptual hash, store, one row each);
- Label Studio, file upload: the images posted to /api/projects/ID/import (Label Studio stores each file and
  makes a task), in batches of 100 files per request;
- Label Studio, task JSON: n tasks whose image is a URL (what `skinflow ls push` sends; no image bytes move).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from benchmarks.app import record, write_section  # noqa: E402
from curation.ingest.folder import import_folder  # noqa: E402
from curation.store.auth import add_user  # noqa: E402
from curation.store.db import open_workbench  # noqa: E402
from curation.store.settings import Settings  # noqa: E402
from tests.helpers import jpeg_bytes, photo  # noqa: E402

UPLOAD_BATCH = 100
CONFIG = '<View><Image name="image" value="$image"/><Choices name="ok" toName="image"><Choice value="ok"/></Choices></View>'


def make_images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        path = folder / f"img{i:05d}.jpg"
        path.write_bytes(jpeg_bytes(photo(i, (256, 256)), camera=True))
        paths.append(path)
    return paths


def new_project(client: httpx.Client, title: str) -> int:
    response = client.post("/api/projects", json={"title": title, "label_config": CONFIG})
    response.raise_for_status()
    return response.json()["id"]


def task_count(client: httpx.Client, project: int) -> int:
    response = client.get("/api/tasks", params={"project": project, "page_size": 1})
    response.raise_for_status()
    body = response.json()
    return body["total"] if isinstance(body, dict) else len(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    args = parser.parse_args()
    url, token = os.environ.get("LABEL_STUDIO_URL"), os.environ.get("LABEL_STUDIO_API_KEY")
    if not url or not token:
        sys.exit(
            "set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY, or run through: bash .ci/labelstudio .venv/bin/python "
            "benchmarks/labelstudio_import.py"
        )
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_images(Path(tmp) / "images", args.n)

        wb = open_workbench(Settings.load(environ={}, home=Path(tmp) / "wb"))
        admin, _ = add_user(wb, None, "admin", "admin", "bench-password")
        start = time.perf_counter()
        report = import_folder(wb, admin, Path(tmp) / "images")
        ours = time.perf_counter() - start
        assert report.imported == args.n, report
        wb.close()

        client = httpx.Client(base_url=url.rstrip("/"), headers={"Authorization": f"Token {token}"}, timeout=600)
        project = new_project(client, f"upload benchmark {time.time():.0f}")
        start = time.perf_counter()
        for begin in range(0, len(paths), UPLOAD_BATCH):
            # one form field per file, named after it, as Label Studio's own uploader sends them
            files = [(p.name, (p.name, p.read_bytes(), "image/jpeg")) for p in paths[begin : begin + UPLOAD_BATCH]]
            client.post(f"/api/projects/{project}/import", files=files).raise_for_status()
        upload = time.perf_counter() - start
        count = task_count(client, project)
        assert count == args.n, f"Label Studio made {count} tasks from {args.n} uploaded files"

        project = new_project(client, f"task json benchmark {time.time():.0f}")
        tasks = [{"data": {"image": f"/data/local-files/?d=images/{p.name}"}} for p in paths]
        start = time.perf_counter()
        for begin in range(0, len(tasks), 1000):  # the batch `skinflow ls push` uses
            client.post(f"/api/projects/{project}/import", json=tasks[begin : begin + 1000]).raise_for_status()
        task_json = time.perf_counter() - start
        assert task_count(client, project) == args.n

    print(
        f"{args.n:,} images: ours {ours:.1f} s ({args.n / ours:.0f}/s); Label Studio file upload {upload:.1f} s "
        f"({args.n / upload:.0f}/s, ours is {upload / ours:.2f}x faster); Label Studio task JSON {task_json:.1f} s"
    )
    record(
        f"import {args.n:,} images: Label Studio file upload / ours", upload, "s", ours, upload / ours, "for information", None
    )
    write_section(
        "Label Studio import (benchmarks/labelstudio_import.py)",
        [
            f"{args.n:,} JPEGs 256x256 with camera EXIF; Label Studio on the same machine (127.0.0.1), {os.cpu_count()} cores.",
            "",
            "| import | seconds | images per second | Label Studio time / ours |",
            "|---|---|---|---|",
            f"| ours: `skinflow import FOLDER` (sanitise, sha256, dHash, store, rows) | {ours:.1f} | {args.n / ours:.0f} | "
            "1.00 |",
            f"| Label Studio: file upload, {UPLOAD_BATCH} files per request | {upload:.1f} | {args.n / upload:.0f} | "
            f"{upload / ours:.2f} |",
            f"| Label Studio: task JSON with image URLs, 1,000 per request (no bytes move) | {task_json:.1f} | "
            f"{args.n / task_json:.0f} | "
            f"{task_json / ours:.2f} |",
        ],
    )


if __name__ == "__main__":
    main()
