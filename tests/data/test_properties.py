"""Property: whatever mix of good and bad rows a batch holds, no row is lost and no bad row is
accepted (accepted + quarantined = rows in; a hard failure writes nothing at all)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import polars as pl
from data_helpers import NOW, SPEC, Env, event, with_contract, write_csv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopline.data.contracts import ContractError
from loopline.data.ingest import quarantine_uri
from loopline.lake import tables
from loopline.lake.artifacts import ArtifactStore
from loopline.settings import Settings
from loopline.store import Store

# Every kind of row a batch may hold: None is a good row, the rest break one soft rule each.
SOFT = {
    "negative amount": {"amount": "-3.5"},
    "huge amount": {"amount": "1e9"},
    "NaN amount": {"amount": "NaN"},
    "inf amount": {"amount": "inf"},
    "unknown category": {"merchant_category": "casino"},
    "unknown channel": {"channel": "carrier-pigeon"},
    "unknown country": {"country": "XX"},
    "hour out of range": {"hour": "25"},
    "far future": {"event_timestamp": "2035-01-01T00:00:00+00:00", "hour": "0"},
    "before the epoch": {"event_timestamp": "1960-01-01T00:00:00+00:00", "hour": "0"},
}
HARD = {
    "unparseable id number": {"customer_id": "seven"},
    "empty key": {"transaction_id": ""},
}
TABLE = with_contract(SPEC.events, max_quarantine_fraction=1.0)

rows = st.lists(
    st.one_of(st.none(), st.sampled_from(sorted(SOFT)), st.sampled_from(sorted(HARD))),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=25,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(kinds=rows, shuffle=st.randoms(use_true_random=False))
def test_no_row_is_lost_and_no_bad_row_is_accepted(kinds: list[str | None], shuffle) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        config = Settings(home=home)
        store = Store.open(config)
        env = Env(config, store, ArtifactStore(config.artifacts_dir), Path(tmp) / "in")
        batch = []
        for i, kind in enumerate(kinds):
            broken = SOFT.get(kind or "", HARD.get(kind or "", {}))
            batch.append(event(i, **broken))
        order = list(range(len(batch)))
        shuffle.shuffle(order)
        path = write_csv(env.raw / "batch.csv", [batch[i] for i in order])
        ids = {f"tx-{i:05d}": kind for i, kind in enumerate(kinds)}
        uri = tables.table_uri(config.lake_dir, TABLE.table)
        try:
            if any(kind in HARD for kind in kinds):
                try:
                    env.ingest(TABLE, [path], now=NOW)
                except ContractError:
                    assert not tables.exists(uri)
                    assert env.state().versions == []
                    return
                raise AssertionError("a batch with a hard failure was accepted")
            result = env.ingest(TABLE, [path], now=NOW)
            bad = {tx for tx, kind in ids.items() if kind is not None}
            good = {tx for tx, kind in ids.items() if kind is None}
            assert result.rows + result.rows_quarantined == result.rows_in == len(kinds)
            if good:
                accepted = set(tables.read(uri).get_column("transaction_id").to_list())
                assert accepted == good
            else:
                assert result.rows == 0
            if bad:
                quarantined = pl.read_delta(quarantine_uri(config.lake_dir, TABLE))
                assert set(quarantined.get_column("transaction_id").to_list()) == bad
                reasons = quarantined.filter(pl.col("_reason") == "")
                assert reasons.is_empty()
        finally:
            store.dispose()
