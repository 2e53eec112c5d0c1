"""API keys come only from the environment or a secret file and never reach a message."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from curation.errors import ConfigError
from curation.export.labelstudio import label_studio_token
from curation.store.secrets import read_secret, redact, scrub

SKINFLOW = str(Path(sys.executable).with_name("skinflow"))


def test_a_key_comes_from_the_variable_else_from_its_file(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("  ls-token-from-file\n")
    assert (
        read_secret("LABEL_STUDIO_API_KEY", {"LABEL_STUDIO_API_KEY": "direct", "LABEL_STUDIO_API_KEY_FILE": str(key_file)})
        == "direct"
    )
    assert read_secret("LABEL_STUDIO_API_KEY", {"LABEL_STUDIO_API_KEY_FILE": str(key_file)}) == "ls-token-from-file"
    assert read_secret("LABEL_STUDIO_API_KEY", {}) is None
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        read_secret("LABEL_STUDIO_API_KEY", {"LABEL_STUDIO_API_KEY_FILE": str(tmp_path / "empty")})
    with pytest.raises(ConfigError, match="LABEL_STUDIO_API_KEY_FILE"):
        label_studio_token({})


def test_redact_and_scrub_remove_every_configured_key(tmp_path):
    assert redact("a sk-123456 b sk-123456", "sk-123456", None, "ab") == "a *** b ***"  # short strings left alone
    key_file = tmp_path / "k"
    key_file.write_text("ls-secret-99")
    env = {"OPENAI_API_KEY": "sk-openai-1", "LABEL_STUDIO_API_KEY_FILE": str(key_file)}
    assert scrub("sent sk-openai-1 and ls-secret-99 to x", env) == "sent *** and *** to x"
    assert scrub("nothing secret", {"SKINFLOW_LLM_API_KEY_FILE": str(tmp_path / "missing")}) == "nothing secret"


def test_the_cli_has_no_token_flag_and_scrubs_keys_from_errors(tmp_path):
    secret = "ls-abcdef-0123456789"
    env = {**os.environ, "SKINFLOW_HOME": str(tmp_path / "wb"), "LABEL_STUDIO_API_KEY": secret}
    env.pop("SKINFLOW_USER", None)
    missing = tmp_path / f"folder-named-{secret}"
    result = subprocess.run([SKINFLOW, "import", str(missing)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert secret not in result.stderr + result.stdout and "folder-named-***" in result.stderr
    flag = subprocess.run(
        [SKINFLOW, "ls", "push", "--url", "http://127.0.0.1:9", "--token", secret],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert flag.returncode != 0 and "No such option" in flag.stderr + flag.stdout
    env.pop("LABEL_STUDIO_API_KEY")
    no_key = subprocess.run(
        [SKINFLOW, "ls", "push", "--url", "http://127.0.0.1:9"], capture_output=True, text=True, env=env, timeout=120
    )
    assert no_key.returncode == 2 and "set LABEL_STUDIO_API_KEY" in no_key.stderr
