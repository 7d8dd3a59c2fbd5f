"""The features stage: build feature tables, register them with Feast, materialize, check skew.

`build` computes every feature table of the use case from the curated lake tables and applies the
Feast repo. Windowed tables (`loopline.features.aggregates.WindowedFeatures`) are incremental:
each build appends the rows stamped after the previous build's watermark, computed from the events
of that span plus the longest window before it; events or labels that arrived late (stamped
before the watermark) make it replace every row after the earliest of them instead, and reset
the view's online watermark so that the next materialization reloads it. A table built by another
definition (`fingerprint`) or whose sources were rewritten is rebuilt in full. Other builders
(the frozen fraud_v1 daily snapshots) are recomputed in full.

`materialize` loads each online view up to its table's watermark (never past now); Feast
advances a watermark only once its write finished. `status` reports per view how far the
online store and the offline tables are; `skew` compares online values with point-in-time
offline values. Each step records a run of kind "features"; its summary carries the freshness
of every view for the control panel.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from loopline.lake import tables
from loopline.settings import Settings
from loopline.spec import FeatureTable, UseCaseSpec
from loopline.stages.common import (
    Context,
    StageError,
    builder,
    latest,
    open_context,
    record_version,
)
from loopline.store.tables import DatasetVersion

_US = timedelta(microseconds=1)


def run_features(
    settings: Settings,
    spec: UseCaseSpec,
    *,
    flow_run_id: str | None = None,
    full: bool = False,
) -> dict[str, Any]:
    """Build the feature tables, apply the Feast repo, and materialize the online store."""
    return run_feature_build(settings, spec, flow_run_id=flow_run_id, full=full, materialize=True)


def run_feature_build(
    settings: Settings,
    spec: UseCaseSpec,
    *,
    flow_run_id: str | None = None,
    full: bool = False,
    materialize: bool = False,
) -> dict[str, Any]:
    """Build the feature tables (incrementally unless `full`) and apply the Feast repo;
    with `materialize`, also bring the online store up to date."""
    from loopline.features import feast_ops

    ctx = open_context(settings, spec)
    inputs = _inputs(ctx)
    step = "build+materialize" if materialize else "build"
    with ctx.run("features", flow_run_id=flow_run_id, params={"step": step, "full": full}) as run:
        store = feast_ops.open_store(settings)
        summary = _build(ctx, store, inputs, run.run_id, full=full)
        if materialize:
            summary["materialized"] = _materialize(ctx, store, end=None)
        summary["freshness"] = feast_ops.freshness(store)
        run.log_metrics(_row_metrics(summary))
        run.set_summary(**summary)
    summary["run_id"] = run.run_id
    return summary


def run_feature_materialize(
    settings: Settings,
    spec: UseCaseSpec,
    *,
    end: datetime | None = None,
    flow_run_id: str | None = None,
) -> dict[str, Any]:
    """Materialize every built view up to its table's watermark, or up to `end` if earlier.

    Raises:
        ValueError: `end` is naive or in the future.
    """
    from loopline.features import feast_ops

    if end is not None:
        if end.tzinfo is None or end.utcoffset() is None:
            raise ValueError("end: must be timezone-aware (UTC), got a naive datetime")
        now = datetime.now(UTC)
        if end > now:
            raise ValueError(
                f"end: {end.isoformat()} is in the future (now {now.isoformat()}): rows stamped "
                "later are not final yet, so they cannot be served"
            )
    ctx = open_context(settings, spec)
    params = {"step": "materialize", "end": end.isoformat() if end else None}
    with ctx.run("features", flow_run_id=flow_run_id, params=params) as run:
        store = feast_ops.open_store(settings)
        summary: dict[str, Any] = {"materialized": _materialize(ctx, store, end=end)}
        summary["freshness"] = feast_ops.freshness(store)
        run.set_summary(**summary)
    summary["run_id"] = run.run_id
    return summary


def feature_status(settings: Settings, spec: UseCaseSpec) -> dict[str, Any]:
    """Per view: online watermark and lag, offline table version and watermark (no run)."""
    from loopline.features import feast_ops

    store = feast_ops.open_store(settings)
    views = {row["view"]: row for row in feast_ops.freshness(store)}
    out: dict[str, Any] = {"service": spec.features.service, "views": []}
    for table in spec.features.tables:
        row = dict(views.get(table.name, {"view": table.name, "watermark": None}))
        from loopline.features import delta_tables

        state = delta_tables.state(tables.table_uri(settings.lake_dir, table.name))
        row["registered"] = table.name in views
        row["table_version"] = state.version if state else None
        row["table_rows"] = state.rows if state else None
        row["table_watermark"] = state.watermark.isoformat() if state and state.watermark else None
        out["views"].append(row)
    return out


def run_feature_skew(
    settings: Settings,
    spec: UseCaseSpec,
    *,
    service: str | None = None,
    sample: int = 200,
    seed: int = 0,
    flow_run_id: str | None = None,
) -> dict[str, Any]:
    """Online against offline values for sampled entities of a service (default: the spec's)."""
    from loopline.features import feast_ops

    name = service or spec.features.service
    if sample < 1:
        raise ValueError(f"sample: must be >= 1, got {sample}")
    store = feast_ops.open_store(settings)
    declared = feast_ops.declared_definitions(store)  # reads the repo, writes nothing
    if name not in declared:
        raise StageError(
            f"feature service '{name}' is not declared in {settings.feature_repo} "
            f"(declared: {', '.join(sorted(declared))})"
        )
    ctx = open_context(settings, spec)
    params = {"step": "skew", "service": name, "sample": sample, "seed": seed}
    with ctx.run("features", flow_run_id=flow_run_id, params=params) as run:
        report = feast_ops.skew_report(store, name, sample=sample, seed=seed).as_dict()
        run.log_metrics({"skew_mismatches": report["mismatches"]})
        run.set_summary(skew=report)
    report["run_id"] = run.run_id
    return report


def run_served_skew(
    settings: Settings,
    spec: UseCaseSpec,
    *,
    sample: int = 1_000,
    seed: int = 0,
    flow_run_id: str | None = None,
) -> dict[str, Any]:
    """What logged requests were served against the point-in-time offline values at their times.

    Compares up to `sample` logged predictions (champion and canary answers scored by entity
    keys; full-payload requests are the caller's values and are skipped). The offline tables
    must already hold the served events: ingest the landed events and build the features first.
    Requests later than a table's watermark are not compared for its view (`beyond_watermark`).

    Raises:
        StageError: nothing logged to compare, or the log predates served-feature logging.
    """
    from loopline.features import feast_ops
    from loopline.features.served_skew import served_skew
    from loopline.serving.prediction_log import read_prediction_log

    if sample < 1:
        raise ValueError(f"sample: must be >= 1, got {sample}")
    logged = read_prediction_log(settings.prediction_log_dir)
    if "role" in logged.columns:
        logged = logged.filter(
            pl.col("role").is_in(["champion", "canary"]) | pl.col("role").is_null()
        )
    if "payload" in logged.columns:
        logged = logged.filter(~pl.col("payload").fill_null(False))
    if "features" not in logged.columns or logged.is_empty():
        raise StageError(
            f"no logged predictions with served features in {settings.prediction_log_dir}: "
            "serve some requests first (`loopline replay`)"
        )
    if logged.height > sample:
        logged = logged.sample(n=sample, seed=seed).sort("ts")
    store = feast_ops.open_store(settings)
    ctx = open_context(settings, spec)
    params = {"step": "skew-served", "sample": sample, "seed": seed}
    from loopline.features import delta_tables

    watermarks = {}
    for table in spec.features.tables:
        state = delta_tables.state(tables.table_uri(settings.lake_dir, table.name))
        watermarks[table.name] = state.watermark if state is not None else None
    with ctx.run("features", flow_run_id=flow_run_id, params=params) as run:
        try:
            report = served_skew(store, logged, spec, watermarks=watermarks).as_dict()
        except ValueError as exc:
            raise StageError(str(exc)) from exc
        run.log_metrics(
            {
                "served_skew_checked": report["checked"],
                "served_skew_mismatches": report["mismatches"],
            }
        )
        run.set_summary(served_skew=report)
    report["run_id"] = run.run_id
    return report


# ---------------------------------------------------------------------------------------------


def _inputs(ctx: Context) -> tuple[DatasetVersion, DatasetVersion]:
    """The newest events and labels versions (checked before a run is recorded)."""
    return latest(ctx, ctx.spec.events.table), latest(ctx, ctx.spec.labels.table)


def _build(
    ctx: Context,
    store: Any,
    inputs: tuple[DatasetVersion, DatasetVersion],
    run_id: str,
    *,
    full: bool,
) -> dict[str, Any]:
    from loopline.features import feast_ops
    from loopline.features.aggregates import WindowedFeatures

    spec = ctx.spec
    events_dv, labels_dv = inputs
    horizon = _newest(events_dv.uri, events_dv.table_version, spec.events.timestamp)
    if horizon is None:
        raise StageError(f"table '{spec.events.table}' holds no events yet")
    summary: dict[str, Any] = {"as_of": horizon.isoformat(), "tables": {}}
    for table in spec.features.tables:
        make = builder(table.builder)
        started = time.perf_counter()
        if isinstance(make, WindowedFeatures):
            result = _build_windowed(ctx, store, table, make, events_dv, labels_dv, run_id,
                                     full=full)  # fmt: skip
        else:
            result = _build_snapshot(ctx, store, table, make, events_dv, horizon, run_id)
        result["seconds"] = round(time.perf_counter() - started, 3)
        summary["tables"][table.name] = result
    feast_ops.apply_repo(store)
    return summary


def _forget_online(store: Any, view: str) -> None:
    """Before rewriting rows the online store may already hold: forget the view's watermark,
    so that the next materialization reloads it. Done first: a crash after it only costs a
    reload; a crash between a rewrite and this would leave the online store stale."""
    from loopline.features import feast_ops

    feast_ops.forget_watermarks(store, [view])


def _build_snapshot(
    ctx: Context, store: Any, table: FeatureTable, make: Any, events_dv: DatasetVersion,
    horizon: datetime, run_id: str,
) -> dict[str, Any]:  # fmt: skip
    """A builder without increments (fraud_v1 daily snapshots): recomputed in full."""
    from loopline.features import delta_tables, feast_ops

    settings = ctx.settings
    uri = tables.table_uri(settings.lake_dir, table.name)
    state = delta_tables.state(uri)
    if state is not None and state.watermark is not None:
        old = state.sources.get("events")
        earliest = (
            delta_tables.added_min(events_dv.uri, old, ctx.spec.events.timestamp)
            if old is not None
            else False
        )
        if earliest is False or (earliest is not None and earliest < state.watermark):
            _forget_online(store, table.name)  # snapshots before the watermark will change
    events = tables.read(events_dv.uri, events_dv.table_version)
    # The newest day counts as complete: its snapshot is stamped at the next midnight.
    end = horizon + timedelta(days=1)
    frame = make(events, as_of=end)
    watermark = datetime.combine(end.astimezone(UTC).date(), datetime.min.time(), tzinfo=UTC)
    version = tables.overwrite(
        uri,
        frame,
        metadata={
            "run_id": run_id,
            delta_tables.WATERMARK: watermark.isoformat(),
            delta_tables.SOURCES: json.dumps({"events": events_dv.table_version}),
            delta_tables.ROWS: str(frame.height),
        },
    )
    record_version(ctx, dataset=table.name, frame=frame, uri=uri, version=version, run_id=run_id)
    feast_ops.publish_feature_table(frame, settings.features_dir / f"{table.name}.parquet")
    return {
        "mode": "full",
        "rows": frame.height,
        "rows_written": frame.height,
        "table_version": version,
        "watermark": watermark.isoformat(),
    }


def _build_windowed(
    ctx: Context,
    store: Any,
    table: FeatureTable,
    make: Any,
    events_dv: DatasetVersion,
    labels_dv: DatasetVersion,
    run_id: str,
    *,
    full: bool,
) -> dict[str, Any]:
    """Append (or, after late data, replace) the rows after the table's watermark."""
    from loopline.features import delta_tables

    spec, settings = ctx.spec, ctx.settings
    uri = tables.table_uri(settings.lake_dir, table.name)
    ts = spec.events.timestamp
    horizon = _newest(events_dv.uri, events_dv.table_version, ts)
    assert horizon is not None
    until = make.window.floor(horizon) + make.grain
    sources = {"events": events_dv.table_version}
    stamps = {"events": (events_dv.uri, ts)}
    if make.uses_labels:
        sources["labels"] = labels_dv.table_version
        stamps["labels"] = (labels_dv.uri, spec.labels.timestamp)
    state = delta_tables.state(uri)

    since: datetime | None = None
    mode = "full"
    if not full and state is not None and state.fingerprint == make.fingerprint and state.watermark:
        since = state.watermark
        mode = "incremental"
        for name, (source_uri, column) in stamps.items():
            old = state.sources.get(name)
            earliest = delta_tables.added_min(source_uri, old, column) if old is not None else False
            if earliest is False:
                since, mode = None, "full"  # the source was rewritten: we cannot tell what changed
                break
            if earliest is not None and earliest < since:
                since, mode = make.window.floor(earliest), "late"
    if since is not None and since >= until:
        return {
            "mode": "unchanged",
            "rows": state.rows if state else 0,
            "rows_written": 0,
            "table_version": state.version if state else None,
            "watermark": state.watermark.isoformat() if state and state.watermark else None,
        }

    lookback = make.lookback
    low = since - lookback if since is not None else None
    events = _read_range(events_dv.uri, events_dv.table_version, ts, low, until)
    labels = None
    if make.uses_labels:
        labels = _read_range(labels_dv.uri, labels_dv.table_version, spec.labels.timestamp,
                             low, until)  # fmt: skip
        keys = pl.scan_delta(events_dv.uri, version=events_dv.table_version).select(
            spec.events.id, *spec.entity_keys
        )
        id_column = spec.labels.id or spec.events.id
        labels = labels.lazy().join(keys, left_on=id_column, right_on=spec.events.id).collect()
    write_mode = {"full": "overwrite", "incremental": "append", "late": "replace_after"}[mode]
    metadata = {
        "run_id": run_id,
        delta_tables.WATERMARK: until.isoformat(),
        delta_tables.FINGERPRINT: make.fingerprint,
        delta_tables.SOURCES: json.dumps(sources),
        delta_tables.SINCE: since.isoformat() if since else "",
    }
    if state is not None and (mode == "late" or mode == "full"):
        _forget_online(store, table.name)
    chunks = make.chunks(events, until=until, since=since, labels=labels)
    if mode == "full":
        chunks = _non_empty(chunks, make)
    version, written = delta_tables.write(uri, chunks, mode=write_mode, after=since,
                                          metadata=metadata)  # fmt: skip
    after = delta_tables.state(uri)
    assert after is not None
    _record(ctx, table.name, uri, after, written, sources, run_id)
    return {
        "mode": mode,
        "since": since.isoformat() if since else None,
        "rows": after.rows,
        "rows_written": written,
        "events_read": events.height,
        "table_version": version,
        "watermark": until.isoformat(),
    }


def _non_empty(chunks: Any, make: Any) -> Any:
    """Chunks, or the empty schema when there are none (a full build must set the schema)."""
    seen = False
    for chunk in chunks:
        seen = True
        yield chunk
    if not seen:
        yield make.empty()


def _record(
    ctx: Context,
    dataset: str,
    uri: str,
    state: Any,
    written: int,
    sources: dict[str, int],
    run_id: str,
) -> None:
    """A dataset version for a windowed table (its content hash covers its immutable files)."""
    from deltalake import DeltaTable

    from loopline.data.ingest import latest_version

    files = sorted(DeltaTable(uri).file_uris())
    digest = hashlib.sha256("\n".join(f.rsplit("/", 1)[-1] for f in files).encode()).hexdigest()
    schema = tables.schema(uri)
    with ctx.store.session() as session:
        parent = latest_version(session, dataset)
        session.add(
            DatasetVersion(
                dataset=dataset,
                use_case=ctx.spec.name,
                table_version=state.version,
                uri=uri,
                content_hash=f"files:{digest}",
                row_count=state.rows or 0,
                rows_in=written,
                rows_accepted=written,
                schema_={name: str(dtype) for name, dtype in schema.items()},
                sources={"derived_from": "events", "versions": sources},
                parent_id=parent.id if parent else None,
                run_id=run_id,
            )
        )


def _materialize(ctx: Context, store: Any, *, end: datetime | None) -> list[dict[str, Any]]:
    """Each built view up to min(its table's watermark, end, now)."""
    from loopline.features import delta_tables, feast_ops

    now = datetime.now(UTC)
    done: list[dict[str, Any]] = []
    registered = {v.name for v in store.list_feature_views(allow_cache=False)}
    for table in ctx.spec.features.tables:
        if table.name not in registered:
            continue
        state = delta_tables.state(tables.table_uri(ctx.settings.lake_dir, table.name))
        if state is None or state.watermark is None:
            continue
        until = min(state.watermark, now, *([end] if end else []))
        for item in feast_ops.materialize(store, end=until, views=[table.name], now=now):
            done.append(item.as_dict())
    return done


def _newest(uri: str, version: int, column: str) -> datetime | None:
    value = pl.scan_delta(uri, version=version).select(pl.col(column).max()).collect().item()
    return value if isinstance(value, datetime) else None


def _read_range(
    uri: str, version: int, column: str, low: datetime | None, high: datetime
) -> pl.DataFrame:
    """Rows of a lake table version with low <= column < high (no lower bound for None)."""
    keep = pl.col(column) < high
    if low is not None:
        keep &= pl.col(column) >= low
    return pl.scan_delta(uri, version=version).filter(keep).collect()


def _row_metrics(summary: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, row in summary.get("tables", {}).items():
        if row.get("rows") is not None:
            out[f"{name}_rows"] = float(row["rows"])
        out[f"{name}_rows_written"] = float(row.get("rows_written", 0))
    return out
