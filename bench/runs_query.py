"""Run search at scale: filter + sort + first page over N runs with metrics, params and tags.

Populates a temporary metadata store (SQLite by default; also PostgreSQL with --pg) with N
seeded runs through bulk inserts: kinds train / tune-trial / evaluate / ingest, statuses,
a year of start times, 4 final metrics per model run, 8 params (some nested), 2 tags, and
learning curves for 1% of the runs. Then, for each query below, it times

- ours: `loopline.runs_query.search_runs` (parsed query -> EXISTS subqueries on indexed
  (key, value) tables, sorted and limited in the database, first page of 50), and
- the peer: the naive way, in the same run: load every run with its final metrics, params
  and tags into Polars, pivot them wide, filter, sort and take 50 rows in memory,

checks that both return the same run ids in the same order, and prints the median of
--repeats timings per query. The headline (`ours`, `peer`) is the issue's example query
sorted by a metric. The last line is `RESULT {json}`.

    .venv/bin/python bench/runs_query.py --runs 100000
    .venv/bin/python bench/runs_query.py --runs 100000 --pg
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import create_engine, insert, select, text

from loopline.runs_query import parse_order_by, search_runs
from loopline.settings import Settings
from loopline.store import Store
from loopline.store.tables import Run, RunMetric, RunParam, RunTag
from loopline.tracking import param_values

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
END = datetime(2026, 11, 23, tzinfo=UTC)
PAGE = 50

QUERIES: list[tuple[str, str, str]] = [
    (
        "issue_example_by_metric",
        "metrics.roc_auc > 0.9 and params.num_leaves = 63 and tags.use_case = 'fraud' "
        "and status = 'succeeded' and kind in ('train', 'tune-trial') "
        "and started_at >= '2026-06-01'",
        "metrics.roc_auc desc",
    ),
    (
        "issue_example_by_time",
        "metrics.roc_auc > 0.9 and params.num_leaves = 63 and tags.use_case = 'fraud' "
        "and status = 'succeeded' and kind in ('train', 'tune-trial') "
        "and started_at >= '2026-06-01'",
        "started_at desc",
    ),
    ("newest_page", "", "started_at desc"),
    ("broad_by_metric", "kind = 'tune-trial' and status = 'succeeded'", "metrics.roc_auc desc"),
    ("selective_param", "params.training.seed = 4242", "started_at desc"),
    ("rare_or", "metrics.log_loss < 0.0105 or tags.team = 'nobody'", "started_at desc"),
]


def populate(store: Store, n: int, seed: int) -> dict[str, int]:
    """Insert n seeded runs with metrics, params and tags in bulk; returns row counts."""
    rng = random.Random(seed)
    kinds = ["train", "tune-trial", "evaluate", "ingest"]
    statuses = ["succeeded", "failed", "crashed"]
    counts = {"runs": 0, "run_metrics": 0, "run_params": 0, "run_tags": 0}
    batch = 20_000
    tables = [Run.__table__, RunMetric.__table__, RunParam.__table__, RunTag.__table__]
    indexes = [index for table in tables for index in table.indexes]
    with store.engine.begin() as conn:
        # Secondary indexes are built once after the load (much faster than row by row);
        # they are the same Index objects the schema declares, so the result is identical.
        for index in indexes:
            index.drop(conn)
        for start in range(0, n, batch):
            runs, metrics, params, tags = [], [], [], []
            for _ in range(start, min(n, start + batch)):
                run_id = uuid.UUID(int=rng.getrandbits(128)).hex
                kind = rng.choices(kinds, weights=[30, 60, 5, 5])[0]
                status = rng.choices(statuses, weights=[90, 7, 3])[0]
                started = END - timedelta(seconds=rng.uniform(0, 365 * 86400))
                duration = rng.uniform(1, 600)
                use_case = rng.choices(["fraud", "churn", "demand"], weights=[60, 30, 10])[0]
                run_params = {
                    "num_leaves": rng.choice([15, 31, 63, 127, 255]),
                    "learning_rate": rng.choice([0.01, 0.03, 0.05, 0.1]),
                    "min_data_in_leaf": rng.randint(5, 200),
                    "feature_fraction": round(rng.uniform(0.5, 1.0), 3),
                    "objective": "binary" if use_case == "fraud" else "regression",
                    "training": {"seed": rng.randint(0, 10_000), "valid_fraction": 0.2},
                    "feature_service": f"{use_case}_v1",
                }
                runs.append(
                    {
                        "id": run_id,
                        "kind": kind,
                        "use_case": use_case,
                        "name": f"{kind}-{rng.randint(0, 999)}",
                        "status": status,
                        "params": run_params,
                        "tags": {"use_case": use_case, "team": rng.choice(["risk", "growth"])},
                        "summary": {},
                        "environment": {},
                        "notes": "",
                        "started_at": started,
                        "ended_at": started + timedelta(seconds=duration),
                        "heartbeat_at": started + timedelta(seconds=duration),
                        "duration_s": duration,
                        "git_commit": "0" * 40,
                        "git_dirty": False,
                    }
                )
                for key, value in _flat(run_params).items():
                    value_text, value_num = param_values(value)
                    params.append(
                        {"run_id": run_id, "key": key, "value_text": value_text,
                         "value_num": value_num}
                    )  # fmt: skip
                for key, value in runs[-1]["tags"].items():
                    tags.append({"run_id": run_id, "key": key, "value": value})
                if kind in ("train", "tune-trial") and status == "succeeded":
                    auc = min(0.999, max(0.5, rng.gauss(0.85, 0.05)))
                    finals = {
                        "roc_auc": auc,
                        "pr_auc": auc * rng.uniform(0.3, 0.7),
                        "log_loss": rng.uniform(0.01, 0.3),
                        "brier": rng.uniform(0.005, 0.1),
                    }
                    for key, value in finals.items():
                        metrics.append(
                            {"run_id": run_id, "key": key, "step": 0, "value": value,
                             "is_final": True, "logged_at": started}
                        )  # fmt: skip
                    if rng.random() < 0.01:
                        for step in range(1, 101):
                            metrics.append(
                                {"run_id": run_id, "key": "valid_auc", "step": step,
                                 "value": auc * (1 - 0.5 / step), "is_final": False,
                                 "logged_at": started}
                            )  # fmt: skip
            conn.execute(insert(Run), sorted(runs, key=lambda r: r["id"]))
            conn.execute(insert(RunMetric), sorted(metrics, key=lambda r: r["run_id"]))
            conn.execute(insert(RunParam), sorted(params, key=lambda r: r["run_id"]))
            conn.execute(insert(RunTag), sorted(tags, key=lambda r: r["run_id"]))
            for name, rows in (
                ("runs", runs), ("run_metrics", metrics), ("run_params", params), ("run_tags", tags)
            ):  # fmt: skip
                counts[name] += len(rows)
        for index in indexes:
            index.create(conn)
    if store.engine.dialect.name == "postgresql":
        # What autovacuum does soon after a bulk load: planner statistics and the visibility
        # map (index-only scans). SQLite gets nothing: a loopline store never runs ANALYZE.
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE runs, run_metrics, run_params, run_tags"))
    return counts


def _flat(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}.{key}" if prefix else key
        out.update(_flat(value, name) if isinstance(value, dict) else {name: value})
    return out


# --- the peer: load everything into Polars, filter in memory -----------------------------------


def naive(store: Store, name: str) -> list[str]:
    """The naive search: every run with its metrics, params and tags loaded and pivoted."""
    with store.engine.connect() as conn:
        runs = pl.read_database(
            select(Run.id, Run.kind, Run.status, Run.started_at), conn, infer_schema_length=None
        )
        metrics = pl.read_database(
            select(RunMetric.run_id, RunMetric.key, RunMetric.step, RunMetric.value).where(
                RunMetric.is_final == True  # noqa: E712
            ),
            conn,
        )
        params = pl.read_database(
            select(RunParam.run_id, RunParam.key, RunParam.value_text, RunParam.value_num),
            conn,
            infer_schema_length=None,
        )
        tags = pl.read_database(select(RunTag.run_id, RunTag.key, RunTag.value), conn)
    runs = runs.with_columns(pl.col("started_at").cast(pl.Datetime("us", "UTC")))
    wide_metrics = (
        metrics.sort("step")
        .group_by("run_id", "key")
        .last()
        .pivot(on="key", index="run_id", values="value")
    )
    wide_num = params.pivot(on="key", index="run_id", values="value_num")
    wide_num = wide_num.rename({c: f"p_{c}" for c in wide_num.columns if c != "run_id"})
    wide_tags = tags.pivot(on="key", index="run_id", values="value")
    wide_tags = wide_tags.rename({c: f"t_{c}" for c in wide_tags.columns if c != "run_id"})
    frame = (
        runs.rename({"id": "run_id"})
        .join(wide_metrics, on="run_id", how="left")
        .join(wide_num, on="run_id", how="left")
        .join(wide_tags, on="run_id", how="left")
    )
    return _peer_query(frame, name)


def _peer_query(frame: pl.DataFrame, name: str) -> list[str]:
    since = datetime(2026, 6, 1, tzinfo=UTC)
    example = (
        (pl.col("roc_auc") > 0.9)
        & (pl.col("p_num_leaves") == 63)
        & (pl.col("t_use_case") == "fraud")
        & (pl.col("status") == "succeeded")
        & pl.col("kind").is_in(["train", "tune-trial"])
        & (pl.col("started_at") >= since)
    )
    filters = {
        "issue_example_by_metric": (example, "roc_auc"),
        "issue_example_by_time": (example, "started_at"),
        "newest_page": (pl.lit(True), "started_at"),
        "broad_by_metric": (
            (pl.col("kind") == "tune-trial") & (pl.col("status") == "succeeded"),
            "roc_auc",
        ),
        "selective_param": (pl.col("p_training.seed") == 4242, "started_at"),
        "rare_or": (
            (pl.col("log_loss") < 0.0105).fill_null(False)
            | (pl.col("t_team") == "nobody").fill_null(False),
            "started_at",
        ),
    }
    condition, key = filters[name]
    return (
        frame.filter(condition)
        .sort([key, "run_id"], descending=True, nulls_last=True)
        .head(PAGE)
        .get_column("run_id")
        .to_list()
    )


def ours(store: Store, query: str, order_by: str) -> list[str]:
    """loopline's search, first page."""
    return [r.id for r in search_runs(store, query, order_by=order_by, limit=PAGE).runs]


