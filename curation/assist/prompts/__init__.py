"""Versioned prompt templates (Jinja2). A prompt's version is its file name: change a prompt by
adding a new file (caption-v2.j2), never by editing an old one, so cached drafts stay truthful."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jinja2

from curation.errors import ConfigError

FOLDER = Path(__file__).parent


@cache
def _template(version: str) -> jinja2.Template:
    path = FOLDER / f"{version}.j2"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in FOLDER.glob("*.j2")))
        raise ConfigError(f"no prompt {version!r}; known prompts: {known}")
    return jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True).from_string(
        path.read_text(encoding="utf-8")
    )


def render_prompt(version: str, **values) -> str:
    return _template(version).render(**values)
