"""Features for requests: fresh windowed values at the event's time, the rest from Feast.

`OnlineFeatures` is what the prediction API asks for a request's features:

- windowed feature views (tables built by a `WindowedFeatures` builder) are valued at the
  event's own time from the recent events of its entities (`loopline.features.fresh`), so a
  request sees every earlier event, exactly as the offline point-in-time join does;
- other views (daily snapshots) are read from Feast's online store as materialized;
- after scoring, `fold` adds the event: the fresh state moves on, the rows it makes are written
  to Feast's online store (the store of record for online values, so `feast serve` and any
  other reader see them), and the event is landed as a raw file of the events table
  (`<raw>/<events table>/served-*.parquet`), which the next `loopline ingest` validates and
  versions, so the next batch build agrees with what was served.

Writes to Feast and to the landing files happen on a background thread (every `FLUSH_S`), off
the request's critical path; `flush()` forces them. The fresh state is loaded from the lake
(and from landed files not yet ingested) at startup and reloaded when the lake's events or
labels table gains a version.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from loopline.features.aggregates import WindowedFeatures
from loopline.features.fresh import FreshFeatures, FreshView, ViewValues
from loopline.lake import tables
from loopline.settings import Settings
from loopline.spec import UseCaseSpec

log = logging.getLogger(__name__)

FLUSH_S = 0.5
LANDING_PREFIX = "served-"
NOT_FOUND = "_not_found"

FeatureLookup = Callable[[Sequence[Mapping[str, Any]], str], list[dict[str, Any]]]
"""(rows holding the entity join keys, feature service name) -> one dict of features per row
(with `NOT_FOUND`: the "key=value" strings of unknown entities)."""

POLARS_TYPES: dict[str, pl.DataType] = {
    "int": pl.Int64(),
    "float": pl.Float64(),
    "string": pl.String(),
    "category": pl.String(),
    "bool": pl.Boolean(),
    "datetime": pl.Datetime("us", "UTC"),
}


class FeaturesUnavailable(RuntimeError):
    """The feature store cannot be read (not applied yet, unreachable)."""


@dataclass(frozen=True)
class ServedFeatures:
    """The features one request was served.

    Attributes:
        values: Every feature of the service by name (None where the entity is unknown).
        timestamps: View -> ISO time of the row the values came from (None: unknown entity, or
            a materialized view whose row time the online store does not report).
        unknown: "join_key=value" of each entity no view had a row for.
        fresh: Views valued at the event's time.
    """

    values: dict[str, Any]
    timestamps: dict[str, str | None]
    unknown: list[str]
    fresh: tuple[str, ...] = ()


@dataclass
class OnlineStats:
    """Counters of the fresh path (shown by /health)."""

    events_folded: int = 0
    feast_rows_written: int = 0
    feast_write_errors: int = 0
    events_landed: int = 0
    landing_errors: int = 0
    pending_feast_rows: int = 0
    pending_landing: int = 0
    reloads: int = 0
    entities: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None


def event_frame(rows: Sequence[Mapping[str, Any]], spec: UseCaseSpec) -> pl.DataFrame:
    """Events as a frame with every contract column, typed by the contract (missing -> null)."""
    columns = spec.events.columns
    return pl.DataFrame(
        [{name: row.get(name) for name in columns} for row in rows],
        schema={name: POLARS_TYPES[rule.type] for name, rule in columns.items()},
    )


def _resolve(reference: str) -> Any:
    module, name = reference.split(":")
    return getattr(importlib.import_module(module), name)


class OnlineFeatures:
    """Request features for one use case: fresh windowed views plus Feast's online store."""

    def __init__(
        self,
        settings: Settings,
        spec: UseCaseSpec,
        *,
        lookup: FeatureLookup | None = None,
        fresh: bool | None = None,
    ) -> None:
        """Nothing is opened here (see `open`).

        Args:
            settings: Configuration.
            spec: The use case.
            lookup: Replaces the Feast online-store read (tests, custom stores); with it, no
                view is served fresh unless `fresh` is True.
            fresh: Serve windowed views fresh; default: when Feast is used.
        """
        self.settings = settings
        self.spec = spec
        self._lookup = lookup
        self._use_fresh = fresh if fresh is not None else lookup is None
        self._store: Any = None
        self.error: str | None = None
        self._fresh: FreshFeatures | None = None
        self._tables: dict[str, WindowedFeatures] = {}
        self._lake_versions: tuple[int | None, int | None] = (None, None)
        self._pending_feast: dict[tuple[str, Any], None] = {}  # touched (view, entity), ordered
        self._pending_landing: list[dict[str, Any]] = []
        self._pending_lock = threading.Lock()
        self._open_lock = threading.Lock()
        self._attempted = -float("inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = OnlineStats()

    # -- life cycle --------------------------------------------------------------------------

    def open(self, *, retry: bool = False) -> None:
        """Open Feast (unless a lookup was injected) and load the fresh state from the lake.

        A failure is remembered in `error` (requests then answer 503 naming it) and, with
        `retry`, tried again at most every 5 seconds.
        """
        with self._open_lock:
            if retry and time.monotonic() - self._attempted < 5.0:
                return
            self._attempted = time.monotonic()
            try:
                if self._lookup is None and self._store is None:
                    from loopline.features import feast_ops

                    store = feast_ops.open_store(self.settings)
                    self._store = store
                    self._lookup = _feast_lookup(store)
                if self._use_fresh and self._fresh is None:
                    self._fresh = self._build_fresh()
                    self._reload()
            except Exception as exc:  # serve /health anyway; /predict reports it
                self.error = f"{type(exc).__name__}: {exc}"
                log.exception("opening the online features failed")
                return
            self.error = None
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._flush_forever, name="online-features", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Flush what is pending and stop the background thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()

    @property
    def ready(self) -> bool:
        """Whether features can be served."""
        return self._lookup is not None and (not self._use_fresh or self._fresh is not None)

    def fresh_views(self) -> tuple[str, ...]:
        """Views served fresh."""
        return tuple(self._fresh.views) if self._fresh is not None else ()

    # -- serving -----------------------------------------------------------------------------

    def features(
        self,
        event: Mapping[str, Any],
        at: datetime,
        service: str,
        views: Mapping[str, Sequence[str]],
    ) -> ServedFeatures:
        """The features of `service` for one event at its time `at`.

        Args:
            event: The event's fields, holding the join keys.
            at: The event's time (timezone-aware).
            service: Feature service name.
            views: The service's views and their features (the layout).

        Raises:
            FeaturesUnavailable: the feature store cannot be read.
        """
        if not self.ready:
            self.open(retry=True)
        if not self.ready:
            raise FeaturesUnavailable(f"feature store unavailable: {self.error}")
        fresh_names = [v for v in views if v in self.fresh_views()]
        stored_names = [v for v in views if v not in fresh_names]
        values: dict[str, Any] = {}
        stamps: dict[str, str | None] = {}
        unknown: list[str] = []
        if stored_names:
            assert self._lookup is not None
            found = dict(self._lookup([event], service)[0])
            unknown.extend(str(e) for e in found.pop(NOT_FOUND, []))
            for view in stored_names:
                for name in views[view]:
                    values[name] = found.get(name)
                stamps[view] = None
        if fresh_names:
            assert self._fresh is not None
            for row in self._fresh.values_at(event, at, fresh_names):
                values.update({n: row.values.get(n) for n in views[row.view]})
                stamps[row.view] = row.stamp.isoformat() if row.stamp else None
                label = f"{self._fresh.views[row.view].key}={row.entity}"
                if not row.found and label not in unknown:
                    unknown.append(label)
        return ServedFeatures(values, stamps, unknown, tuple(fresh_names))

    def fold(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Add events: fresh state now; their rows to Feast and the events to the lake on the
        next flush (a background thread, every FLUSH_S)."""
        if not events:
            return
        frame = event_frame(events, self.spec)
        touched = self._fresh.fold(frame) if self._fresh is not None else []
        with self._pending_lock:
            self._pending_feast.update(dict.fromkeys(touched))
            self._pending_landing.extend(frame.to_dicts())
            self.stats.events_folded += frame.height
            self.stats.pending_feast_rows = len(self._pending_feast)
            self.stats.pending_landing = len(self._pending_landing)

    def flush(self) -> None:
        """Write pending rows to Feast's online store and land pending events, now."""
        with self._pending_lock:
            touched = list(self._pending_feast)
            self._pending_feast.clear()
            events = self._pending_landing
            self._pending_landing = []
        if touched and self._store is not None and self._fresh is not None:
            # Each touched entity valued once per flush, at its newest event's visibility.
            rows = self._fresh.latest_rows(touched)
            if self._attempt("feast_write_errors", lambda: self._write_feast(rows)):
                self.stats.feast_rows_written += len(rows)
            else:
                with self._pending_lock:  # try again with the next flush
                    self._pending_feast.update(dict.fromkeys(touched))
        if events:
            if self._attempt("landing_errors", lambda: self._land(events)):
                self.stats.events_landed += len(events)
            else:
                with self._pending_lock:
                    self._pending_landing[:0] = events
        with self._pending_lock:
            self.stats.pending_feast_rows = len(self._pending_feast)
            self.stats.pending_landing = len(self._pending_landing)
        if self._fresh is not None:
            self.stats.entities = {v: self._fresh.entities(v) for v in self._fresh.views}

    def _attempt(self, counter: str, work: Callable[[], None]) -> bool:
        """Run a background write; on failure count it under `counter` and keep the error."""
        try:
            work()
        except Exception as exc:
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("online features: %s", counter.replace("_", " "))
            return False
        return True

    def reload_if_changed(self) -> bool:
        """Reload the fresh state when the lake's events or labels table moved; True if so."""
        if self._fresh is None:
            return False
        if self._versions() == self._lake_versions:
            return False
        self.flush()  # landed files are part of what is loaded
        self._reload()
        self.stats.reloads += 1
        return True

    # -- internals ---------------------------------------------------------------------------

    def _build_fresh(self) -> FreshFeatures:
        views: list[FreshView] = []
        for table in self.spec.features.tables:
            made = _resolve(table.builder)
            if not isinstance(made, WindowedFeatures):
                continue
            ttl = self._ttl(table.name)
            views.append(FreshView(table.name, made.key, made, ttl))
            self._tables[table.name] = made
        labels = {n: POLARS_TYPES[r.type] for n, r in self.spec.labels.columns.items()}
        events = self.spec.events.columns
        labels.update({k: POLARS_TYPES[events[k].type] for k in self.spec.entity_keys})
        return FreshFeatures(
            views,
            timestamp=self.spec.events.timestamp,
            label_timestamp=self.spec.labels.timestamp,
            event_id=self.spec.events.id,
            label_schema=labels,
        )

    def _ttl(self, view: str) -> timedelta | None:
        if self._store is None:
            return None
        try:
            ttl = self._store.get_feature_view(view, allow_registry_cache=True).ttl
        except Exception:  # not applied yet: no TTL known, values are still exact
            return None
        return ttl if ttl and ttl > timedelta(0) else None

    def _versions(self) -> tuple[int | None, int | None]:
        lake = self.settings.lake_dir
        events = tables.table_uri(lake, self.spec.events.table)
        labels = tables.table_uri(lake, self.spec.labels.table)
        return (
            tables.current_version(events) if tables.exists(events) else None,
            tables.current_version(labels) if tables.exists(labels) else None,
        )

    def _reload(self) -> None:
        assert self._fresh is not None
        versions = self._versions()
        events, labels = self._read_lake(versions)
        self._fresh.load(events, labels)
        self._lake_versions = versions

    def _read_lake(
        self, versions: tuple[int | None, int | None]
    ) -> tuple[pl.DataFrame, pl.DataFrame | None]:
        spec = self.spec
        lake = self.settings.lake_dir
        ts = spec.events.timestamp
        schema = {n: POLARS_TYPES[r.type] for n, r in spec.events.columns.items()}
        parts: list[pl.DataFrame] = []
        if versions[0] is not None:
            uri = tables.table_uri(lake, spec.events.table)
            scan = pl.scan_delta(uri, version=versions[0]).select(list(schema))
            parts.append(_recent(scan, ts, self._lookback(), self._keys()).collect())
        landed = self._read_landed(schema)
        if landed is not None:
            parts.append(landed)
        events = (
            pl.concat([p.cast(schema) for p in parts], how="vertical_relaxed")
            .unique(spec.events.id, keep="first", maintain_order=True)
            .sort(ts)
            if parts
            else pl.DataFrame(schema=schema)
        )
        labels = None
        if versions[1] is not None and any(t.uses_labels for t in self._tables.values()):
            uri = tables.table_uri(lake, spec.labels.table)
            id_column = spec.labels.id or spec.events.id
            arrived = pl.scan_delta(uri, version=versions[1])
            if events.height:
                newest = events.get_column(ts).max()
                low = newest - self._lookback() - timedelta(days=1)  # type: ignore[operator]
                arrived = arrived.filter(pl.col(spec.labels.timestamp) >= low)
            keys = events.select(spec.events.id, *spec.entity_keys).lazy()
            if versions[0] is not None:
                all_keys = pl.scan_delta(
                    tables.table_uri(lake, spec.events.table), version=versions[0]
                ).select(spec.events.id, *spec.entity_keys)
                keys = pl.concat([all_keys, keys]).unique(spec.events.id)
            labels = arrived.join(keys, left_on=id_column, right_on=spec.events.id).collect()
        return events, labels

    def _lookback(self) -> timedelta:
        return max((t.lookback for t in self._tables.values()), default=timedelta(0))

    def _keys(self) -> list[str]:
        return list(dict.fromkeys(t.key for t in self._tables.values()))

    def _landing_dir(self) -> Path:
        return self.settings.raw_dir / self.spec.events.table

    def _read_landed(self, schema: Mapping[str, pl.DataType]) -> pl.DataFrame | None:
        folder = self._landing_dir()
        files = sorted(folder.glob(f"{LANDING_PREFIX}*.parquet")) if folder.is_dir() else []
        if not files:
            return None
        return pl.concat([pl.read_parquet(f).cast(dict(schema)) for f in files])

    def _land(self, events: list[dict[str, Any]]) -> None:
        frame = event_frame(events, self.spec)
        folder = self._landing_dir()
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        path = folder / f"{LANDING_PREFIX}{stamp}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = folder / f".{path.name}.tmp"
        frame.write_parquet(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def _write_feast(self, rows: list[ViewValues]) -> None:
        import pandas as pd

        by_view: dict[str, list[ViewValues]] = {}
        for row in rows:
            if row.stamp is not None:
                by_view.setdefault(row.view, []).append(row)
        for view, items in by_view.items():
            key = self._tables[view].key
            frame = pd.DataFrame(
                [{key: r.entity, "event_timestamp": r.stamp, **r.values} for r in items]
            )
            self._store.write_to_online_store(view, frame)

    def _flush_forever(self) -> None:
        while not self._stop.wait(FLUSH_S):
            try:
                self.flush()
                self.reload_if_changed()
            except Exception as exc:  # keep the thread alive; the error is in the stats
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("online features background work failed")


def _recent(scan: pl.LazyFrame, ts: str, lookback: timedelta, keys: list[str]) -> pl.LazyFrame:
    """Events of the lookback (plus a day) before the newest, and each entity's newest event
    before that (it still sets recency)."""
    span = lookback + timedelta(days=1)
    newest = scan.select(pl.col(ts).max()).collect().item()
    if newest is None:
        return scan
    low = newest - span
    recent = scan.filter(pl.col(ts) >= low)
    columns = recent.collect_schema().names()
    older = [
        scan.filter(pl.col(ts) < low).sort(ts).group_by(key).tail(1).select(columns) for key in keys
    ]
    # An event may be the older one of two entities: `_read_lake` keeps one copy by event id.
    return pl.concat([recent, *older])


def _feast_lookup(store: Any) -> FeatureLookup:
    from loopline.features import feast_ops

    def lookup(rows: Sequence[Mapping[str, Any]], service: str) -> list[dict[str, Any]]:
        return feast_ops.online_features(store, rows, service, unknown="report")

    return lookup
