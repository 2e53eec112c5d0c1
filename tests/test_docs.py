"""The documentation stands on its own: every relative link in the README and docs/ resolves inside the
repository, no file points at documents that live outside it, and the README stays a first page."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _markdown_files():
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), ROOT / "data_cards" / "README.md"]


def test_every_relative_link_resolves():
    broken = []
    for doc in _markdown_files():
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://", "mailto:", "#")):
                continue
            path = (doc.parent / target.split("#")[0]).resolve()
            if not path.exists() or ROOT not in path.parents:
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_nothing_points_at_documents_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    outside = re.compile(r"DESIGN\.md|FDLINEAR\.md|TESTING\.md|\.\./shared|shared/(data|seeds)")
    scanned = [n for n in tracked if not n.endswith((".csv", ".png")) and n != "tests/test_docs.py" and (ROOT / n).is_file()]
    assert [name for name in scanned if outside.search((ROOT / name).read_text(errors="ignore"))] == []


def test_the_readme_is_a_first_page_that_links_every_docs_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300
    assert readme.index("make demo") < readme.index("make test")
    linked = {(ROOT / target).resolve() for target in LINK.findall(readme)}
    assert set((ROOT / "docs").rglob("*.md")) <= linked


def test_every_test_the_docs_name_exists():
    """docs/security.md and docs/testing.md cite tests as `file.py::test_name` (`::test_name` for another test of the
    file just named); a test moved or renamed must take its citations along."""
    missing = []
    for doc in _markdown_files():
        for line in doc.read_text(encoding="utf-8").splitlines():
            current = None
            for file, name in re.findall(r"`(test_\w+\.py)?::(test_\w+)", line):
                current = file or current
                source = ROOT / "tests" / (current or "")
                if current is None or not source.is_file() or f"def {name}(" not in source.read_text(encoding="utf-8"):
                    missing.append(f"{doc.relative_to(ROOT)}: {current}::{name}")
    assert missing == []
