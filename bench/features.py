"""Benchmark: building the fraud_v2 feature tables, loopline (Polars + NumPy) vs pandas.

Builds `customer_activity` and `merchant_activity` (exact sliding windows of 1h, 1d, 7d and 30d
as change-point rows, see loopline.features.windows) from seeded demo transactions and labels,
and the same tables with an independent pandas implementation (group-wise time-based rolling
sums for counts and amounts, a sorted delta sum for distinct counts, `merge_asof` for
recency). It checks that both give the same rows and values (integers exactly, floats within
1e-9 relative), aborts with exit code 1 if not, then times both (median of --repeats). It also
times an incremental build of the last day against the full build and checks that
full(until day - 1) + increment(day) == full(until day) exactly, and times writing the tables
as Delta commits.

    .venv/bin/python bench/features.py --rows 200000
    .venv/bin/python bench/features.py --rows 10000000 --peer-rows 500000 --repeats 1

With --peer-rows below --rows, pandas runs on that many rows and loopline runs on both sizes:
the ratio compares the same rows. The last line is `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from loopline.data.demo import DemoConfig, generate_demo
from loopline.features import delta_tables
from loopline.features.aggregates import (
    WINDOWS,
    WindowedFeatures,
    customer_activity,
    merchant_activity,
)

DAYS = 90
TX_PER_CUSTOMER_DAY = 0.51  # what the demo generator produces, measured
GRAIN_US = 60_000_000
FLOAT_TOLERANCE = 1e-9
_W = {name: int(length / timedelta(microseconds=1)) for name, length in WINDOWS}


def _progress(message: str) -> None:
    print(f"[features] {message}", file=sys.stderr, flush=True)


def demo_data(rows: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """About `rows` seeded demo transactions over 90 days, and their labels."""
    customers = max(1, math.ceil(rows / (DAYS * TX_PER_CUSTOMER_DAY)))
    data = generate_demo(DemoConfig(days=DAYS, customers=customers, seed=seed))
    return data.transactions, data.labels


# ---------------------------------------------------------------------------------------------
# loopline
# ---------------------------------------------------------------------------------------------


def ours(table: WindowedFeatures, tx: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """A full build of one table with loopline's builder, in memory."""
    return table(tx, labels=labels)


# ---------------------------------------------------------------------------------------------
# pandas peer
# ---------------------------------------------------------------------------------------------


