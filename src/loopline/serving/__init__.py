"""Serving: the FastAPI prediction API, the champion model cache and the prediction log."""
