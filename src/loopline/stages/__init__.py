"""The stages of the loop as plain functions: what each Prefect flow task calls.

Each stage opens what it needs from `Settings`, records itself as a run, does its work through
the domain modules, and returns a small JSON-able summary. No Prefect in here, so every stage
runs the same from a flow, the CLI, a test, or a Dask worker. One module per stage.
"""

from loopline.stages.common import Context, StageError, open_context
from loopline.stages.demo import ensure_demo_data, write_demo_data
from loopline.stages.features import run_features
from loopline.stages.ingest import run_ingest
from loopline.stages.monitor import run_monitor
from loopline.stages.promote import run_promote, run_rollback
from loopline.stages.train import run_train
from loopline.stages.tune import run_tune

__all__ = [
    "Context",
    "StageError",
    "ensure_demo_data",
    "open_context",
    "run_features",
    "run_ingest",
    "run_monitor",
    "run_promote",
    "run_rollback",
    "run_train",
    "run_tune",
    "write_demo_data",
]
