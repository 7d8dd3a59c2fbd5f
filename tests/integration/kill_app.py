"""App factory for the kill test's server process: the real API with test_serving's stub Feast.

`python -m uvicorn kill_app:create --factory` with this folder on PYTHONPATH and LOOPLINE_HOME set.
"""

from __future__ import annotations

from fastapi import FastAPI
from test_serving import fake_features

from loopline.serving.app import create_app
from loopline.settings import Settings


def create() -> FastAPI:
    """The prediction API over LOOPLINE_HOME, features from the deterministic stub."""
    return create_app(Settings(), feature_lookup=fake_features, refresh_s=0.5)
