"""The sliding-window engine: hand-computed rows, a brute-force point-in-time oracle,
incremental == full, chunking invariance, and clear errors."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from loopline.features.windows import LAST_EVENT, WindowSpec, window_aggregates

START = datetime(2024, 1, 1, tzinfo=UTC)
WINDOWS = (("1h", timedelta(hours=1)), ("1d", timedelta(days=1)), ("7d", timedelta(days=7)))
SPEC = WindowSpec(
    key="k",
    windows=WINDOWS,
    measures=(("n", ("1h", "1d", "7d")), ("x", ("1d", "7d")), ("flag", ("7d",))),
    distinct=(("v", ("1h", "7d")),),
    recency=True,
    grain=timedelta(minutes=10),
)


def _ts(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _events(rows: list[tuple]) -> pl.DataFrame:
    """Rows of (timestamp, k, n, x, flag, v)."""
    return pl.DataFrame(
        rows,
        schema={
            "event_timestamp": pl.Datetime("us", "UTC"),
            "k": pl.Int64,
            "n": pl.Int64,
            "x": pl.Int64,
            "flag": pl.Int64,
            "v": pl.String,
        },
        orient="row",
    )


# Entity 1: two events in one tile, one an hour later, a "label-like" row (n=0) a day later.
HAND = _events(
    [
        (_ts(2024, 1, 1, 10, 1), 1, 1, 10, 0, "a"),
        (_ts(2024, 1, 1, 10, 9, 59), 1, 1, 20, 0, "b"),
        (_ts(2024, 1, 1, 11, 0), 1, 1, 5, 0, "a"),
        (_ts(2024, 1, 2, 12, 0), 1, 0, 0, 1, None),
    ]
)


def _row(frame: pl.DataFrame, key: int, at: datetime) -> dict:
    rows = frame.filter((pl.col("k") == key) & (pl.col("event_timestamp") == at))
    assert rows.height == 1, f"expected a row for k={key} at {at}"
    return rows.row(0, named=True)


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        # The first tile (10:00-10:10) becomes visible at its end, 10:10.
        (_ts(2024, 1, 1, 10, 10), {"n__1h": 2, "x__1d": 30, "distinct_v__1h": 2, "flag__7d": 0}),
        # At 11:10 the first tile leaves the 1h window as the 11:00 event enters it.
        (_ts(2024, 1, 1, 11, 10), {"n__1h": 1, "x__1d": 35, "distinct_v__1h": 1}),
        (_ts(2024, 1, 1, 12, 10), {"n__1h": 0, "n__1d": 3, "distinct_v__1h": 0}),
        (_ts(2024, 1, 2, 10, 10), {"n__1d": 1, "x__1d": 5, "n__7d": 3, "distinct_v__7d": 2}),
        # The label-like row counts in flag, never in n.
        (_ts(2024, 1, 2, 12, 10), {"flag__7d": 1, "n__7d": 3, "n__1d": 0}),
        (_ts(2024, 1, 8, 10, 10), {"n__7d": 1, "x__7d": 5, "distinct_v__7d": 1, "flag__7d": 1}),
        (_ts(2024, 1, 9, 12, 10), {"n__7d": 0, "flag__7d": 0, "distinct_v__7d": 0}),
    ],
)
def test_hand_computed_rows(at, expected):
    out = window_aggregates(HAND, SPEC, until=_ts(2024, 2, 1))
    row = _row(out, 1, at)
    assert {name: row[name] for name in expected} == expected


def test_rows_are_change_points_only_and_end_with_an_empty_state():
    out = window_aggregates(HAND, SPEC, until=_ts(2024, 2, 1))
    stamps = out["event_timestamp"].to_list()
    # Entries at 10:10 and 11:10 (+ exits after 1h, 1d, 7d), the label-like row at 12:10 on
    # 2 Jan (+ its exit after 7d only: it moves nothing counted over 1h or 1d).
    assert stamps == [
        _ts(2024, 1, 1, 10, 10), _ts(2024, 1, 1, 11, 10), _ts(2024, 1, 1, 12, 10),
        _ts(2024, 1, 2, 10, 10), _ts(2024, 1, 2, 11, 10), _ts(2024, 1, 2, 12, 10),
        _ts(2024, 1, 8, 10, 10), _ts(2024, 1, 8, 11, 10), _ts(2024, 1, 9, 12, 10),
    ]  # fmt: skip
    last = out.row(-1, named=True)
    assert all(last[c] == 0 for c in SPEC.output_columns if c != LAST_EVENT)
    assert last[LAST_EVENT] == int(_ts(2024, 1, 2, 12).timestamp() * 1_000_000)


def test_an_event_at_a_row_instant_is_not_in_that_row():
    events = _events([(_ts(2024, 1, 1, 10, 0), 1, 1, 7, 0, "a")])
    out = window_aggregates(events, SPEC, until=_ts(2024, 1, 3))
    # 10:00 is the start of a tile: the event is visible at 10:10, not at 10:00.
    assert out["event_timestamp"].min() == _ts(2024, 1, 1, 10, 10)


def _random_events(seed: int, n: int = 400) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    minutes = rng.integers(0, 20 * 24 * 60, n)
    labelish = rng.random(n) < 0.3
    return _events(
        [
            (
                START + timedelta(minutes=int(m), seconds=int(s)),
                int(k),
                0 if lab else 1,
                0 if lab else int(x),
                int(lab and f),
                None if (lab or i % 9 == 0) else f"m{v}",
            )
            for i, (m, s, k, x, lab, f, v) in enumerate(
                zip(
                    minutes, rng.integers(0, 60, n), rng.integers(0, 6, n),
                    rng.integers(-50, 500, n), labelish, rng.random(n) < 0.5,
                    rng.integers(0, 5, n), strict=True,
                )
            )
        ]
    )  # fmt: skip


def _oracle(events: list[dict], key: int, floor: datetime) -> dict[str, int] | None:
    """Brute force: the windows [floor - w, floor) of one entity; None before any event."""
    mine = [e for e in events if e["k"] == key and e["event_timestamp"] < floor]
    if not mine:
        return None
    out: dict[str, int] = {}
    lengths = dict(WINDOWS)
    for measure, names in SPEC.measures:
        for name in names:
            inside = [e for e in mine if e["event_timestamp"] >= floor - lengths[name]]
            out[f"{measure}__{name}"] = sum(e[measure] for e in inside)
    for column, names in SPEC.distinct:
        for name in names:
            inside = [e for e in mine if e["event_timestamp"] >= floor - lengths[name]]
            out[f"distinct_{column}__{name}"] = len({e[column] for e in inside} - {None})
    newest = max(e["event_timestamp"] for e in mine)
    out[LAST_EVENT] = (newest - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_point_in_time_lookups_match_a_brute_force_oracle(seed):
    events = _random_events(seed)
    out = window_aggregates(events, SPEC, until=START + timedelta(days=30))
    rows = events.to_dicts()
    rng = np.random.default_rng(seed + 100)
    for minute in rng.integers(-60, 30 * 24 * 60, 150):
        at = START + timedelta(minutes=int(minute), seconds=int(rng.integers(0, 60)))
        for key in range(6):
            seen = out.filter((pl.col("k") == key) & (pl.col("event_timestamp") <= at))
            expected = _oracle(rows, key, SPEC.floor(at))
            if expected is None:
                assert seen.is_empty()
                continue
            latest = seen.row(-1, named=True)
            assert {c: latest[c] for c in expected} == expected, (key, at)


@pytest.mark.parametrize("seed", [4, 5])
@pytest.mark.parametrize(
    "cut",
    [timedelta(0), timedelta(days=3, hours=5, minutes=20), timedelta(days=12), timedelta(days=40)],
)
def test_incremental_update_equals_full_recompute_exactly(seed, cut):
    events = _random_events(seed)
    until = START + timedelta(days=30)
    full = window_aggregates(events, SPEC, until=until)
    since = START + cut
    head = window_aggregates(events, SPEC, until=since)
    # The increment sees only the events it needs: the longest window before `since`, onwards.
    needed = events.filter(pl.col("event_timestamp") >= since - SPEC.lookback)
    tail = window_aggregates(needed, SPEC, until=until, since=since)
    assert tail["event_timestamp"].min() is None or tail["event_timestamp"].min() > since
    assert pl.concat([head, tail]).sort("k", "event_timestamp").equals(full)


@pytest.mark.parametrize(("chunk_rows", "threads"), [(1, 1), (7, 2), (10**6, 1)])
def test_chunking_and_threads_do_not_change_the_result(chunk_rows, threads):
    events = _random_events(9)
    expected = window_aggregates(events, SPEC, until=START + timedelta(days=30))
    got = window_aggregates(
        events, SPEC, until=START + timedelta(days=30), chunk_rows=chunk_rows, threads=threads
    )
    assert got.equals(expected)


def test_sums_stay_exact_when_cumulative_sums_wrap_int64():
    big = 2**62
    events = _events([(START + timedelta(hours=i), 1, 1, big, 0, None) for i in range(6)])
    spec = WindowSpec(key="k", windows=(("1h", timedelta(hours=1)),), measures=(("x", ("1h",)),))
    out = window_aggregates(events, spec, until=START + timedelta(days=1))
    assert set(out["x__1h"].to_list()) == {big, 0}


def test_nothing_in_range_gives_an_empty_frame_with_the_schema():
    out = window_aggregates(HAND.clear(), SPEC, until=_ts(2024, 2, 1))
    assert out.height == 0
    assert out.columns == ["k", "event_timestamp", *SPEC.output_columns]
    late = window_aggregates(HAND, SPEC, until=_ts(2024, 2, 1), since=_ts(2024, 1, 30))
    assert late.height == 0


@pytest.mark.parametrize(
    ("frame", "kwargs", "message"),
    [
        (HAND.drop("v"), {}, "events: missing column(s) v"),
        (
            HAND.with_columns(pl.col("event_timestamp").dt.replace_time_zone(None)),
            {},
            "event_timestamp: must be a timezone-aware datetime",
        ),
        (HAND.with_columns(pl.col("x").cast(pl.Float64)), {}, "x: must be an integer column"),
        (HAND.with_columns(k=pl.lit(None, pl.Int64)), {}, "k: must not be null (4 null value(s))"),
        (HAND, {"until": datetime(2024, 2, 1)}, "until: must be timezone-aware"),
        (HAND, {"since": _ts(2024, 1, 1, 10, 5)}, "since: must be a multiple of the grain"),
        (HAND, {"chunk_rows": 0}, "chunk_rows: must be >= 1, got 0"),
    ],
)
def test_bad_input_is_rejected_with_the_field_named(frame, kwargs, message):
    arguments = {"until": _ts(2024, 2, 1), **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        window_aggregates(frame, SPEC, **arguments)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"windows": ()}, "windows: at least one window is needed"),
        ({"windows": (("1h", timedelta(seconds=90)),)}, "'1h' must be a positive multiple"),
        ({"grain": timedelta(milliseconds=10)}, "grain: must be a whole number of seconds"),
        ({"measures": (("n", ("2d",)),)}, "measures: column 'n' names unknown window(s) ['2d']"),
        ({"distinct": (("v", ()),)}, "distinct: column 'v' names unknown window(s) (none)"),
    ],
)
def test_bad_specs_are_rejected(kwargs, message):
    base = {"key": "k", "windows": (("1h", timedelta(hours=1)),)}
    with pytest.raises(ValueError, match=re.escape(message)):
        WindowSpec(**{**base, **kwargs})
