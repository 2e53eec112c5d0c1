"""The Streamlit app. Pages hold no SQL and no business rules: they call curation functions."""
