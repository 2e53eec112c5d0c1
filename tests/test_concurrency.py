"""8 processes, 1,000 annotation submits and edits, many on the same images, against one SQLite file
(or one PostgreSQL database, with SKINFLOW_TEST_DATABASE_URL):
nothing lost or silently overwritten, no "database is locked" reaching a caller, every write audited."""

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from curation.store.auth import add_user
from curation.store.models import Annotation, AuditEvent, Image

pytestmark = pytest.mark.database  # run again on PostgreSQL by `make test-postgres`

PROCESSES, OPERATIONS, IMAGES = 8, 1000, 12
COLOURS = ("red", "brown", "white", "violaceous", "yellow")


ROOT = Path(__file__).resolve().parents[1]
# Workers are separate interpreters started with -c, not multiprocessing: a spawned child re-runs the
# parent's __main__, which Streamlit's AppTest leaves pointing at a temporary script.
WORKER = "import json, sys; from tests.test_concurrency import worker; print(json.dumps(worker(*json.loads(sys.argv[1]))))"


def worker(home: str, database_url: str | None, username: str, seed: int, n: int, image_ids: list[int]) -> dict:
    from sqlalchemy.exc import OperationalError

    from curation.errors import ConflictError
    from curation.labelling.annotate import current_annotation, submit_annotation
    from curation.store.auth import get_actor
    from curation.store.db import open_workbench
    from curation.store.settings import Settings

    wb = open_workbench(Settings.load(environ={}, home=home, database_url=database_url))
    actor = get_actor(wb, username)
    rng = random.Random(seed)
    done = {"ids": [], "conflicts": 0, "locked": 0, "errors": []}
    for _ in range(n):
        image_id = rng.choice(image_ids)
        if actor.role == "reviewer":  # a reviewer edits the newest version on the image, whoever wrote it
            with wb.session() as s:
                supersedes = s.scalar(select(func.max(Annotation.id)).where(Annotation.image_id == image_id))
        else:  # an annotator edits their own chain, or starts it
            mine = current_annotation(wb, actor, image_id)
            supersedes = mine["id"] if mine else None
        try:
            done["ids"].append(
                submit_annotation(
                    wb,
                    actor,
                    image_id,
                    {"color": [rng.choice(COLOURS)]},
                    diagnosis="psoriasis",
                    diagnosis_status="confirmed",
                    supersedes_id=supersedes,
                )
            )
        except ConflictError:
            done["conflicts"] += 1
        except OperationalError as e:
            if "locked" in str(e):
                done["locked"] += 1
            else:
                done["errors"].append(str(e)[:200])
        except Exception as e:  # noqa: BLE001 - anything else is a failure the test reports
            done["errors"].append(f"{type(e).__name__}: {str(e)[:200]}")
    wb.close()
    return done


def test_eight_writers_lose_nothing(wb, admin):
    with wb.session() as s:
        rows = [Image(source="test", status="pending", sha256=f"{i:064x}", file_path=f"{i}.jpg") for i in range(1, IMAGES + 1)]
        s.add_all(rows)
        s.flush()
        image_ids = [r.id for r in rows]
    people = [add_user(wb, admin, f"p{i}", "reviewer" if i % 2 else "annotator")[0].username for i in range(PROCESSES)]
    start = time.monotonic()
    processes = {
        name: subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                json.dumps([str(wb.settings.home), wb.settings.database_url, name, seed, OPERATIONS // PROCESSES, image_ids]),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed, name in enumerate(people)
    }
    outcomes = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
        outcomes[name] = json.loads(stdout.strip().splitlines()[-1])
    elapsed = time.monotonic() - start
    written = [i for o in outcomes.values() for i in o["ids"]]
    conflicts = sum(o["conflicts"] for o in outcomes.values())
    assert all(o["errors"] == [] for o in outcomes.values()), outcomes
    assert sum(o["locked"] for o in outcomes.values()) == 0
    assert len(written) + conflicts == OPERATIONS
    assert conflicts > 0, "no edit ever raced another: the test did not exercise conflicts"
    with wb.session() as s:
        stored = set(s.scalars(select(Annotation.id)))
        submits = s.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "annotation.submit"))
        superseded = [x for x in s.scalars(select(Annotation.supersedes_id).where(Annotation.supersedes_id.is_not(None)))]
    assert stored == set(written)  # every success is stored, nothing else is
    assert submits == len(written)  # and audited once
    assert len(superseded) == len(set(superseded))  # no version was edited twice: no silent overwrite
    print(
        f"{OPERATIONS} operations by {PROCESSES} processes in {elapsed:.1f} s: {len(written)} stored, {conflicts} conflicts "
        "reported"
    )
