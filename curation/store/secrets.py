"""API keys: read only from the environment or a secret file, and kept out of every message.

A key never comes from a command-line flag (it would show in `ps` and in shell history), a config
file or the database. `NAME` holds the key itself; `NAME_FILE` names a file holding it (Docker and
Kubernetes secrets, or a `chmod 600` file).
"""

from __future__ import annotations

import os
from pathlib import Path

from curation.errors import ConfigError


def read_secret(name: str, environ: dict[str, str] | None = None) -> str | None:
    """`$NAME`, else the stripped contents of the file `$NAME_FILE`, else None."""
    env = os.environ if environ is None else environ
    if env.get(name):
        return env[name]
    file_name = env.get(f"{name}_FILE")
    if not file_name:
        return None
    try:
        secret = Path(file_name).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"cannot read {name}_FILE={file_name}: {getattr(e, 'strerror', None) or e}; "
            "point it at a readable text file that holds only the key"
        ) from None
    if not secret:
        raise ConfigError(f"{name}_FILE={file_name} is empty; put the key in it")
    return secret


def redact(text: str, *secrets: str | None) -> str:
    """`text` with every secret (4 characters or more: shorter ones would mangle ordinary words) as ***."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


# Every key the workbench reads; `scrub` removes all of them from text meant for a person or a log.
SECRET_NAMES = ("SKINFLOW_LLM_API_KEY", "OPENAI_API_KEY", "LABEL_STUDIO_API_KEY")


def scrub(text: str, environ: dict[str, str] | None = None) -> str:
    """`text` without any configured key: the last guard before an error reaches a screen or a log."""
    secrets = []
    for name in SECRET_NAMES:
        try:
            secrets.append(read_secret(name, environ))
        except ConfigError:  # an unreadable key file holds no key to leak
            pass
    return redact(text, *secrets)
