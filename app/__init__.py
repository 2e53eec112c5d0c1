"""What people touch: the CLI (app/cli.py) and, later, the Streamlit pages (app/ui/)."""
