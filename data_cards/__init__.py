"""Dataset card template (Jinja2); curation/export/datacard.py renders it for every export."""
