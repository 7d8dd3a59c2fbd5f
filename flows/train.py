"""Train flow: point-in-time training set, LightGBM, evaluation, registry, gates."""

from __future__ import annotations

from typing import Any

import tasks
from prefect import flow
from prefect.runtime import flow_run


@flow(name="train", log_prints=True)
def train_flow(use_case: str | None = None, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train and register a new model version; its gate results decide if it may be promoted.

    Args:
        use_case: Use-case spec name or YAML path.
        params: LightGBM params replacing the spec's for this training (e.g. a study's best).
    """
    settings, spec = tasks.context(use_case)
    return tasks.train(settings, spec, flow_run_id=flow_run.id, overrides=params)


if __name__ == "__main__":
    train_flow()
