"""The few Prefect server calls `loopline up` needs, over plain HTTP.

Importing Prefect costs seconds and ties the caller to Prefect's settings machinery; the REST
API is stable and small for this: health, work pools and their workers, deployments, flow runs
and their logs. Work-pool creation and `prefect deploy` go through the Prefect CLI instead
(see `loopline.ops.stack`), since they need the client-side templates.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

TERMINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
RETRY_STATUS = frozenset({429, 502, 503})
"""Answers of a busy server, where the request did not take effect and may be sent again."""
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)


class PrefectAPIError(RuntimeError):
    """The Prefect server answered with an error or could not be reached."""


@dataclass(frozen=True)
class FlowRunResult:
    """How a flow run ended (or where it stood when we stopped waiting)."""

    id: str
    name: str
    state_type: str
    state_name: str
    message: str
    seconds: float
    url: str

    @property
    def ok(self) -> bool:
        """True if the run completed."""
        return self.state_type == "COMPLETED"


class PrefectAPI:
    """A thin client of one Prefect server's REST API.

    Args:
        api_url: the server's API root, e.g. http://127.0.0.1:4200/api.
        timeout: seconds per request.
    """

    def __init__(self, api_url: str, *, timeout: float = 10.0) -> None:
        self.api_url = api_url.rstrip("/")
        self.ui_url = self.api_url.removesuffix("/api")
        self._http = httpx.Client(base_url=self.api_url, timeout=timeout)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> PrefectAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        # A busy server on SQLite answers 503 when its database is locked (Prefect's own client
        # retries these too): the request did not take effect, so it is safe to send again.
        for delay in (*RETRY_DELAYS_S, None):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                raise PrefectAPIError(
                    f"Prefect server at {self.api_url} unreachable: {exc}"
                ) from exc
            if response.status_code not in RETRY_STATUS or delay is None:
                break
            time.sleep(delay)
        if response.status_code >= 400 and response.status_code != 404:
            raise PrefectAPIError(
                f"{method} {self.api_url}{path} -> {response.status_code}: {response.text[:500]}"
            )
        return response

    def healthy(self) -> bool:
        """True if the server answers its health check."""
        try:
            return self._http.get("/health", timeout=2.0).is_success
        except httpx.HTTPError:
            return False

    def work_pool(self, name: str) -> dict[str, Any] | None:
        """The work pool `name`, or None if it does not exist."""
        response = self._call("GET", f"/work_pools/{name}")
        return None if response.status_code == 404 else response.json()

    def online_workers(self, pool: str, *, since: datetime | None = None) -> list[dict[str, Any]]:
        """Workers of `pool` that are ONLINE (and sent a heartbeat after `since`)."""
        # Only set fields: an explicit `"limit": null` is a 422 with FastAPI >= 0.151.
        body = {"workers": {"status": {"any_": ["ONLINE"]}}}
        response = self._call("POST", f"/work_pools/{pool}/workers/filter", json=body)
        if response.status_code == 404:
            return []
        workers = response.json()
        if since is not None:
            workers = [
                w
                for w in workers
                if w.get("last_heartbeat_time")
                and datetime.fromisoformat(w["last_heartbeat_time"]) >= since
            ]
        return workers

    def deployment(self, flow_name: str, deployment_name: str) -> dict[str, Any] | None:
        """The deployment `flow_name/deployment_name`, or None if it does not exist."""
        response = self._call("GET", f"/deployments/name/{flow_name}/{deployment_name}")
        return None if response.status_code == 404 else response.json()

    def deployments_in_pool(self, pool: str) -> list[dict[str, Any]]:
        """Every deployment that runs on work pool `pool`."""
        body = {"work_pools": {"name": {"any_": [pool]}}}
        return self._call("POST", "/deployments/filter", json=body).json()

    def create_flow_run(
        self, deployment_id: str, parameters: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Schedule a run of a deployment now; returns the flow run."""
        body = {"parameters": parameters or {}}
        response = self._call("POST", f"/deployments/{deployment_id}/create_flow_run", json=body)
        if response.status_code == 404:
            raise PrefectAPIError(f"deployment {deployment_id} does not exist")
        return response.json()

    def flow_run(self, flow_run_id: str) -> dict[str, Any]:
        """The flow run with its current state."""
        response = self._call("GET", f"/flow_runs/{flow_run_id}")
        if response.status_code == 404:
            raise PrefectAPIError(f"flow run {flow_run_id} does not exist")
        return response.json()

    def completed_runs(self, deployment_id: str, *, limit: int = 1) -> list[dict[str, Any]]:
        """The newest completed runs of a deployment."""
        body = {
            "flow_runs": {
                "deployment_id": {"any_": [deployment_id]},
                "state": {"type": {"any_": ["COMPLETED"]}},
            },
            "sort": "END_TIME_DESC",
            "limit": limit,
        }
        return self._call("POST", "/flow_runs/filter", json=body).json()

    def flow_run_logs(self, flow_run_id: str, *, min_level: int = 0, limit: int = 50) -> list[str]:
        """The flow run's log messages at `min_level` or above, oldest first (last `limit`)."""
        body = {
            "logs": {"flow_run_id": {"any_": [flow_run_id]}, "level": {"ge_": min_level}},
            "sort": "TIMESTAMP_DESC",
            "limit": limit,
        }
        rows = self._call("POST", "/logs/filter", json=body).json()
        return [row["message"] for row in reversed(rows)]

    def flow_run_url(self, flow_run_id: str) -> str:
        """The run's page in the Prefect UI."""
        return f"{self.ui_url}/runs/flow-run/{flow_run_id}"

    def wait_for_flow_run(
        self,
        flow_run_id: str,
        *,
        timeout: float,
        poll: float = 1.0,
        on_state: Callable[[str], None] | None = None,
        check: Callable[[], None] | None = None,
    ) -> FlowRunResult:
        """Poll a flow run until it reaches a terminal state or `timeout` seconds pass.

        Args:
            on_state: called with each new state name.
            check: called every poll; raise from it to stop waiting (e.g. the worker died).
        """
        began = time.monotonic()
        seen = ""
        while True:
            run = self.flow_run(flow_run_id)
            state = run.get("state") or {}
            name = state.get("name") or run.get("state_name") or "?"
            if name != seen:
                seen = name
                if on_state is not None:
                    on_state(name)
            kind = state.get("type") or run.get("state_type") or ""
            elapsed = time.monotonic() - began
            if kind in TERMINAL_STATES or elapsed > timeout:
                return FlowRunResult(
                    id=flow_run_id,
                    name=run.get("name", ""),
                    state_type=kind,
                    state_name=name,
                    message=state.get("message") or "",
                    seconds=elapsed,
                    url=self.flow_run_url(flow_run_id),
                )
            if check is not None:
                check()
            time.sleep(poll)
