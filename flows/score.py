"""Score flow: a file or a lake table of events scored by a registered model version."""

from __future__ import annotations

from typing import Any

import tasks
from prefect import flow
from prefect.runtime import flow_run


@flow(name="score", log_prints=True)
def score_flow(
    use_case: str | None = None,
    source: str | None = None,
    model: str | None = None,
    out: str | None = None,
) -> dict[str, Any]:
    """Score events into a new version of a predictions table, with lineage columns.

    Args:
        use_case: Use-case spec name or YAML path.
        source: Events file (CSV/Parquet/JSON) or lake table `TABLE[@VERSION]` (default: the
            use case's events table, newest version).
        model: `NAME@ALIAS`, `NAME@VERSION` or a version number (default: the champion).
        out: Predictions table (default: `<use case>_scores`).
    """
    settings, spec = tasks.context(use_case)
    return tasks.score(settings, spec, source=source, model=model, out=out, flow_run_id=flow_run.id)


if __name__ == "__main__":
    score_flow()
