"""Benchmark: daily customer snapshots in DuckDB SQL (shipped) vs an equivalent pure-Polars version.

`loopline.features.aggregates.customer_features` computes the snapshots with DuckDB SQL. This
script carries `polars_customer_features`, the same transform written with Polars only, checks
on seeded demo data that both return equal frames (same columns, dtypes and rows; floats within
1e-9), aborts if they differ, then times both and prints one RESULT line:

    .venv/bin/python bench/feature_aggregates.py --size medium --repeats 5

The DuckDB path pins DuckDB to one thread (for bit-reproducible sums); Polars uses its own
thread pool (`POLARS_MAX_THREADS`, default: all cores). The RESULT line reports both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import polars as pl
from polars.testing import assert_frame_equal

from loopline.data.demo import DemoConfig, generate_demo

# The shipped transform, and its input checks so both paths time the same validation.
from loopline.features.aggregates import _check_input, customer_features

SIZES = {"small": (30, 1_000), "medium": (90, 5_000), "large": (180, 20_000)}  # days, customers
FLOAT_TOLERANCE = 1e-9
_KEY = "customer_id"


def polars_customer_features(tx: pl.DataFrame, *, as_of: datetime | None = None) -> pl.DataFrame:
    """Daily customer snapshots, as `customer_features` computes them, with Polars only.

    One row per customer and calendar day (UTC) from the customer's first transaction day while
    the customer had a transaction in the last 30 days, up to the last complete day before
    `as_of` (or the last transaction day). Windows are calendar days ending on the snapshot day.

    Args:
        tx: Transactions with at least customer_id, event_timestamp (timezone-aware), amount,
            channel and country.
        as_of: Emit only snapshots complete by this instant; must be timezone-aware.

    Returns:
        The columns, dtypes and rows of `customer_features`, sorted by customer_id,
        event_timestamp.

    Raises:
        ValueError: a needed column is missing, has the wrong type or holds nulls, or as_of is
            naive.
    """
    _check_input(tx, _KEY)
    last_day = None
    if as_of is not None:
        if as_of.tzinfo is None or as_of.utcoffset() is None:
            raise ValueError("as_of: must be timezone-aware (UTC), got a naive datetime")
        last_day = as_of.astimezone(UTC).date() - timedelta(days=1)

    events = tx.select(
        pl.col(_KEY).cast(pl.Int64),
        pl.col("event_timestamp").dt.convert_time_zone("UTC").dt.date().alias("day"),
        pl.col("amount").cast(pl.Float64),
        (pl.col("channel").cast(pl.String) == "online").alias("online"),
        pl.col("country").cast(pl.String),
    )
    if last_day is None:
        last_day = events["day"].max()
    last = pl.lit(last_day, dtype=pl.Date)  # null for no transactions: then nothing passes
    daily = (
        events.filter(pl.col("day") <= last)
        .group_by(_KEY, "day")
        .agg(
            n=pl.len().cast(pl.Int64),
            amount_sum=pl.col("amount").sum(),
            amount_max=pl.col("amount").max(),
            n_online=pl.col("online").sum().cast(pl.Int64),
            countries=pl.col("country").drop_nulls().unique(),
        )
    )
    # Every day from the first transaction day until the 30-day window runs empty (or last_day),
    # so that days without transactions get a snapshot too.
    grid = (
        daily.group_by(_KEY)
        .agg(
            first=pl.col("day").min(),
            end=pl.min_horizontal(pl.col("day").max() + pl.duration(days=29), last),
        )
        .select(_KEY, day=pl.date_ranges("first", "end"))
        .explode("day")
    )
    filled = (
        grid.join(daily, on=[_KEY, "day"], how="left")
        .with_columns(pl.col("n", "amount_sum", "n_online").fill_null(0))
        .sort(_KEY, "day")
    )
    # Period windows end on the row's day, inclusive: "7d" is the day and the six before it.
    w7 = filled.rolling("day", period="7d", group_by=_KEY).agg(
        count_7d=pl.col("n").sum(),
        amount_sum_7d=pl.col("amount_sum").sum(),
    )
    w30 = filled.rolling("day", period="30d", group_by=_KEY).agg(
        count_30d=pl.col("n").sum(),
        amount_sum_30d=pl.col("amount_sum").sum(),
        amount_max_30d=pl.col("amount_max").max(),
        online_30d=pl.col("n_online").sum(),
        distinct_countries_30d=pl.col("countries")
        .list.explode(keep_nulls=False, empty_as_null=False)
        .n_unique(),
    )
    return (
        filled.join(w7, on=[_KEY, "day"])
        .join(w30, on=[_KEY, "day"])
        .filter(pl.col("count_30d") > 0)
        .sort(_KEY, "day")
        .select(
            _KEY,
            event_timestamp=(pl.col("day") + pl.duration(days=1))
            .cast(pl.Datetime("us"))
            .dt.replace_time_zone("UTC"),
            cust_txn_count_1d=pl.col("n"),
            cust_txn_count_7d=pl.col("count_7d").cast(pl.Int64),
            cust_amount_sum_7d=pl.col("amount_sum_7d"),
            cust_amount_mean_30d=pl.col("amount_sum_30d") / pl.col("count_30d"),
            cust_amount_max_30d=pl.col("amount_max_30d"),
            cust_online_share_30d=pl.col("online_30d") / pl.col("count_30d"),
            cust_distinct_countries_30d=pl.col("distinct_countries_30d").cast(pl.Int64),
        )
    )


def compare(duckdb_out: pl.DataFrame, polars_out: pl.DataFrame) -> float:
    """Check both outputs are equal and return the largest float difference.

    Args:
        duckdb_out: Output of `customer_features`.
        polars_out: Output of `polars_customer_features`.

    Returns:
        The largest absolute difference over the float columns (0.0 if none).

    Raises:
        AssertionError: columns, dtypes, rows or values differ (floats by more than 1e-9).
    """
    order = [_KEY, "event_timestamp"]
    left, right = duckdb_out.sort(order), polars_out.sort(order)
    assert_frame_equal(left, right, check_exact=False, rel_tol=0.0, abs_tol=FLOAT_TOLERANCE)
    floats = [name for name, dtype in left.schema.items() if dtype.is_float()]
    if not floats or left.is_empty():
        return 0.0
    diffs = [(left[name] - right[name]).abs().max() for name in floats]
    return max(float(d) for d in diffs if d is not None)


def _timed(fn: Callable[[], pl.DataFrame]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _progress(message: str) -> None:
    print(f"[feature_aggregates] {message}", flush=True)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Check equality, time both implementations and print the RESULT line.

    Args:
        argv: Command-line arguments (default: `sys.argv[1:]`).

    Returns:
        The exit code: 0 when both agree, 1 when they differ.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="small", help="default: small")
    parser.add_argument("--repeats", type=_positive_int, default=5, help="default: 5")
    args = parser.parse_args(argv)
    days, customers = SIZES[args.size]
    threads = pl.thread_pool_size()

    _progress(f"size={args.size}: generating demo data ({days} days x {customers} customers)")
    started = time.perf_counter()
    demo = generate_demo(DemoConfig(days=days, customers=customers))
    tx = demo.transactions
    _progress(f"generated {tx.height:,} transactions in {time.perf_counter() - started:.2f} s")

    # A mid-period as_of in a non-UTC zone also checks the last-complete-day rule.
    start = datetime.combine(demo.config.start, datetime.min.time(), tzinfo=UTC)
    mid = (start + timedelta(days=days // 2, hours=3)).astimezone(timezone(timedelta(hours=-5)))
    cases: list[tuple[str, datetime | None]] = [("as_of=None", None), (f"as_of={mid}", mid)]
    rows = 0
    for label, as_of in cases:
        _progress(f"checking equality, {label}")
        duckdb_out = customer_features(tx, as_of=as_of)
        polars_out = polars_customer_features(tx, as_of=as_of)
        try:
            max_diff = compare(duckdb_out, polars_out)
        except AssertionError as error:
            print(
                f"[feature_aggregates] ABORT: DuckDB and Polars customer_features differ "
                f"({label}, size={args.size}); timings would compare different results.\n"
                f"{error}",
                file=sys.stderr,
            )
            return 1
        rows = rows or duckdb_out.height
        _progress(f"equal: {duckdb_out.height:,} rows, largest float difference {max_diff:.1e}")

    timings: dict[str, list[float]] = {"duckdb": [], "polars": []}
    runs = {
        "duckdb": lambda: customer_features(tx),
        "polars": lambda: polars_customer_features(tx),
    }
    for repeat in range(1, args.repeats + 1):
        # Alternate the engines so a slow phase of the machine hits both alike.
        for engine, run in runs.items():
            timings[engine].append(_timed(run))
        _progress(
            f"repeat {repeat}/{args.repeats}: duckdb {timings['duckdb'][-1]:.3f} s, "
            f"polars {timings['polars'][-1]:.3f} s"
        )

    median = {engine: statistics.median(values) for engine, values in timings.items()}
    best = {engine: min(values) for engine, values in timings.items()}
    print(
        f"RESULT customer_features duckdb_s={median['duckdb']:.3f} "
        f"polars_s={median['polars']:.3f} "
        f"ratio_polars_over_duckdb={median['polars'] / median['duckdb']:.2f} rows={rows} "
        f"duckdb_min_s={best['duckdb']:.3f} polars_min_s={best['polars']:.3f} "
        f"size={args.size} days={days} customers={customers} transactions={tx.height} "
        f"repeats={args.repeats} duckdb_threads=1 polars_threads={threads}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
