"""Dataset card template (Jinja2); curation/datacard.py renders it for every export."""
