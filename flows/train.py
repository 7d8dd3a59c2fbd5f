"""Train flow: point-in-time training set, LightGBM, evaluation, registry, gates."""

from __future__ import annotations

from typing import Any

import tasks
from prefect import flow
from prefect.runtime import flow_run

from loopline.settings import Settings
from loopline.spec import load_spec


@flow(name="train", log_prints=True)
def train_flow(use_case: str = "fraud") -> dict[str, Any]:
    """Train and register a new model version; its gate results decide if it may be promoted."""
    settings, spec = Settings(), load_spec(use_case)
    return tasks.train(settings, spec, flow_run_id=flow_run.id)


if __name__ == "__main__":
    train_flow()
