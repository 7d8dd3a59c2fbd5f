"""Shared fixtures of the integration tests: a throwaway flow project."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

PIPELINE_FLOW = """\
import json
import os
from pathlib import Path

from prefect import flow, task
from prefect.runtime import flow_run


@task(retries=1)
def add(a: int, b: int) -> int:
    return a + b


@flow(name="pipeline")
def pipeline_flow(
    use_case: str = "fraud", days: int = 1, customers: int = 1, seed: int = 0, demo: bool = True
) -> dict:
    seen = {
        "cwd": os.getcwd(),
        "home": os.environ.get("LOOPLINE_HOME"),
        "prefect_home": os.environ.get("PREFECT_HOME"),
        "flow_run_id": flow_run.id,
        "sum": add(days, customers),
    }
    # Relative on purpose: lands in the checkout only if the pull step moved there.
    Path("pipeline-ran.json").write_text(json.dumps(seen))
    return seen
"""

BOOM_FLOW = """\
from prefect import flow


@flow(name="boom")
def boom_flow(reason: str = "bad input") -> None:
    raise ValueError(f"boom: {reason}")
"""

PREFECT_YAML = """\
name: throwaway
prefect-version: 3.8.8
build:
  - prefect.deployments.steps.set_working_directory:
      id: checkout
      directory: .
push: null
pull:
  - prefect.deployments.steps.set_working_directory:
      directory: "{{ checkout.directory }}"
definitions:
  work_pool: &work_pool
    name: ops-test
deployments:
  - name: loopline
    entrypoint: flows/pipeline.py:pipeline_flow
    work_pool: *work_pool
  - name: loopline
    entrypoint: flows/boom.py:boom_flow
    work_pool: *work_pool
"""

APP_MAIN = """\
import streamlit as st

st.write("throwaway panel")
"""


@pytest.fixture(scope="module")
def throwaway_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkout with a `pipeline` flow, a failing `boom` flow, their prefect.yaml (work pool
    'ops-test') and a one-line Streamlit app: what `loopline up` needs, minus the ML."""
    root = tmp_path_factory.mktemp("project")
    files = {
        "flows/pipeline.py": PIPELINE_FLOW,
        "flows/boom.py": BOOM_FLOW,
        "flows/prefect.yaml": PREFECT_YAML,
        "app/main.py": APP_MAIN,
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root
