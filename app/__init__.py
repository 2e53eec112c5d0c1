"""What people touch: the CLI (app/cli/) and the Streamlit app (app/ui/main.py, pages in app/ui/screens/)."""
