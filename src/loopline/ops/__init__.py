"""Process management behind `loopline up | down | status | logs`.

    from loopline.ops import up, down, status
    report = up(Settings(), progress=print)   # server, pool, worker, deploy, pipeline, API, app
    status(Settings())                        # one ComponentStatus per process
    down(Settings())                          # worker before server; returns what it stopped

Processes run detached in their own sessions; pid files and logs live in `settings.run_dir`.
Nothing here imports Prefect: the server is driven over HTTP and through its CLI.
"""

from loopline.ops.components import API, APP, COMPONENTS, SERVER, WORKER, child_env
from loopline.ops.prefect_api import FlowRunResult, PrefectAPI, PrefectAPIError
from loopline.ops.process import OpsError
from loopline.ops.stack import (
    PIPELINE_DEPLOYMENT,
    ComponentStatus,
    FlowRunFailed,
    UpReport,
    champion_exists,
    deploy,
    down,
    ensure_component,
    ensure_work_pool,
    log_path,
    run_deployment,
    status,
    stop_component,
    tail_log,
    up,
)

__all__ = [
    "API",
    "APP",
    "COMPONENTS",
    "PIPELINE_DEPLOYMENT",
    "SERVER",
    "WORKER",
    "ComponentStatus",
    "FlowRunFailed",
    "FlowRunResult",
    "OpsError",
    "PrefectAPI",
    "PrefectAPIError",
    "UpReport",
    "champion_exists",
    "child_env",
    "deploy",
    "down",
    "ensure_component",
    "ensure_work_pool",
    "log_path",
    "run_deployment",
    "status",
    "stop_component",
    "tail_log",
    "up",
]
