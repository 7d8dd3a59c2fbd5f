"""The delivery use case: food orders, their delivery duration in minutes (regression).

It is declared by a spec (`delivery.yaml`), Feast declarations (`feature_repo/`), feature
builders (`builders.py`) and a data generator (`generator.py`), and runs through the unchanged
platform.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
SPEC_PATH = HERE / "delivery.yaml"
FEATURE_REPO = HERE / "feature_repo"
