"""Retrain flow: fresh features, a new model version, promotion if its gates pass.

The monitor flow starts this deployment on drift or decay; it can also be run by hand.
"""

from __future__ import annotations

from typing import Any

import tasks
from prefect import flow
from prefect.runtime import flow_run


@flow(name="retrain", log_prints=True)
def retrain_flow(use_case: str | None = None, actor: str = "retrain") -> dict[str, Any]:
    """Recompute features, train, and promote the new version if its gates pass."""
    settings, spec = tasks.context(use_case)
    run_id = flow_run.id
    features = tasks.features(settings, spec, flow_run_id=run_id)
    trained = tasks.train(settings, spec, flow_run_id=run_id)
    promoted = tasks.promote(
        settings, spec, model_version=trained["model_version"], actor=actor, flow_run_id=run_id
    )
    return {"features": features, "train": trained, "promote": promoted}


if __name__ == "__main__":
    retrain_flow()
