"""The top-level package names (app, schema, curation, trainer) are generic: make sure ours are
the ones imported, not a same-named module from some dependency."""

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["app", "schema", "curation", "trainer", "data_cards"])
def test_top_level_packages_are_ours(name):
    module = importlib.import_module(name)
    assert Path(module.__file__).resolve().parent == ROOT / name


def test_no_installed_distribution_claims_our_top_level_names():
    from importlib.metadata import distributions

    clashes = []
    for dist in distributions():
        if dist.metadata["Name"] == "skinflow-workbench":
            continue
        top_level = dist.read_text("top_level.txt") or ""
        files = {str(f).split("/")[0].removesuffix(".py") for f in (dist.files or [])}
        names = set(top_level.split()) | files
        clashes += [(dist.metadata["Name"], n) for n in ("app", "schema", "curation", "trainer", "data_cards") if n in names]
    assert clashes == []


def test_schema_imports_nothing_from_curation_or_app():
    import ast

    for path in (ROOT / "schema").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] in ("curation", "app", "trainer", "sqlalchemy") for n in names), path
