"""`skinflow`: the command line, one module per area (data.py, exports.py, assist.py, model.py, admin.py;
common.py holds what they share). Every command parses its flags, calls one library function (the same ones the
app uses) and prints; errors print one line and exit non-zero.

Who acts: `--user NAME` (or SKINFLOW_USER). Without it, commands act as the only admin; on a new
workbench the first command that needs an account creates `admin` and prints its password once.
Anyone with shell access to the workbench folder has full access to the data anyway, so the CLI
asks for no password.
"""

from __future__ import annotations

import importlib
import sys

from app.cli.common import app, err
from curation.store.secrets import scrub
from schema.errors import SkinflowError
from schema.files import owner_only

__all__ = ["app", "main"]

# Each area registers its commands on `app` when imported, in the order `skinflow --help` lists them.
for _area in ("data", "exports", "assist", "model", "admin"):
    importlib.import_module(f"app.cli.{_area}")


def main() -> None:
    owner_only()  # what this process and its children (the app's server, background runs) write is private
    try:
        app()
    except SkinflowError as e:
        print(f"error: {scrub(str(e))}", file=sys.stderr)  # one line, never wrapped: scripts grep it
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted: finished work is saved; run the same command again to continue")
        sys.exit(130)
