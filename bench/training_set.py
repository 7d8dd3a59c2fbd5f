"""Benchmark: a point-in-time training set through Feast, loopline's offline store vs Feast's
default file (Dask) offline store, on the same Parquet feature table.

Builds a feature table of --feature-rows rows (one entity, 12 features, every row at its own
instant per entity) and --labels label rows (entity, timestamp; a tenth of them for entities the
table never saw), declares the same entity, source, view (ttl 30 days) and feature service in
two Feast repos that differ only in `offline_store.type`, and times
`FeatureStore.get_historical_features(...).to_arrow()` in each. Both results are checked equal
(rows matched by a row id) before anything is reported.

    .venv/bin/python bench/training_set.py --labels 1000000 --feature-rows 10000000

Feast's Dask store can take a long time at that size: it runs in a child process that is
stopped after --peer-timeout seconds; then `peer` is that timeout and the ratio a lower bound.
The last line is `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import queue
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 90
FEATURES = [f"f{i}" for i in range(12)]

DEFINITIONS = """\
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64

customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
source = FileSource(name="stats_source", path="{path}", timestamp_field="event_timestamp")
stats = FeatureView(
    name="stats",
    entities=[customer],
    ttl=timedelta(days=30),
    schema=[{fields}],
    source=source,
)
training = FeatureService(name="training", features=[stats])
"""

STORE = """\
project: bench
provider: local
registry: {root}/registry.db
offline_store:
  type: {offline}
online_store:
  type: sqlite
  path: {root}/online.db
entity_key_serialization_version: 3
"""


def _progress(message: str) -> None:
    print(f"[training_set] {message}", file=sys.stderr, flush=True)


def feature_table(rows: int, entities: int, seed: int) -> pl.DataFrame:
    """`rows` feature rows over 90 days, microsecond UTC timestamps, unique per entity."""
    rng = np.random.default_rng(seed)
    span = DAYS * 86_400 * 1_000_000
    start = int(START.timestamp() * 1_000_000)
    frame = pl.DataFrame(
        {
            "customer_id": rng.integers(0, entities, rows),
            "event_timestamp": start + rng.integers(0, span, rows),
            **{
                name: (rng.integers(0, 1000, rows) if i % 3 == 0 else rng.random(rows))
                for i, name in enumerate(FEATURES)
            },
        }
    )
    frame = frame.unique(["customer_id", "event_timestamp"], keep="first", maintain_order=True)
    return frame.with_columns(pl.col("event_timestamp").cast(pl.Datetime("us", "UTC"))).sort(
        "customer_id", "event_timestamp"
    )


def label_rows(rows: int, entities: int, seed: int) -> pl.DataFrame:
    """Label rows: row id, entity (a tenth unknown to the table), timestamp, label."""
    rng = np.random.default_rng(seed + 1)
    span = (DAYS + 10) * 86_400 * 1_000_000
    start = int(START.timestamp() * 1_000_000)
    return pl.DataFrame(
        {
            "row_id": np.arange(rows),
            "customer_id": rng.integers(0, entities + entities // 9, rows),
            "event_timestamp": start + rng.integers(0, span, rows),
            "label": rng.integers(0, 2, rows),
        }
    ).with_columns(pl.col("event_timestamp").cast(pl.Datetime("us", "UTC")))


def make_repo(root: Path, table: Path, offline: str) -> Path:
    """A Feast repo over the Parquet table with the given offline store; applied."""
    from feast import FeatureStore

    root.mkdir(parents=True)
    fields = ", ".join(
        f'Field(name="{n}", dtype={"Int64" if i % 3 == 0 else "Float64"})'
        for i, n in enumerate(FEATURES)
    )
    (root / "definitions.py").write_text(DEFINITIONS.format(path=table, fields=fields))
    (root / "feature_store.yaml").write_text(
        textwrap.dedent(STORE.format(root=root, offline=offline))
    )
    store = FeatureStore(repo_path=str(root))
    spec = importlib.util.spec_from_file_location(
        f"bench_repo_{root.name}", root / "definitions.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    store.apply([module.customer, module.source, module.stats, module.training])
    return root


def retrieve(repo: Path, labels_path: Path) -> tuple[float, pl.DataFrame]:
    """Seconds for get_historical_features(...).to_arrow(), and the result."""
    import contextlib
    import io

    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    entity_df = pl.read_parquet(labels_path).to_pandas()
    service = store.get_feature_service("training")
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        table = store.get_historical_features(entity_df=entity_df, features=service).to_arrow()
    seconds = time.perf_counter() - started
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return seconds, frame


def _child(repo: str, labels_path: str, out: str, answer: mp.Queue) -> None:
    seconds, frame = retrieve(Path(repo), Path(labels_path))
    frame.write_parquet(out)
    answer.put(seconds)


def peer(repo: Path, labels_path: Path, timeout: float) -> tuple[float | None, pl.DataFrame | None]:
    """Feast's Dask store in a child process; (None, None) when it runs out of time."""
    out = repo / "result.parquet"
    answer: mp.Queue = mp.get_context("spawn").Queue()
    child = mp.get_context("spawn").Process(
        target=_child, args=(str(repo), str(labels_path), str(out), answer)
    )
    child.start()
    deadline = time.monotonic() + timeout
    while True:
        try:
            seconds = answer.get(timeout=2.0)
            break
        except queue.Empty:
            if not child.is_alive():  # e.g. killed when out of memory
                _progress(f"Feast's Dask store died (exit code {child.exitcode})")
                return None, None
            if time.monotonic() > deadline:
                child.kill()
                child.join()
                return None, None
    child.join()
    return seconds, pl.read_parquet(out)


