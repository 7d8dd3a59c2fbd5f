"""Exact sliding-window aggregates as change-point rows: the engine of the windowed feature tables.

A row at instant T describes, for one entity, the events in the half-open window [T - w, T) of
every declared window length w: sums of integer measures (a count is the sum of a column of
ones) and counts of distinct values. An event is never in a row stamped at its own instant, so a
point-in-time lookup for an event cannot see the event itself.

Time is cut into tiles of one `grain` (default one minute). An event at t becomes visible at the
end of its tile, `a(t) = floor(t / grain) * grain + grain`, and leaves a window of length w at
`a(t) + w`. The values only change at those instants, so the table holds one row per entity and
change point, not one per entity and minute: a point-in-time join (latest row at or before X)
then returns the windows [floor(X) - w, floor(X)), exact to the grain, for any X. An entity
whose windows have all emptied keeps its last (all-zero) row, which tells "inactive" from
"unknown".

Everything is integer arithmetic (the caller scales money to integer cents), so the result does
not depend on where a computation starts: an incremental update over (since, until], given the
events of [since - longest window, until), returns exactly the rows a full recompute returns
for that range. Sums are cumulative sums differenced at the window edges; a cumulative sum may
wrap around int64, which leaves each difference exact as long as the window's own sum fits.

Implementation: events sorted by (entity, time) become tiles; each entity's timeline is mapped to
one int64 axis (entity rank x span + tile), so every lookup is one `numpy.searchsorted` over
sorted arrays. Distinct counts use owned intervals: an occurrence of a value owns the instants
from its tile until the next occurrence of the same value or until it leaves the window,
whichever comes first, so the distinct count at T is the number of owned intervals covering T.
Entities are processed in chunks of about 200,000 events (small arrays are reused by the
allocator; large ones cost fresh pages every time), optionally on a thread pool.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

TIMESTAMP = "event_timestamp"
LAST_EVENT = "last_event_us"
_US = timedelta(microseconds=1)
_MAX_COMPOSITE = 2**62


@dataclass(frozen=True)
class WindowSpec:
    """What to aggregate, per entity, over which windows.

    Attributes:
        key: Integer entity column.
        windows: (name, length) pairs, e.g. ("1h", timedelta(hours=1)); lengths are positive
            multiples of `grain`.
        measures: (integer column, window names) pairs: the column is summed over each named
            window; output `<column>__<window>`.
        distinct: (column, window names) pairs; output `distinct_<column>__<window>`, the number
            of distinct non-null values in the window.
        recency: Also output `last_event_us`, the newest event time (epoch microseconds) before
            the row's instant.
        timestamp: Event time column (timezone-aware datetime).
        grain: Tile length: events become visible at the end of their tile (>= 1 second).
    """

    key: str
    windows: tuple[tuple[str, timedelta], ...]
    measures: tuple[tuple[str, tuple[str, ...]], ...] = ()
    distinct: tuple[tuple[str, tuple[str, ...]], ...] = ()
    recency: bool = False
    timestamp: str = TIMESTAMP
    grain: timedelta = timedelta(minutes=1)
    _units: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.grain < timedelta(seconds=1) or self.grain % timedelta(seconds=1):
            raise ValueError(f"grain: must be a whole number of seconds >= 1, got {self.grain}")
        if not self.windows:
            raise ValueError("windows: at least one window is needed")
        units: dict[str, int] = {}
        for name, length in self.windows:
            if name in units:
                raise ValueError(f"windows: name '{name}' is declared twice")
            if length <= timedelta(0) or length % self.grain:
                raise ValueError(
                    f"windows: '{name}' must be a positive multiple of the grain "
                    f"({self.grain}), got {length}"
                )
            units[name] = length // self.grain
        for kind, pairs in (("measures", self.measures), ("distinct", self.distinct)):
            seen: set[str] = set()
            for column, names in pairs:
                unknown = [n for n in names if n not in units]
                if unknown or not names:
                    raise ValueError(
                        f"{kind}: column '{column}' names unknown window(s) "
                        f"{unknown or '(none)'} (declared: {', '.join(units)})"
                    )
                if column in seen:
                    raise ValueError(f"{kind}: column '{column}' is declared twice")
                seen.add(column)
        object.__setattr__(self, "_units", units)

    @property
    def lookback(self) -> timedelta:
        """How much history before `since` an incremental update needs: the longest window."""
        return max(length for _, length in self.windows)

    @property
    def output_columns(self) -> list[str]:
        """Aggregate columns of the output, after the key and event_timestamp."""
        names = [f"{m}__{w}" for m, ws in self.measures for w in ws]
        names += [f"distinct_{c}__{w}" for c, ws in self.distinct for w in ws]
        return names + ([LAST_EVENT] if self.recency else [])

    def floor(self, instant: datetime) -> datetime:
        """`instant` floored to the grain (UTC)."""
        _require_aware(instant, "instant")
        g = self.grain // _US
        us = _epoch_us(instant)
        return _from_us((us // g) * g)


def window_aggregates(
    frame: pl.DataFrame,
    spec: WindowSpec,
    *,
    until: datetime,
    since: datetime | None = None,
    chunk_rows: int = 200_000,
    threads: int | None = None,
) -> pl.DataFrame:
    """Change-point rows with T in (since, until], sorted by key and event_timestamp.

    Args:
        frame: Events with the key, the timestamp, every measure (integers, no nulls) and the
            distinct columns (nulls are ignored). Must hold every event of
            [since - spec.lookback, until) when `since` is given; other rows are ignored.
        spec: The aggregation.
        until: Last instant to emit a row for (floored to the grain); timezone-aware.
        since: Emit only rows after this instant (a multiple of the grain); None for all.
        chunk_rows: Events per unit of work; entities are never split across chunks.
        threads: Worker threads (default 1: on small chunks one thread was as fast).

    Returns:
        key, event_timestamp (datetime[us, UTC]) and `spec.output_columns` (Int64).

    Raises:
        ValueError: a column is missing, has the wrong type or holds nulls; `until` or `since` is
            naive; `since` is not on the grain; or the range is too long for the int64 axis.
    """
    parts = list(iter_window_aggregates(frame, spec, until=until, since=since,
                                        chunk_rows=chunk_rows, threads=threads))  # fmt: skip
    if not parts:
        return _empty(frame, spec)
    return pl.concat(parts, rechunk=False)


def iter_window_aggregates(
    frame: pl.DataFrame,
    spec: WindowSpec,
    *,
    until: datetime,
    since: datetime | None = None,
    chunk_rows: int = 200_000,
    threads: int | None = None,
) -> Iterator[pl.DataFrame]:
    """`window_aggregates` as one frame per chunk of entities, in key order (bounded memory).

    Yields nothing when no row falls in the range. Arguments as for `window_aggregates`.
    """
    _check_frame(frame, spec)
    _require_aware(until, "until")
    g = spec.grain // _US
    hi = _epoch_us(until) // g
    lo: int | None = None
    if since is not None:
        _require_aware(since, "since")
        since_us = _epoch_us(since)
        if since_us % g:
            raise ValueError(f"since: must be a multiple of the grain ({spec.grain}), got {since}")
        lo = since_us // g
        if lo >= hi:
            return
    longest = max(spec._units.values())
    ts = pl.col(spec.timestamp).dt.epoch("us")
    tile = ts // g + 1
    keep = tile <= hi
    if lo is not None:
        keep &= tile > lo - longest
    distinct_columns = [c for c, _ in spec.distinct]
    events = (
        frame.lazy()
        .filter(keep)
        .select(
            pl.col(spec.key).cast(pl.Int64).alias("_k"),
            ts.alias("_t"),
            *[pl.col(m).cast(pl.Int64).alias(f"_m{i}") for i, (m, _) in enumerate(spec.measures)],
            *[pl.col(c).alias(f"_d{i}") for i, c in enumerate(distinct_columns)],
        )
        .sort("_k", "_t")
        .collect()
    )
    if events.is_empty():
        return
    bounds = _chunk_bounds(events["_k"].to_numpy(), chunk_rows)
    chunks = [events.slice(start, end - start) for start, end in bounds]
    workers = max(1, min(threads or 1, len(chunks)))

    def work(chunk: pl.DataFrame) -> pl.DataFrame | None:
        return _chunk(chunk, spec, lo=lo, hi=hi)

    if workers == 1:
        results: Iterator[pl.DataFrame | None] = map(work, chunks)
        for result in results:
            if result is not None:
                yield result
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # At most `workers` chunks in flight ahead of the consumer, so memory stays bounded.
        pending = [pool.submit(work, chunk) for chunk in chunks[:workers]]
        next_chunk = workers
        while pending:
            result = pending.pop(0).result()
            if next_chunk < len(chunks):
                pending.append(pool.submit(work, chunks[next_chunk]))
                next_chunk += 1
            if result is not None:
                yield result


def _chunk(
    events: pl.DataFrame, spec: WindowSpec, *, lo: int | None, hi: int
) -> pl.DataFrame | None:
    """Rows for one chunk of whole entities (events sorted by key, time)."""
    g = spec.grain // _US
    units = spec._units
    k = events["_k"].to_numpy()
    t = events["_t"].to_numpy()
    a = t // g + 1  # tile end: the instant (in grains) the event becomes visible

    new_key = np.empty(k.size, dtype=bool)
    new_key[0] = True
    np.not_equal(k[1:], k[:-1], out=new_key[1:])
    rank = np.cumsum(new_key) - 1
    keys = k[new_key]
    a_min = int(a.min())
    span = int(a.max()) - a_min + max(units.values()) + 2
    if keys.size * span >= _MAX_COMPOSITE:
        raise ValueError(
            f"time range too long for the int64 axis: {keys.size} entities x {span} tiles of "
            f"{spec.grain}; use a coarser grain or smaller chunks"
        )
    axis = rank * span + (a - a_min)

    # Tiles: runs of equal (entity, tile end).
    tile_start = _run_starts(axis)
    tile_end = np.append(tile_start[1:], axis.size) - 1
    tiles = axis[tile_start]
    tile_rank = tiles // span
    key_first_tile = np.flatnonzero(_run_starts_mask(tile_rank))

    # Cumulative sums of the measures at each tile end (int64; a wrap-around cancels out in the
    # differences below).
    cumulative: list[np.ndarray] = []
    for i in range(len(spec.measures)):
        running = np.zeros(tiles.size + 1, dtype=np.int64)
        with np.errstate(over="ignore"):
            running[1:] = np.cumsum(events[f"_m{i}"].to_numpy(), dtype=np.int64)[tile_end]
        cumulative.append(running)

    # Change points: every tile end, and every tile end plus a window length when the tile
    # moves something summed or counted over that window (a label tile does not move a count of
    # transactions), inside the range.
    moves: dict[str, np.ndarray] = {name: np.zeros(tiles.size, dtype=bool) for name in units}
    for i, (_, names) in enumerate(spec.measures):
        nonzero = np.diff(cumulative[i]) != 0
        for name in names:
            moves[name] |= nonzero
    for i, (_, names) in enumerate(spec.distinct):
        present = events[f"_d{i}"].is_not_null().to_numpy().astype(np.int64)
        counted = np.diff(np.concatenate(([0], np.cumsum(present)[tile_end]))) > 0
        for name in names:
            moves[name] |= counted
    candidates = np.concatenate(
        [tiles, *(tiles[moves[name]] + units[name] for name in units if moves[name].any())]
    )
    candidates.sort(kind="stable")  # already sorted runs: a merge
    points = candidates[_run_starts_mask(candidates)]
    p_rank = points // span
    p_tile = points % span + a_min
    inside = p_tile <= hi
    if lo is not None:
        inside &= p_tile > lo
    points, p_rank, p_tile = points[inside], p_rank[inside], p_tile[inside]
    if points.size == 0:
        return None
    first = key_first_tile[p_rank]
    now = np.searchsorted(tiles, points, side="right")  # 1-based index of the last tile <= T

    columns: dict[str, np.ndarray] = {}
    # 1-based index of the last tile before each window opens, clamped to the entity.
    used = {w for _, ws in spec.measures for w in ws}
    opened = {
        name: np.maximum(np.searchsorted(tiles, points - units[name], side="right"), first)
        for name in used
    }
    for i, (measure, names) in enumerate(spec.measures):
        at_now = cumulative[i].take(now)
        for name in names:
            with np.errstate(over="ignore"):
                columns[f"{measure}__{name}"] = at_now - cumulative[i].take(opened[name])
    for i, (column, names) in enumerate(spec.distinct):
        columns.update(
            _distinct(events, f"_d{i}", column, names, units, rank, a, a_min, span, points,
                      p_rank, keys.size)
        )  # fmt: skip
    if spec.recency:
        last_t = np.zeros(tiles.size + 1, dtype=np.int64)
        last_t[1:] = t[tile_end]
        columns[LAST_EVENT] = last_t.take(now)

    out = pl.DataFrame(
        {
            spec.key: keys[p_rank],
            TIMESTAMP: pl.Series(p_tile * g, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
            **{name: columns[name] for name in spec.output_columns},
        }
    )
    return out


def _distinct(
    events: pl.DataFrame,
    column: str,
    name: str,
    windows: Sequence[str],
    units: Mapping[str, int],
    rank: np.ndarray,
    a: np.ndarray,
    a_min: int,
    span: int,
    points: np.ndarray,
    p_rank: np.ndarray,
    n_keys: int,
) -> dict[str, np.ndarray]:
    """Distinct non-null values of `column` per window at each change point."""
    occ = (
        pl.DataFrame({"r": rank, "v": events[column], "a": a})
        .filter(pl.col("v").is_not_null())
        .unique()
        .sort("r", "v", "a")
    )
    out: dict[str, np.ndarray] = {}
    if occ.is_empty():
        zeros = np.zeros(points.size, dtype=np.int64)
        return {f"distinct_{name}__{w}": zeros for w in windows}
    r = occ["r"].to_numpy()
    oa = occ["a"].to_numpy()
    same_value_next = np.zeros(r.size, dtype=bool)
    same_value_next[:-1] = (r[1:] == r[:-1]) & (occ["v"][1:] == occ["v"][:-1]).to_numpy()
    following = np.empty(r.size, dtype=np.int64)
    following[:-1] = oa[1:]
    following[-1] = 0
    base = r * span - a_min
    key_starts = np.arange(n_keys, dtype=np.int64) * span
    starts = np.sort(base + oa)
    started = np.searchsorted(starts, points, side="right")
    started -= np.searchsorted(starts, key_starts, side="left")[p_rank]
    for window in windows:
        limit = oa + units[window]
        end = np.where(same_value_next, np.minimum(following, limit), limit)
        ends = np.sort(base + end)
        ended = np.searchsorted(ends, points, side="right")
        ended -= np.searchsorted(ends, key_starts, side="left")[p_rank]
        ended -= started
        np.negative(ended, out=ended)
        out[f"distinct_{name}__{window}"] = ended
    return out


def _run_starts_mask(values: np.ndarray) -> np.ndarray:
    mask = np.empty(values.size, dtype=bool)
    if values.size:
        mask[0] = True
        np.not_equal(values[1:], values[:-1], out=mask[1:])
    return mask


def _run_starts(values: np.ndarray) -> np.ndarray:
    return np.flatnonzero(_run_starts_mask(values))


def _chunk_bounds(keys: np.ndarray, rows: int) -> list[tuple[int, int]]:
    """Slices of about `rows` events that never split an entity."""
    if rows < 1:
        raise ValueError(f"chunk_rows: must be >= 1, got {rows}")
    starts = _run_starts(keys)
    bounds: list[tuple[int, int]] = []
    begin = 0
    while begin < keys.size:
        # The first entity start at or after begin + rows closes the chunk.
        j = np.searchsorted(starts, begin + rows, side="left")
        end = int(starts[j]) if j < starts.size else keys.size
        bounds.append((begin, end))
        begin = end
    return bounds


def _check_frame(frame: pl.DataFrame, spec: WindowSpec) -> None:
    measures = [m for m, _ in spec.measures]
    needed = [spec.key, spec.timestamp, *measures, *(c for c, _ in spec.distinct)]
    missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
    if missing:
        raise ValueError(f"events: missing column(s) {', '.join(missing)}")
    dtype = frame.schema[spec.timestamp]
    if not isinstance(dtype, pl.Datetime) or dtype.time_zone is None:
        raise ValueError(f"{spec.timestamp}: must be a timezone-aware datetime (UTC), got {dtype}")
    for column in (spec.key, *measures):
        if not frame.schema[column].is_integer():
            raise ValueError(f"{column}: must be an integer column, got {frame.schema[column]}")
    for column in (spec.key, spec.timestamp, *measures):
        nulls = frame[column].null_count()
        if nulls:
            raise ValueError(f"{column}: must not be null ({nulls} null value(s))")


def _empty(frame: pl.DataFrame, spec: WindowSpec) -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            spec.key: pl.Int64,
            TIMESTAMP: pl.Datetime("us", "UTC"),
            **{name: pl.Int64 for name in spec.output_columns},
        }
    )


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name}: must be timezone-aware (UTC), got a naive datetime")


def _epoch_us(instant: datetime) -> int:
    delta = instant.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return delta // _US


def _from_us(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
