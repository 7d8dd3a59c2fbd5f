"""Benchmark: online features for one entity row, loopline's lookup vs Feast's two defaults.

Builds the fraud demo's feature tables in a temporary data home (--days x --customers),
applies the Feast repo and materializes the SQLite online store, then times --calls sequential
lookups of the `fraud_v2` service (customer + merchant, 35 features) for random known entities:

- loopline: `loopline.features.feast_ops.online_features` (what the prediction API calls: the
  service and join keys cached, unknown entities reported),
- Feast in-process: `FeatureStore.get_online_features(...).to_dict()`,
- `feast serve`: the same request over HTTP to Feast's feature server (one keep-alive client).

Each path is checked to return the same values first. Prints p50/p99 per path (milliseconds);
the last line is `RESULT {json}`.

    .venv/bin/python bench/online.py --calls 10000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from loopline.settings import Settings

SERVICE = "fraud_v2"


def _progress(message: str) -> None:
    print(f"[online] {message}", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare(settings: Settings, *, days: int, customers: int) -> list[dict[str, int]]:
    """Demo data through ingest and the features stage; known (customer, merchant) pairs."""
    from loopline.spec import load_spec
    from loopline.stages import run_ingest, write_demo_data
    from loopline.stages.features import run_features

    spec = load_spec("fraud")
    write_demo_data(settings, days=days, customers=customers, seed=7)
    run_ingest(settings, spec)
    run_features(settings, spec)
    import polars as pl

    tx = pl.scan_delta(str(settings.lake_dir / spec.events.table)).select(
        "customer_id", "merchant_id"
    )
    return tx.unique().collect().to_dicts()


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "mean_ms": round(float(ms.mean()), 4),
    }


def timed(call: Callable[[dict[str, int]], Any], rows: list[dict[str, int]]) -> list[float]:
    out = []
    for row in rows:
        started = time.perf_counter()
        call(row)
        out.append(time.perf_counter() - started)
    return out


@contextlib.contextmanager
def feast_server(settings: Settings, port: int):
    """`feast serve` on the feature repo, with the data home in its environment."""
    from loopline.features.feast_ops import feast_environment

    env = {**os.environ, **feast_environment(settings)}
    feast = Path(sys.executable).parent / "feast"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [str(feast), "-c", str(settings.feature_repo), "serve", "-h", "127.0.0.1",
             "-p", str(port), "--no-access-log"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"feast serve did not start: {log.read()[-2000:]!r}")
                time.sleep(0.5)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def main(argv: list[str] | None = None) -> int:
    """Set up, check the three paths agree, time them, print RESULT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=40)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from loopline.features import feast_ops

    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(home=Path(folder) / "home")
        _progress(f"demo data, ingest, features ({args.days} days x {args.customers} customers)")
        pairs = prepare(settings, days=args.days, customers=args.customers)
        rng = np.random.default_rng(args.seed)
        rows = [pairs[i] for i in rng.integers(0, len(pairs), args.calls)]
        store = feast_ops.open_store(settings)
        service = store.get_feature_service(SERVICE)

        def ours(row: dict[str, int]) -> dict[str, Any]:
            return feast_ops.online_features(store, [row], SERVICE)[0]

        def feast_sdk(row: dict[str, int]) -> dict[str, Any]:
            return store.get_online_features(features=service, entity_rows=[row]).to_dict()

        with feast_server(settings, _free_port()) as base, httpx.Client(base_url=base) as http:

            def feast_http(row: dict[str, int]) -> dict[str, Any]:
                body = {"feature_service": SERVICE, "entities": {k: [v] for k, v in row.items()}}
                response = http.post("/get-online-features", json=body)
                response.raise_for_status()
                return response.json()

            # Same answers first (and a warm-up of every path).
            for row in rows[:50]:
                mine = ours(row)
                sdk = {k: v[0] for k, v in feast_sdk(row).items()}
                served = feast_http(row)
                names = served["metadata"]["feature_names"]
                over_http = {
                    n: r["values"][0] for n, r in zip(names, served["results"], strict=True)
                }
                for name, value in sdk.items():
                    if mine[name] != value or over_http[name] != value:
                        print(f"[online] ABORT: {name} differs for {row}", file=sys.stderr)
                        return 1
            _progress(f"the three paths agree; timing {args.calls:,} calls each")
            timings = {
                "loopline": timed(ours, rows),
                "feast_get_online_features": timed(feast_sdk, rows),
                "feast_serve_http": timed(feast_http, rows),
            }
    summary = {name: percentiles(samples) for name, samples in timings.items()}
    for name, values in summary.items():
        _progress(f"{name}: {values}")
    ours_p50 = summary["loopline"]["p50_ms"]
    result = {
        "name": "online_features",
        "ours": ours_p50,
        "peer": summary["feast_get_online_features"]["p50_ms"],
        "ratio": round(summary["feast_get_online_features"]["p50_ms"] / ours_p50, 2),
        "ratio_vs_feast_serve": round(summary["feast_serve_http"]["p50_ms"] / ours_p50, 2),
        "unit": "ms (p50)",
        "calls": args.calls,
        "features": len([f for p in service.feature_view_projections for f in p.features]),
        "paths": summary,
        "statistic": "p50 per call, sequential, one entity row (customer + merchant)",
    }
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