def compare(ours: pl.DataFrame, theirs: pl.DataFrame) -> int:
    """Same features (floats within 1e-12) on the rows both return; returns how many rows
    Feast's Dask store left out.

    Feast's Dask store drops some entity rows that have no eligible feature row (here: rows
    before the entity's first feature row) instead of returning them with nulls, as its DuckDB
    store and loopline's do. That is allowed only for rows loopline answers with all nulls.
    """
    columns = ["row_id", *FEATURES]
    a = ours.select(columns).sort("row_id")
    b = theirs.select(columns).sort("row_id").cast(dict(a.schema))  # type: ignore[arg-type]
    if b["row_id"].n_unique() != b.height or not b["row_id"].is_in(a["row_id"].implode()).all():
        raise AssertionError("Feast returned rows it was not given, or some twice")
    dropped = a.join(b.select("row_id"), on="row_id", how="anti")
    if dropped.select(pl.col(FEATURES).is_not_null().any()).row(0) != (False,) * len(FEATURES):
        raise AssertionError("Feast left out rows that have features")
    a = a.join(b.select("row_id"), on="row_id", how="semi")
    for name in columns:
        x, y = a[name], b[name]
        if not (x.is_null() == y.is_null()).all():
            raise AssertionError(f"{name}: nulls differ")
        if x.dtype.is_float():
            gap = (x - y).abs().max()
            if gap is not None and gap > 1e-12:
                raise AssertionError(f"{name}: values differ by {gap}")
        elif not x.equals(y):
            raise AssertionError(f"{name}: values differ")
    return dropped.height


def main(argv: list[str] | None = None) -> int:
    """Build the data, time both stores, check equality, print RESULT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=100_000, help="label rows")
    parser.add_argument("--feature-rows", type=int, default=1_000_000, help="feature rows")
    parser.add_argument("--entities", type=int, default=None, help="default: feature rows / 50")
    parser.add_argument("--peer-timeout", type=float, default=900.0, help="seconds")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    entities = args.entities or max(1, args.feature_rows // 50)

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        _progress(f"writing {args.feature_rows:,} feature rows and {args.labels:,} labels")
        table = feature_table(args.feature_rows, entities, args.seed)
        table.write_parquet(root / "stats.parquet")
        labels = label_rows(args.labels, entities, args.seed)
        labels.write_parquet(root / "labels.parquet")
        ours_repo = make_repo(root / "ours", root / "stats.parquet",
                              "loopline.features.offline_store.LooplineOfflineStore")  # fmt: skip
        feast_repo = make_repo(root / "feast", root / "stats.parquet", "file")

        ours_s, ours_frame = retrieve(ours_repo, root / "labels.parquet")
        _progress(f"loopline: {ours_s:.2f} s")
        peer_s, peer_frame = peer(feast_repo, root / "labels.parquet", args.peer_timeout)
        dropped = None
        if peer_frame is not None:
            try:
                dropped = compare(ours_frame, peer_frame)
            except AssertionError as error:
                print(f"[training_set] ABORT: results differ: {error}", file=sys.stderr)
                return 1
            _progress(f"Feast file (Dask): {peer_s:.2f} s; equal on the rows it returned "
                      f"(it left out {dropped:,} rows without features)")  # fmt: skip
        else:
            _progress(f"Feast file (Dask): stopped after {args.peer_timeout:.0f} s")
        found = ours_frame["f0"].is_not_null().sum()

    peer_value = peer_s if peer_s is not None else args.peer_timeout
    result = {
        "name": "training_set",
        "ours": round(ours_s, 3),
        "peer": round(peer_value, 3),
        "ratio": round(peer_value / ours_s, 2),
        "unit": "s",
        "peer_finished": peer_s is not None,
        "peer_rows_left_out": dropped,
        "labels": args.labels,
        "feature_rows": table.height,
        "entities": entities,
        "rows_with_features": int(found),
        "peer_store": "feast file (dask)",
        "target": {"ratio_at_least": 10, "ours_at_most_s": 20},
    }
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
