"""Features flow: feature tables from the curated events, `feast apply`, online materialization."""

from __future__ import annotations

from typing import Any

import tasks
from prefect import flow
from prefect.runtime import flow_run

from loopline.settings import Settings
from loopline.spec import load_spec


@flow(name="features", log_prints=True)
def features_flow(use_case: str = "fraud") -> dict[str, Any]:
    """Recompute the use case's feature tables and publish them through Feast."""
    settings, spec = Settings(), load_spec(use_case)
    return tasks.features(settings, spec, flow_run_id=flow_run.id)


if __name__ == "__main__":
    features_flow()
