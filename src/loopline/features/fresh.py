"""Fresh online features: exact windowed values at an event's own time, from recent events.

The batch path computes a windowed feature table offline (`WindowedFeatures.chunks`) and
materializes its newest row per entity to the online store, so the online value is as old as
the last materialization and never includes the events being served. This module keeps, per
windowed table and entity, the recent events (the longest window, plus the newest event before
it for recency, plus the labels for label-aware tables) and evaluates the same builder on them:

- `values_at(event, at)`: the row the offline table holds for the event's entities at `at`
  (the latest change point at or before `at` floored to the grain), i.e. exactly what the
  offline point-in-time join returns for an event at `at`. Every earlier event counts; events of
  the same grain tile or later do not, as offline.
- `fold(events)`: adds events (after they were scored) and returns, per touched entity, the row
  stamped when the newest event becomes visible, for writing to Feast's online store.

Nothing here is a second implementation of the windows: both calls run the table's own
`WindowedFeatures.chunks` (stream, window engine, finish) over one entity's events, so the online
value equals the offline one by construction; `loopline features skew --served` measures it.

Tables that are not `WindowedFeatures` (daily snapshots) have no fresh path: their online values
come from the materialized store as before.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from loopline.features.aggregates import WindowedFeatures
from loopline.features.windows import TIMESTAMP

# Events older than the longest window before an entity's newest event are kept this much longer,
# so that an event arriving a little out of order is still valued exactly.
_MARGIN = timedelta(days=1)


@dataclass(frozen=True)
class FreshView:
    """One windowed feature table served fresh.

    Attributes:
        name: Feature view (and lake table) name.
        key: Entity join key of the table.
        table: The builder that computes the table offline.
        ttl: The Feast view's time to live: a newest row older than this is "unknown", as the
            offline join says; None for no limit.
    """

    name: str
    key: str
    table: WindowedFeatures
    ttl: timedelta | None = None


@dataclass(frozen=True)
class ViewValues:
    """The features of one view for one entity at one instant.

    Attributes:
        view: Feature view name.
        entity: The entity's key value.
        values: Feature name -> value (None for every feature when the entity is unknown).
        stamp: The change point the values hold from (the feature timestamp); None when unknown.
    """

    view: str
    entity: Any
    values: dict[str, Any]
    stamp: datetime | None

    @property
    def found(self) -> bool:
        """Whether the entity had a row (offline it would have been found)."""
        return self.stamp is not None


@dataclass
class _Entity:
    events: pl.DataFrame
    labels: pl.DataFrame | None


class FreshFeatures:
    """Recent events per windowed table and entity, and the exact values they imply.

    Thread-safe: folds take a lock and replace an entity's frames with new ones; reads take the
    current frames (immutable) and compute outside the lock.
    """

    def __init__(
        self,
        views: Sequence[FreshView],
        *,
        timestamp: str,
        label_timestamp: str | None = None,
        event_id: str | None = None,
        label_schema: Mapping[str, pl.DataType] | None = None,
    ) -> None:
        """Args:
        views: The windowed tables to serve fresh.
        timestamp: Event time column.
        label_timestamp: Label arrival time column (label-aware tables).
        event_id: Event id column.
        label_schema: Columns of the labels (with the entity keys), for entities that have
            none yet.
        """
        self.views = {view.name: view for view in views}
        self.timestamp = timestamp
        self.label_timestamp = label_timestamp
        self.event_id = event_id
        self._lock = threading.Lock()
        self._entities: dict[str, dict[Any, _Entity]] = {view.name: {} for view in views}
        self._event_schema: dict[str, pl.DataType] | None = None
        self._label_schema = dict(label_schema) if label_schema is not None else None
        self._names: dict[str, list[str]] = {}
        # (view, entity) -> (instant, values): the values at an instant only change when an
        # event older than it arrives, so requests of one grain tile share one evaluation.
        # A fold of an event older than an instant already valued bumps `_late`, which a memo
        # records; `_seen` (the newest instant valued) is set before the state is read, so a
        # fold racing an evaluation still invalidates what that evaluation stores.
        self._memo: dict[tuple[str, Any], tuple[datetime, int, ViewValues]] = {}
        self._late: dict[tuple[str, Any], int] = {}
        self._seen: dict[tuple[str, Any], datetime] = {}

    # -- loading -----------------------------------------------------------------------------

    def load(self, events: pl.DataFrame, labels: pl.DataFrame | None = None) -> None:
        """Replace the state with these events (and labels carrying the entity keys).

        Keeps, per view and entity, the events of the longest window before the newest event
        plus the newest one before that (recency), and the labels that arrived in that span.
        """
        state: dict[str, dict[Any, _Entity]] = {}
        self._event_schema = dict(events.schema)
        if labels is not None:
            self._label_schema = dict(labels.schema)
        for name, view in self.views.items():
            state[name] = _split(events, labels, view, self.timestamp, self.label_timestamp)
        with self._lock:
            self._entities = state
            self._memo.clear()
            self._late.clear()
            self._seen.clear()

    # -- reading -----------------------------------------------------------------------------

    def values_at(
        self, keys: Mapping[str, Any], at: datetime, views: Sequence[str]
    ) -> list[ViewValues]:
        """The offline row of each named view for the entity in `keys`, at `at`.

        Args:
            keys: Join key -> value of the event being scored.
            at: The event's own time (timezone-aware).
            views: Fresh view names to evaluate (others are skipped by the caller).

        Raises:
            ValueError: `at` is naive or a join key is missing.
        """
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(f"{self.timestamp}: must be timezone-aware (UTC)")
        out: list[ViewValues] = []
        for name in views:
            view = self.views[name]
            if view.key not in keys or keys[view.key] is None:
                raise ValueError(f"{view.key}: missing join key of view '{name}'")
            entity = keys[view.key]
            instant = view.table.window.floor(at)
            key = (name, entity)
            if key not in self._seen or self._seen[key] < instant:
                self._seen[key] = instant  # before reading the state: see `fold`
            late = self._late.get(key, 0)
            memo = self._memo.get(key)
            if memo is not None and memo[0] == instant and memo[1] == late:
                out.append(memo[2])
                continue
            state = self._entities[name].get(entity)
            values = self._evaluate(view, entity, state, instant)
            self._memo[key] = (instant, late, values)
            out.append(values)
        return out

    def fold(self, events: pl.DataFrame) -> list[tuple[str, Any]]:
        """Add events to every view's state; the (view, entity) pairs they touched.

        Cheap: nothing is evaluated here (`latest_rows` values the touched entities later).
        """
        if events.is_empty():
            return []
        with self._lock:
            if self._event_schema is None:
                self._event_schema = dict(events.schema)
            touched: list[tuple[str, Any]] = []
            for name, view in self.views.items():
                per_entity = self._entities[name]
                for (entity,), part in events.group_by(view.key, maintain_order=True):
                    if entity is None:
                        continue
                    old = per_entity.get(entity)
                    part = part.select(old.events.columns) if old is not None else part
                    merged = pl.concat([old.events, part], how="vertical_relaxed") if old else part
                    cut = _prune_before(merged, self.timestamp, view.table.lookback)
                    new = _Entity(cut, old.labels if old else None)
                    per_entity[entity] = new
                    oldest = part.get_column(self.timestamp).min()
                    assert isinstance(oldest, datetime)
                    seen = self._seen.get((name, entity))
                    if seen is not None and oldest < seen:
                        # A late event changes instants already valued: forget them.
                        self._late[(name, entity)] = self._late.get((name, entity), 0) + 1
                    touched.append((name, entity))
        return touched

    def latest_rows(self, keys: Sequence[tuple[str, Any]]) -> list[ViewValues]:
        """Per (view, entity): the row stamped when the entity's newest event becomes visible
        (the end of its grain tile), the row the offline table gets then: for the online store.
        """
        out = []
        for name, entity in dict.fromkeys(keys):
            view = self.views[name]
            state = self._entities[name].get(entity)
            if state is None or state.events.is_empty():
                continue
            newest = state.events.get_column(self.timestamp).max()
            assert isinstance(newest, datetime)
            instant = view.table.window.floor(newest) + view.table.grain
            out.append(self._evaluate(view, entity, state, instant))
        return out

    def entities(self, view: str) -> int:
        """How many entities of a view are held."""
        return len(self._entities.get(view, {}))

    # -- internals ---------------------------------------------------------------------------

    def _features(self, view: FreshView) -> list[str]:
        names = self._names.get(view.name)
        if names is None:
            names = [c for c in view.table.empty().columns if c not in (view.key, TIMESTAMP)]
            self._names[view.name] = names
        return names

    def _evaluate(
        self, view: FreshView, entity: Any, state: _Entity | None, instant: datetime
    ) -> ViewValues:
        features = self._features(view)
        unknown = ViewValues(view.name, entity, dict.fromkeys(features), None)
        if state is None:
            return unknown
        labels = state.labels
        if view.table.uses_labels and labels is None:
            labels = _empty_labels(self._label_schema, view.key, self.label_timestamp)
        # No filter first: the engine only counts what is visible at `instant` (what happened
        # before it) and emits rows stamped at or before it, sorted by time.
        rows = [
            chunk
            for chunk in view.table.chunks(state.events, until=instant, labels=labels)
            if chunk.height
        ]
        if not rows:
            return unknown
        last = rows[-1].tail(1)
        stamp = last.get_column(TIMESTAMP).item()
        if view.ttl is not None and stamp < instant - view.ttl:
            return unknown
        record = last.row(0, named=True)
        return ViewValues(view.name, entity, {f: record[f] for f in features}, stamp)


def _split(
    events: pl.DataFrame,
    labels: pl.DataFrame | None,
    view: FreshView,
    timestamp: str,
    label_timestamp: str | None,
) -> dict[Any, _Entity]:
    """Per entity of a view: its recent events (and labels), pruned to what values need."""
    out: dict[Any, _Entity] = {}
    if events.is_empty():
        return out
    span = view.table.lookback + _MARGIN
    ordered = events.filter(pl.col(view.key).is_not_null())
    limit = pl.col(timestamp).max().over(view.key) - span
    recent = ordered.filter(pl.col(timestamp) >= limit)
    # The newest event before the span still sets recency (seconds since the last event).
    older = ordered.filter(pl.col(timestamp) < limit).sort(timestamp).group_by(view.key).tail(1)
    keep = pl.concat([older.select(recent.columns), recent]).sort(view.key, timestamp)
    by_entity_labels: dict[Any, pl.DataFrame] = {}
    if view.table.uses_labels and labels is not None and view.key in labels.columns:
        assert label_timestamp is not None
        newest = events.get_column(timestamp).max()
        assert isinstance(newest, datetime)
        arrived = labels.filter(
            pl.col(view.key).is_not_null(), pl.col(label_timestamp) >= newest - span
        )
        for (entity,), part in arrived.group_by(view.key):
            by_entity_labels[entity] = part.sort(label_timestamp)
    for (entity,), part in keep.group_by(view.key, maintain_order=True):
        out[entity] = _Entity(part, by_entity_labels.get(entity))
    return out


def _prune_before(frame: pl.DataFrame, timestamp: str, lookback: timedelta) -> pl.DataFrame:
    """Drop events no value can need: older than the window before the newest event, except
    the newest such event (recency)."""
    newest = frame.get_column(timestamp).max()
    assert isinstance(newest, datetime)
    limit = newest - lookback - _MARGIN
    old = frame.filter(pl.col(timestamp) < limit)
    if old.height <= 1:
        return frame
    return pl.concat([old.sort(timestamp).tail(1), frame.filter(pl.col(timestamp) >= limit)])


def _empty_labels(
    schema: Mapping[str, pl.DataType] | None, key: str, label_timestamp: str | None
) -> pl.DataFrame:
    if schema is not None:
        return pl.DataFrame(schema=dict(schema))
    columns: dict[str, pl.DataType] = {key: pl.Int64()}
    if label_timestamp is not None:
        columns[label_timestamp] = pl.Datetime("us", "UTC")
    return pl.DataFrame(schema=columns)
