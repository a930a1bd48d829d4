"""The web dashboard: a Streamlit app (``app.py``) over the store; see DESIGN.md."""
