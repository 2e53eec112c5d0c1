"""`python -m app.cli ...` (how background runs start the CLI with this interpreter)."""

from app.cli import main

main()
