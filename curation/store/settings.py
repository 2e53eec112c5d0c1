"""One settings object: defaults < TOML file < environment variables (SKINFLOW_*).

The TOML file is `$SKINFLOW_CONFIG` if set, else `$SKINFLOW_HOME/skinflow.toml` if it exists.
Keys in the file are the field names below (e.g. `max_image_mb = 80`).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from curation.errors import ConfigError


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    home: Path = Path("workbench")
    database_url: str | None = None  # default: sqlite file under home
    image_store: str | None = None  # s3://bucket/prefix (curation/store/images.py); default: the images/ folder under home
    taxonomy_path: Path | None = None  # default: bundled Fitzpatrick17k taxonomy
    max_image_mb: float = 50.0  # files larger than this are refused
    max_image_megapixels: float = 80.0  # decompression-bomb guard, checked before decoding
    fetch_timeout_s: float = 20.0
    fetch_allow_private: bool = False  # allow downloads from loopback / private / link-local addresses
    llm_base_url: str | None = None  # any OpenAI-compatible server; None = api.openai.com
    llm_model: str | None = None
    llm_timeout_s: float = 60.0
    llm_max_retries: int = 4  # per request, for 429 / 5xx / timeouts / connection errors
    llm_max_side: int = 1024  # images are resized so their longer side is at most this (px)
    llm_concurrency: int = 8
    llm_max_reply_chars: int = 200_000  # longer replies are recorded as failed, not parsed
    split_seed: int = 0
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'skinflow.db').resolve()}"

    @property
    def db_path(self) -> Path | None:
        """The SQLite file, or None for a server database."""
        url = self.db_url
        return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None

    def child_environ(self, environ: dict[str, str] | None = None) -> dict[str, str]:
        """Environment entries that name this workbench by absolute paths, for a process started in another
        folder (the app server and background jobs run in the workbench, never in the caller's folder): the home,
        an SQLite database, the taxonomy file and the config file, each resolved against the current folder."""
        env = os.environ if environ is None else environ
        out = {"SKINFLOW_HOME": str(self.home.resolve())}
        if self.db_path is not None:
            out["SKINFLOW_DATABASE_URL"] = f"sqlite:///{self.db_path.resolve()}"
        if self.taxonomy_path is not None:
            out["SKINFLOW_TAXONOMY_PATH"] = str(self.taxonomy_path.resolve())
        if env.get("SKINFLOW_CONFIG"):
            out["SKINFLOW_CONFIG"] = str(Path(env["SKINFLOW_CONFIG"]).resolve())
        return out

    @property
    def store_dir(self) -> Path:
        """Content-addressed image store."""
        return self.home / "images"

    @property
    def backup_dir(self) -> Path:
        return self.home / "backups"

    @property
    def runs_dir(self) -> Path:
        """Training runs the app started: run-<id>/ each (the trainer's folder), with their logs beside them."""
        return self.home / "runs"

    def run_dir(self, run_id: int) -> Path:
        return self.runs_dir / f"run-{run_id}"

    @classmethod
    def load(cls, environ: dict[str, str] | None = None, **overrides) -> Settings:
        env = os.environ if environ is None else environ
        values: dict = {}
        home = Path(env.get("SKINFLOW_HOME", overrides.get("home", "workbench")))
        config_file = env.get("SKINFLOW_CONFIG") or (home / "skinflow.toml")
        config_file = Path(config_file)
        if config_file.exists():
            try:
                values.update(tomllib.loads(config_file.read_text(encoding="utf-8")))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
                raise ConfigError(f"config file {config_file} is not valid TOML: {e}") from None
        elif "SKINFLOW_CONFIG" in env:
            raise ConfigError(f"SKINFLOW_CONFIG points at {config_file}, which does not exist")
        for name in cls.model_fields:
            key = f"SKINFLOW_{name.upper()}"
            if key in env:
                raw = env[key]
                values[name] = raw.split(",") if name == "split_fractions" else raw
        values.update(overrides)
        values.setdefault("home", home)
        try:
            settings = cls(**values)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise ConfigError(f"invalid settings ({problems}); fix the SKINFLOW_* variable or the config file") from None
        if settings.image_store:
            from curation.store.images import parse_store_url

            parse_store_url(settings.image_store)  # a malformed URL fails here, before anything is written
        if abs(sum(settings.split_fractions) - 1.0) > 1e-6:
            raise ConfigError("split_fractions must sum to 1 (train, val, test), e.g. 0.8,0.1,0.1")
        return settings
