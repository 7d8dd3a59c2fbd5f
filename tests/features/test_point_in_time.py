"""Property: loopline's point-in-time join equals a brute-force oracle on random frames.

For random feature tables of two views (different entities and ttls) and random entity/label
rows, every feature value comes from the latest feature row at or before the label's timestamp,
never from after it, never older than the view's ttl, and missing (null) exactly when no row is
eligible; passthrough columns and row order are kept.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Int64
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopline.features.offline_store import point_in_time_join

START = datetime(2024, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)

feature_rows = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 200), st.integers(-1000, 1000)),
    max_size=40,
    unique_by=lambda r: (r[0], r[1]),  # one row per entity and instant, as loopline writes them
)
entity_rows = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(-20, 260)), min_size=1, max_size=30
)
ttls = st.one_of(st.none(), st.integers(1, 120).map(lambda m: m * MINUTE))


def _view(name: str, key: str, path: Path, ttl: timedelta | None) -> FeatureView:
    entity = Entity(name=f"{name}_entity", join_keys=[key], value_type=ValueType.INT64)
    view = FeatureView(
        name=name,
        entities=[entity],
        ttl=ttl or timedelta(0),
        schema=[Field(name=f"{name}_value", dtype=Int64), Field(name=f"{name}_at", dtype=Int64)],
        source=FileSource(name=f"{name}_source", path=str(path), timestamp_field="event_timestamp"),
    )
    view.entity_columns = [Field(name=key, dtype=Int64)]  # what `feast apply` infers
    return view


def _table(rows: list[tuple[int, int, int]], key: str, name: str) -> pl.DataFrame:
    return pl.DataFrame(
        {
            key: [r[0] for r in rows],
            "event_timestamp": [START + r[1] * MINUTE for r in rows],
            f"{name}_value": [r[2] for r in rows],
            f"{name}_at": [r[1] for r in rows],  # the row's own minute, to check eligibility
        },
        schema={
            key: pl.Int64,
            "event_timestamp": pl.Datetime("us", "UTC"),
            f"{name}_value": pl.Int64,
            f"{name}_at": pl.Int64,
        },
    )


def _oracle(rows, key_value, minute, ttl) -> tuple[int | None, int | None]:
    """Latest eligible row by brute force: (value, its minute) or (None, None)."""
    eligible = [
        r
        for r in rows
        if r[0] == key_value and r[1] <= minute and (ttl is None or (minute - r[1]) * MINUTE <= ttl)
    ]
    if not eligible:
        return None, None
    best = max(eligible, key=lambda r: r[1])
    return best[2], best[1]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows_a=feature_rows, rows_b=feature_rows, entities=entity_rows, ttl_a=ttls, ttl_b=ttls)
def test_point_in_time_join_equals_brute_force(rows_a, rows_b, entities, ttl_a, ttl_b):
    with tempfile.TemporaryDirectory() as folder:
        path_a, path_b = Path(folder) / "a.parquet", Path(folder) / "b.parquet"
        _table(rows_a, "customer_id", "a").write_parquet(path_a)
        _table(rows_b, "merchant_id", "b").write_parquet(path_b)
        views = [
            _view("a", "customer_id", path_a, ttl_a),
            _view("b", "merchant_id", path_b, ttl_b),
        ]
        entity = pl.DataFrame(
            {
                "customer_id": [e[0] for e in entities],
                "merchant_id": [e[1] for e in entities],
                "event_timestamp": [START + e[2] * MINUTE for e in entities],
                "label": list(range(len(entities))),
            },
            schema_overrides={"event_timestamp": pl.Datetime("us", "UTC")},
        )
        refs = ["a:a_value", "a:a_at", "b:b_value", "b:b_at"]
        got, versions = point_in_time_join(entity, views, refs, timestamp="event_timestamp")

    assert versions == {"a_source": None, "b_source": None}
    assert got.select(entity.columns).equals(entity)  # order and passthrough kept
    for i, (customer, merchant, minute) in enumerate(entities):
        row = got.row(i, named=True)
        for name, key_value, rows, ttl in (
            ("a", customer, rows_a, ttl_a),
            ("b", merchant, rows_b, ttl_b),
        ):
            value, at = _oracle(rows, key_value, minute, ttl)
            assert (row[f"{name}_value"], row[f"{name}_at"]) == (value, at)
            if at is not None:
                assert at <= minute  # nothing from after the label's timestamp
                assert ttl is None or (minute - at) * MINUTE <= ttl  # ttl respected


def test_ties_pick_the_newest_created_row():
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.parquet"
        frame = pl.DataFrame(
            {
                "customer_id": [1, 1],
                "event_timestamp": [START, START],
                "created": [START, START + MINUTE],
                "a_value": [10, 20],
                "a_at": [0, 0],
            },
            schema_overrides={
                "event_timestamp": pl.Datetime("us", "UTC"),
                "created": pl.Datetime("us", "UTC"),
            },
        )
        frame.reverse().write_parquet(path)  # the newest created row comes first in the file
        view = _view("a", "customer_id", path, None)
        view.batch_source.created_timestamp_column = "created"
        entity = pl.DataFrame(
            {"customer_id": [1], "event_timestamp": [START + MINUTE]},
            schema_overrides={"event_timestamp": pl.Datetime("us", "UTC")},
        )
        got, _ = point_in_time_join(entity, [view], ["a:a_value"], timestamp="event_timestamp")
    assert got["a_value"].to_list() == [20]