def _tiles(frame: pd.DataFrame, key: str, measures: list[str]) -> pd.DataFrame:
    """Per (key, tile end): summed measures and the newest event time."""
    frame = frame.assign(a=(frame["t"] // GRAIN_US + 1) * GRAIN_US)
    agg = {m: (m, "sum") for m in measures} | {"last": ("t", "max")}
    return frame.groupby([key, "a"], sort=True).agg(**agg).reset_index()


def _points(
    tiles: pd.DataFrame, key: str, windows: dict[str, list[str]], until: int
) -> pd.DataFrame:
    """Change points: tile ends, plus tile ends + w where a measure over w moved."""
    parts = [tiles[[key, "a"]]]
    for name, measures in windows.items():
        moved = (tiles[measures] != 0).any(axis=1)
        parts.append(tiles.loc[moved, [key]].assign(a=tiles.loc[moved, "a"] + _W[name]))
    points = pd.concat(parts, ignore_index=True).drop_duplicates()
    return points[points["a"] <= until].sort_values([key, "a"], ignore_index=True)


def _rolling(tiles: pd.DataFrame, points: pd.DataFrame, key: str, measure: str, window: str):
    """Sum of `measure` over tiles with end in (T - w, T], at each point T (time-based
    rolling window, closed on the right, over tiles and points together)."""
    both = pd.concat(
        [tiles[[key, "a", measure]], points[[key, "a"]].assign(**{measure: 0, "_p": 1})],
        ignore_index=True,
    )
    both["_p"] = both["_p"].fillna(0)
    both = both.sort_values([key, "a", "_p"], ignore_index=True)
    both["ts"] = pd.to_datetime(both["a"], unit="us")
    rolled = (
        both.groupby(key, sort=False)
        .rolling(pd.Timedelta(microseconds=_W[window]), on="ts", closed="right")[measure]
        .sum()
    )
    # Indexed by (key, ts) in group order: the frame is sorted by key then time, so the values
    # line up with its rows.
    both["value"] = rolled.to_numpy()
    picked = both[both["_p"] == 1]
    return picked.set_index([key, "a"])["value"].astype("int64")


def _distinct(
    frame: pd.DataFrame, points: pd.DataFrame, key: str, column: str, window: str
) -> pd.Series:
    """Distinct non-null `column` values in (T - w, T] of tile ends: each occurrence owns its
    tile end until the next occurrence of the value or until it leaves the window."""
    occ = frame.dropna(subset=[column]).assign(a=(frame["t"] // GRAIN_US + 1) * GRAIN_US)
    occ = occ[[key, column, "a"]].drop_duplicates().sort_values([key, column, "a"])
    following = occ.groupby([key, column], sort=False)["a"].shift(-1)
    limit = occ["a"] + _W[window]
    end = limit.where(following.isna(), np.minimum(following.fillna(0).astype("int64"), limit))
    deltas = pd.concat(
        [
            pd.DataFrame({key: occ[key], "a": occ["a"], "d": 1}),
            pd.DataFrame({key: occ[key], "a": end, "d": -1}),
        ]
    )
    deltas = deltas.groupby([key, "a"], sort=True)["d"].sum().reset_index()
    deltas["count"] = deltas.groupby(key)["d"].cumsum()
    merged = pd.merge_asof(
        points.sort_values("a"), deltas.sort_values("a")[[key, "a", "count"]],
        on="a", by=key, direction="backward",
    )  # fmt: skip
    merged["count"] = merged["count"].fillna(0).astype("int64")
    return merged.set_index([key, "a"])["count"]


def _last(tiles: pd.DataFrame, points: pd.DataFrame, key: str) -> pd.Series:
    merged = pd.merge_asof(
        points.sort_values("a"), tiles.sort_values("a")[[key, "a", "last"]],
        on="a", by=key, direction="backward",
    )  # fmt: skip
    return merged.set_index([key, "a"])["last"].astype("int64")


def _std(n: pd.Series, s: pd.Series, ss: pd.Series) -> pd.Series:
    nf, sf = n.astype("float64"), s.astype("float64")
    var = (nf * ss.astype("float64") - sf * sf) / (nf * (nf - 1))
    return (np.sqrt(var.clip(lower=0)) / 100).where(n > 1)


def _mean(n: pd.Series, s: pd.Series) -> pd.Series:
    return (s.astype("float64") / (n.astype("float64") * 100)).where(n > 0)


def pandas_customer(tx: pd.DataFrame, until: int) -> pd.DataFrame:
    """customer_activity with pandas."""
    frame = pd.DataFrame(
        {
            "customer_id": tx["customer_id"],
            "t": tx["t"],
            "n": 1,
            "cents": (tx["amount"] * 100).round().astype("int64"),
            "merchant_id": tx["merchant_id"],
        }
    )
    frame["sq"] = frame["cents"] * frame["cents"]
    frame = frame[(frame["t"] // GRAIN_US + 1) * GRAIN_US <= until]
    key = "customer_id"
    tiles = _tiles(frame, key, ["n", "cents", "sq"])
    points = _points(tiles, key, {w: ["n"] for w in _W}, until)
    out = points.set_index([key, "a"])
    for w in _W:
        n = _rolling(tiles, points, key, "n", w)
        s = _rolling(tiles, points, key, "cents", w)
        out[f"cust_txn_count_{w}"] = n
        out[f"cust_amount_sum_{w}"] = s / 100
        if w != "1h":
            ss = _rolling(tiles, points, key, "sq", w)
            out[f"cust_amount_mean_{w}"] = _mean(n, s)
            out[f"cust_amount_std_{w}"] = _std(n, s, ss)
            out[f"cust_distinct_merchants_{w}"] = _distinct(frame, points, key, "merchant_id", w)
    out["cust_last_txn_epoch_us"] = _last(tiles, points, key)
    return out.reset_index().rename(columns={"a": "event_timestamp"})


def pandas_merchant(tx: pd.DataFrame, labels: pd.DataFrame, until: int) -> pd.DataFrame:
    """merchant_activity with pandas."""
    cents = (tx["amount"] * 100).round().astype("int64")
    sales = pd.DataFrame(
        {
            "merchant_id": tx["merchant_id"], "t": tx["t"], "n": 1, "cents": cents,
            "sq": cents * cents, "labels": 0, "frauds": 0, "customer_id": tx["customer_id"],
        }
    )  # fmt: skip
    labelled = labels.merge(tx[["transaction_id", "merchant_id"]], on="transaction_id")
    arrivals = pd.DataFrame(
        {
            "merchant_id": labelled["merchant_id"], "t": labelled["label_t"], "n": 0, "cents": 0,
            "sq": 0, "labels": 1, "frauds": (labelled["is_fraud"] != 0).astype("int64"),
            "customer_id": np.nan,
        }
    )  # fmt: skip
    frame = pd.concat([sales, arrivals], ignore_index=True)
    frame = frame[(frame["t"] // GRAIN_US + 1) * GRAIN_US <= until]
    key = "merchant_id"
    tiles = _tiles(frame, key, ["n", "cents", "sq", "labels", "frauds"])
    moved = {"1h": ["n"], "1d": ["n"], "7d": ["n", "cents", "frauds"], "30d": ["n", "cents", "sq",
             "labels", "frauds"]}  # fmt: skip
    points = _points(tiles, key, moved, until)
    out = points.set_index([key, "a"])
    n = {w: _rolling(tiles, points, key, "n", w) for w in _W}
    for w in _W:
        out[f"merch_txn_count_{w}"] = n[w]
    for w in ("7d", "30d"):
        out[f"merch_amount_mean_{w}"] = _mean(n[w], _rolling(tiles, points, key, "cents", w))
    s30 = _rolling(tiles, points, key, "cents", "30d")
    out["merch_amount_std_30d"] = _std(n["30d"], s30, _rolling(tiles, points, key, "sq", "30d"))
    for w in ("1d", "30d"):
        out[f"merch_distinct_customers_{w}"] = _distinct(frame, points, key, "customer_id", w)
    frauds = {w: _rolling(tiles, points, key, "frauds", w) for w in ("7d", "30d")}
    out["merch_fraud_labels_7d"] = frauds["7d"]
    out["merch_fraud_labels_30d"] = frauds["30d"]
    seen = _rolling(tiles, points, key, "labels", "30d")
    out["merch_labels_30d"] = seen
    out["merch_fraud_rate_30d"] = (frauds["30d"] / seen).where(seen > 0)
    return out.reset_index().rename(columns={"a": "event_timestamp"})


def peer(
    tx: pl.DataFrame, labels: pl.DataFrame, until: datetime
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables with pandas (input conversion included)."""
    limit = int((until - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
    ptx = tx.select(
        "transaction_id", "customer_id", "merchant_id", "amount",
        t=pl.col("event_timestamp").dt.epoch("us"),
    ).to_pandas()  # fmt: skip
    plab = labels.select(
        "transaction_id", "is_fraud", label_t=pl.col("label_timestamp").dt.epoch("us")
    ).to_pandas()
    return pandas_customer(ptx, limit), pandas_merchant(ptx, plab, limit)


# ---------------------------------------------------------------------------------------------


def compare(ours_frame: pl.DataFrame, peer_frame: pd.DataFrame, key: str) -> float:
    """Same rows and values (floats within 1e-9 relative); returns the largest float gap."""
    theirs = pl.from_pandas(peer_frame).with_columns(
        pl.col("event_timestamp").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    )
    mine = ours_frame.sort(key, "event_timestamp")
    theirs = theirs.select(mine.columns).sort(key, "event_timestamp")
    if mine.height != theirs.height:
        raise AssertionError(f"{key}: {mine.height} rows vs pandas {theirs.height}")
    if not mine.select(key, "event_timestamp").equals(theirs.select(key, "event_timestamp")):
        raise AssertionError(f"{key}: the change points differ")
    worst = 0.0
    for name, dtype in mine.schema.items():
        if name in (key, "event_timestamp"):
            continue
        a, b = mine[name], theirs[name].cast(dtype)
        if not (a.is_null() == b.is_null()).all():
            raise AssertionError(f"{name}: nulls differ")
        if dtype.is_float():
            gap = ((a - b).abs() / b.abs().clip(lower_bound=1.0)).max()
            worst = max(worst, float(gap or 0.0))
            if gap is not None and gap > FLOAT_TOLERANCE:
                raise AssertionError(f"{name}: values differ by {gap:.3g} (relative)")
        elif not a.equals(b):
            raise AssertionError(f"{name}: values differ")
    return worst


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_and_write(
    tx: pl.DataFrame, labels: pl.DataFrame, folder: Path, *, until: datetime | None = None,
    since: datetime | None = None,
) -> int:  # fmt: skip
    """Both tables as the features stage builds them: streamed chunk by chunk into Delta
    commits (bounded memory). Returns the rows written."""
    rows = 0
    for table in (customer_activity, merchant_activity):
        end = until or table.until(tx)
        assert end is not None
        chunks = table.chunks(tx, until=end, since=since, labels=labels)
        mode = "append" if since is not None else "overwrite"
        rows += delta_tables.write(str(folder / table.name), chunks, mode=mode)[1]
    return rows


def main(argv: list[str] | None = None) -> int:
    """Check equality, time both and print the RESULT line; exit code 1 if they differ."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=_positive, default=100_000, help="transactions")
    parser.add_argument("--peer-rows", type=_positive, default=None,
                        help="transactions for pandas (default: --rows)")  # fmt: skip
    parser.add_argument("--repeats", type=_positive, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    peer_rows = min(args.peer_rows or args.rows, args.rows)

    _progress(f"generating ~{args.rows:,} transactions")
    tx, labels = demo_data(args.rows, args.seed)
    if peer_rows == args.rows:
        small_tx, small_labels = tx, labels
    else:
        small_tx, small_labels = demo_data(peer_rows, args.seed)
    _progress(
        f"{tx.height:,} transactions, {labels.height:,} labels; pandas on {small_tx.height:,}"
    )

    # Correctness first, on the peer's data: pandas == loopline, and head + increment == full.
    until = customer_activity.until(small_tx)
    assert until is not None
    ours_c = ours(customer_activity, small_tx, small_labels)
    ours_m = ours(merchant_activity, small_tx, small_labels)
    peer_seconds, (peer_c, peer_m) = _timed(lambda: peer(small_tx, small_labels, until))
    try:
        gap = max(compare(ours_c, peer_c, "customer_id"), compare(ours_m, peer_m, "merchant_id"))
    except AssertionError as error:
        print(f"[features] ABORT: loopline and pandas differ: {error}", file=sys.stderr)
        return 1
    cut = customer_activity.window.floor(until - timedelta(days=1))
    for table, whole in ((customer_activity, ours_c), (merchant_activity, ours_m)):
        head = table(small_tx, labels=small_labels, as_of=cut)
        tail = table(small_tx, labels=small_labels, since=cut)
        if not pl.concat([head, tail]).sort(table.key, "event_timestamp").equals(whole):
            print(f"[features] ABORT: {table.name}: full != head + increment", file=sys.stderr)
            return 1
    _progress(f"equal: {ours_c.height:,} + {ours_m.height:,} rows, worst float gap {gap:.1e}; "
              "head + last day == full")  # fmt: skip
    del ours_c, ours_m, peer_c, peer_m

    timings: dict[str, list[float]] = {"ours": [], "ours_peer_rows": [], "peer": [peer_seconds]}
    rows_out = 0
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for repeat in range(args.repeats):
            seconds, rows_out = _timed(
                lambda r=repeat: build_and_write(tx, labels, root / f"full{r}")
            )  # type: ignore[assignment]
            timings["ours"].append(seconds)
            if peer_rows != args.rows:
                timings["ours_peer_rows"].append(
                    _timed(
                        lambda r=repeat: build_and_write(small_tx, small_labels, root / f"s{r}")
                    )[0]
                )
            if repeat and peer_rows == args.rows:
                timings["peer"].append(_timed(lambda: peer(small_tx, small_labels, until))[0])
            _progress(f"repeat {repeat + 1}: loopline {seconds:.2f} s ({rows_out:,} rows written), "
                      f"pandas {timings['peer'][-1]:.2f} s")  # fmt: skip
        if peer_rows == args.rows:
            timings["ours_peer_rows"] = timings["ours"]

        # A new day: the tables up to the day before, then that day appended (as the stage does:
        # it reads only the events of the day and the 30 days before it).
        full_until = customer_activity.until(tx)
        assert full_until is not None
        day = customer_activity.window.floor(full_until - timedelta(days=1))
        build_and_write(tx, labels, root / "inc", until=day)
        recent_tx = tx.filter(pl.col("event_timestamp") >= day - customer_activity.lookback)
        recent_labels = labels.filter(
            pl.col("label_timestamp") >= day - customer_activity.lookback
        ).join(tx.select("transaction_id", "merchant_id"), on="transaction_id")
        day_seconds, day_rows = _timed(
            lambda: build_and_write(recent_tx, recent_labels, root / "inc", since=day)
        )
        _progress(f"last day alone: {day_seconds:.2f} s, {day_rows:,} rows appended")

    ours_s = statistics.median(timings["ours"])
    same_rows = statistics.median(timings["ours_peer_rows"])
    peer_s = statistics.median(timings["peer"])
    result = {
        "name": "feature_build",
        "ours": round(ours_s, 3),
        "peer": round(peer_s, 3),
        "ratio": round(peer_s / same_rows, 2),
        "unit": "s",
        "rows": tx.height,
        "rows_out": rows_out,
        "peer_rows": small_tx.height,
        "ours_at_peer_rows": round(same_rows, 3),
        "incremental_day_s": round(day_seconds, 3),
        "incremental_day_rows": day_rows,
        "target_s_for_10m": 60,
        "worst_float_gap": gap,
        "repeats": args.repeats,
    }
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