def _time(function: Any, repeats: int) -> tuple[float, Any]:
    timings, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings), result


def bench_store(store: Store, label: str, n: int, repeats: int, seed: int) -> dict[str, Any]:
    """Populate one store and time every query both ways."""
    started = time.perf_counter()
    counts = populate(store, n, seed)
    populate_s = time.perf_counter() - started
    print(f"[{label}] populated {counts} in {populate_s:.1f}s", file=sys.stderr)
    results: dict[str, Any] = {}
    for name, query, order_by in QUERIES:
        parse_order_by(order_by)
        ours_ms, our_ids = _time(lambda q=query, o=order_by: ours(store, q, o), repeats)
        peer_ms, peer_ids = _time(lambda q=name: naive(store, q), max(1, repeats // 2))
        if our_ids != peer_ids:
            print(f"[{label}] {name}: results differ\n ours {our_ids}\n peer {peer_ids}")
            raise SystemExit(1)
        results[name] = {
            "ours_ms": round(ours_ms, 1),
            "peer_ms": round(peer_ms, 1),
            "matches": len(our_ids),
        }
        print(
            f"[{label}] {name:<26} ours {ours_ms:8.1f} ms   peer {peer_ms:8.1f} ms   "
            f"({len(our_ids)} rows on the first page)",
            file=sys.stderr,
        )
    return {"populate_s": round(populate_s, 1), "rows": counts, "queries": results}


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return number


def main() -> None:
    """Parse arguments, run the benchmark on SQLite (and PostgreSQL), print RESULT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=_positive_int, default=100_000, help="default: 100000")
    parser.add_argument("--repeats", type=_positive_int, default=5, help="default: 5")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--pg", action="store_true", help="also on PostgreSQL (127.0.0.1:5432)")
    args = parser.parse_args()
    stores: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="loopline-bench-") as tmp:
        store = Store.open(Settings(home=Path(tmp)))
        stores["sqlite"] = bench_store(store, "sqlite", args.runs, args.repeats, args.seed)
        store.dispose()
        if args.pg:
            schema = f"bench_{uuid.uuid4().hex[:10]}"
            admin = create_engine(PG_ADMIN_URL)
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            try:
                url = f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
                pg = Store.open(Settings(home=Path(tmp), database_url=url))
                stores["postgresql"] = bench_store(pg, "postgresql", args.runs, args.repeats, 7)
                pg.dispose()
            finally:
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
    headline = stores["sqlite"]["queries"]["issue_example_by_metric"]
    worst = max(q["ours_ms"] for s in stores.values() for q in s["queries"].values())
    result = {
        "name": "runs_query",
        "runs": args.runs,
        "ours": headline["ours_ms"],
        "peer": headline["peer_ms"],
        "ratio": round(headline["peer_ms"] / headline["ours_ms"], 1),
        "unit": "ms",
        "ratio_is": "peer / ours (how many times faster the indexed search is)",
        "worst_ours_ms": worst,
        "target_ms": 300,
        "cpu": os.cpu_count(),
        "stores": stores,
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
