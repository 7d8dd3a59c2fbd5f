"""Run the Prefect CLI with one client fix: `python -m loopline.ops._prefect_cli ARGS...`.

prefect 3.8.8's `read_workers_for_work_pool` sends `"offset": null, "limit": null` in its
request body. FastAPI >= 0.151 validates an explicit null against the endpoint's `int`
parameters and answers 422, so `prefect deploy` stops with exit code 1 after the first
deployment: the rest of `--all` is never deployed. This wrapper sends only the fields that are
set, which every FastAPI version accepts, and otherwise runs the unchanged Prefect CLI.
Harmless once the server and client agree again (fastapi < 0.151, or a fixed Prefect).
"""

from __future__ import annotations

import sys
from typing import Any


def _patch_worker_listing() -> None:
    from prefect.client.orchestration._work_pools.client import WorkPoolAsyncClient
    from prefect.client.schemas.objects import Worker

    async def read_workers_for_work_pool(
        self: Any,
        work_pool_name: str,
        worker_filter: Any = None,
        offset: int | None = None,
        limit: int | None = None,
    ) -> list[Worker]:
        body: dict[str, Any] = {}
        if worker_filter is not None:
            body["workers"] = worker_filter.model_dump(mode="json", exclude_unset=True)
        if offset is not None:
            body["offset"] = offset
        if limit is not None:
            body["limit"] = limit
        response = await self.request(
            "POST",
            "/work_pools/{work_pool_name}/workers/filter",
            path_params={"work_pool_name": work_pool_name},
            json=body,
        )
        return Worker.model_validate_list(response.json())

    WorkPoolAsyncClient.read_workers_for_work_pool = read_workers_for_work_pool  # type: ignore[method-assign]


def main() -> None:
    """Patch the client, then hand `sys.argv[1:]` to the Prefect CLI."""
    _patch_worker_listing()
    from prefect.cli import app

    sys.argv[0] = "prefect"
    sys.exit(app())


if __name__ == "__main__":
    main()
