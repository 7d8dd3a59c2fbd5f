"""The `promote` and `rollback` flows load, and their deployments' parameters are theirs."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import yaml
from prefect.utilities.callables import parameter_schema

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_the_promote_and_rollback_flows_and_their_deployments() -> None:
    sys.path.insert(0, str(PROJECT_ROOT / "flows"))
    try:
        deploy = importlib.import_module("deploy")
    finally:
        sys.path.remove(str(PROJECT_ROOT / "flows"))
    promote = parameter_schema(deploy.promote_flow.fn).properties
    rollback = parameter_schema(deploy.rollback_flow.fn).properties
    assert {"use_case", "version", "alias", "override", "reason", "actor", "role"} <= set(promote)
    assert {"use_case", "reason", "actor"} <= set(rollback)
    assert (deploy.promote_flow.name, deploy.rollback_flow.name) == ("promote", "rollback")

    deployments = yaml.safe_load((PROJECT_ROOT / "flows" / "prefect.yaml").read_text())
    by_entrypoint = {d["entrypoint"]: d for d in deployments["deployments"]}
    for entrypoint, properties in [
        ("flows/deploy.py:promote_flow", promote),
        ("flows/deploy.py:rollback_flow", rollback),
    ]:
        deployment = by_entrypoint[entrypoint]
        assert deployment["name"] == "loopline"
        assert set(deployment["parameters"]) <= set(properties), entrypoint
        assert deployment["concurrency_limit"]["limit"] == 1
    assert by_entrypoint["flows/deploy.py:promote_flow"]["parameters"]["override"] is False
