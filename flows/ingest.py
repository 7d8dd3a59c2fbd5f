"""Ingest flow: validate new raw batches and append them to the curated lake tables."""

from __future__ import annotations

from typing import Any

import tasks
from prefect import flow
from prefect.runtime import flow_run

from loopline.settings import Settings
from loopline.spec import load_spec


@flow(name="ingest", log_prints=True)
def ingest_flow(use_case: str = "fraud") -> dict[str, Any]:
    """Ingest every new raw file of the use case's event and label tables."""
    settings, spec = Settings(), load_spec(use_case)
    return tasks.ingest(settings, spec, flow_run_id=flow_run.id)


if __name__ == "__main__":
    ingest_flow()
