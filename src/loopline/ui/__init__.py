"""The control panel's read side: queries over the metadata store (and their Streamlit cache).

`loopline.ui.queries` is plain Python over a `Store` and can be used and tested without
Streamlit; `loopline.ui.panel` wraps it in Streamlit's caches for the pages under `app/`.
"""
