"""The design's layers hold in code: each curation subpackage imports only those below it, curation and the trainer
never import the app, and the trainer never imports curation (it reads export folders). Imports inside functions
count too: a lazy import is still a dependency."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# bottom first: the store (database, files, settings), getting images in, drafting sources, the people's work,
# what leaves the workbench, and operations over all of it (runs, maintenance, the demo)
CURATION_LAYERS = ("store", "ingest", "assist", "labelling", "export", "ops")
SHARED = {"errors"}  # curation/errors.py: the typed errors every layer raises


def imports_of(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def layer_violations() -> list[str]:
    problems = []
    for path in sorted((ROOT / "curation").rglob("*.py")):
        parts = path.relative_to(ROOT / "curation").parts
        if len(parts) < 2 or "migrations" in parts:
            continue
        layer = CURATION_LAYERS.index(parts[0])
        for line, module in imports_of(path):
            top, _, rest = module.partition(".")
            target = rest.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line} imports {module}"
            if top in ("app", "trainer"):
                problems.append(f"{where}: curation never imports the {top}")
            elif top == "curation" and target not in SHARED and CURATION_LAYERS.index(target) > layer:
                problems.append(f"{where}: {parts[0]} sits below {target}")
    for path in sorted((ROOT / "trainer").rglob("*.py")):
        for line, module in imports_of(path):
            if module.split(".")[0] in ("curation", "app"):
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {module}: the trainer reads export folders")
    for path in sorted((ROOT / "schema").rglob("*.py")):
        for line, module in imports_of(path):
            if module.split(".")[0] in ("curation", "app", "trainer"):
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {module}: schema/ is the bottom of the graph")
    return problems


def test_each_layer_imports_only_the_layers_below_it():
    assert layer_violations() == []


def test_every_curation_subpackage_has_a_place_in_the_order():
    packages = {p.name for p in (ROOT / "curation").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(CURATION_LAYERS)


def test_the_check_finds_an_upward_import(tmp_path, monkeypatch):
    """The check itself: an import from a higher layer is reported with its file and line."""
    fake = tmp_path / "curation" / "store"
    fake.mkdir(parents=True)
    (tmp_path / "curation" / "ops").mkdir()
    (tmp_path / "curation" / "ops" / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "db.py").write_text("import json\n\n\ndef later():\n    from curation.ops.runs import run_dir\n")
    for folder in ("trainer", "schema"):
        (tmp_path / folder).mkdir()
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert layer_violations() == ["curation/store/db.py:5 imports curation.ops.runs: store sits below ops"]
