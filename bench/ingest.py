"""Benchmark: the ingest stage (contract + versioning) vs a bare Polars read and Delta write.

Generates N transactions of the fraud use case as one CSV (a share of them breaking a soft rule,
so the quarantine path runs too), then, in the same run and on the same file:

- peer: `pl.read_csv(path)` (types inferred, timestamps left as text) and one
  `write_deltalake(..., mode="append")`: what reading and storing the file costs at least;
- ours: `loopline.data.ingest.ingest_files` into a fresh data home: content hash, typed read,
  pandera hard and soft checks (types, nulls, uniqueness of the key, ranges, categories,
  finiteness, lengths, timestamp sanity, the cross-field rule), quarantine split and write,
  the Delta append, the batch's content hash, a whylogs profile (of a 50k-row sample), the
  batch report, and the store's pending/commit transactions.

It checks that ours accepted and quarantined exactly the generated rows, prints rows/s for both
and their ratio, then one line `RESULT {json}`:

    .venv/bin/python bench/ingest.py --rows 1000000 --repeats 3

Both first run once on a 1,000-row batch (imports and first-use costs are per process, not per
row); then peer and ours alternate (peer first) on a warm page cache; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
from deltalake import write_deltalake

from loopline.data.ingest import ingest_files
from loopline.lake.artifacts import ArtifactStore
from loopline.settings import Settings
from loopline.spec import load_spec
from loopline.store import Store

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def generate(rows: int, bad_fraction: float, path: Path, seed: int = 0) -> int:
    """Write `rows` transactions as CSV; returns how many break a soft rule (amount < 0)."""
    spec = load_spec("fraud")
    rng = np.random.default_rng(seed)
    start = int((NOW - timedelta(days=180)).timestamp() * 1_000_000)
    ts = start + np.sort(rng.integers(0, 179 * 86_400 * 1_000_000, rows))
    amount = np.round(rng.gamma(2.0, 30.0, rows) + 0.01, 2)
    bad = rng.random(rows) < bad_fraction
    amount[bad] = -1.0

    def pick(column: str) -> np.ndarray:
        values = spec.events.columns[column].values or []
        return np.asarray(values)[rng.integers(0, len(values), rows)]

    frame = pl.DataFrame(
        {
            "transaction_id": pl.int_range(0, rows, eager=True).cast(pl.String).str.zfill(10),
            "event_timestamp": pl.Series(ts).cast(pl.Datetime("us", "UTC")),
            "customer_id": rng.integers(1, 100_000, rows),
            "merchant_id": rng.integers(1, 5_000, rows),
            "amount": amount,
            "merchant_category": pick("merchant_category"),
            "channel": pick("channel"),
            "country": pick("country"),
        }
    ).with_columns(
        ("tx-" + pl.col("transaction_id")).alias("transaction_id"),
        hour=pl.col("event_timestamp").dt.hour().cast(pl.Int64),
    )
    frame.write_csv(path, datetime_format="%Y-%m-%dT%H:%M:%S%.6f%:z")
    return int(bad.sum())


def peer(path: Path, work: Path) -> float:
    """Bare read + Delta write; seconds."""
    started = time.perf_counter()
    frame = pl.read_csv(path)
    write_deltalake(str(work / "peer"), frame.to_arrow(), mode="append")
    return time.perf_counter() - started


def ours(path: Path, work: Path) -> tuple[float, dict[str, float], object]:
    """The full ingest into a fresh home; seconds, seconds per phase, the result."""
    settings = Settings(home=work / "home")
    store = Store.open(settings)
    spec = load_spec("fraud")
    marks: list[tuple[str, float]] = []
    started = time.perf_counter()
    result = ingest_files(
        store, lake_dir=settings.lake_dir, table=spec.events, use_case="fraud", paths=[path],
        run_id=None, artifacts=ArtifactStore(settings.artifacts_dir), now=NOW,
        progress=lambda phase, done, total: marks.append((phase, time.perf_counter())),
    )  # fmt: skip
    total = time.perf_counter() - started
    store.dispose()
    phases: dict[str, float] = {}
    previous = started
    for phase, at in marks:
        phases[phase] = phases.get(phase, 0.0) + at - previous
        previous = at
    phases["commit"] = phases.get("commit", 0.0) + started + total - previous
    return total, phases, result


def main() -> int:
    """Generate, time peer and ours alternately, check counts, print RESULT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows to generate")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each")
    parser.add_argument("--bad-fraction", type=float, default=0.001, help="rows breaking a rule")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a tmp dir)")
    args = parser.parse_args()
    if args.rows < 1 or args.repeats < 1 or not 0 <= args.bad_fraction <= 0.05:
        parser.error("--rows and --repeats must be >= 1, --bad-fraction within [0, 0.05]")
    root = Path(tempfile.mkdtemp(prefix="loopline-bench-", dir=args.dir))
    try:
        path = root / "transactions.csv"
        started = time.perf_counter()
        bad = generate(args.rows, args.bad_fraction, path)
        size_mb = path.stat().st_size / 1e6
        print(f"generated {args.rows:,} rows ({size_mb:,.0f} MB, {bad:,} bad) "
              f"in {time.perf_counter() - started:.1f}s")  # fmt: skip
        # Warm-up on a small batch: imports (whylogs alone takes seconds) and first-use
        # costs are per process, not per row.
        warm = root / "warm"
        warm.mkdir()
        generate(1_000, args.bad_fraction, warm / "warm.csv", seed=1)
        ours(warm / "warm.csv", warm)
        peer_s, ours_s, phases_seen = [], [], []
        for repeat in range(args.repeats):
            work = root / f"run{repeat}"
            work.mkdir()
            peer_s.append(peer(path, work))
            seconds, phases, result = ours(path, work)
            ours_s.append(seconds)
            phases_seen.append(phases)
            accepted, quarantined = result.rows, result.rows_quarantined  # type: ignore[attr-defined]
            if (accepted, quarantined) != (args.rows - bad, bad):
                print(f"error: accepted {accepted}, quarantined {quarantined}; expected "
                      f"{args.rows - bad}, {bad}", file=sys.stderr)  # fmt: skip
                return 1
            print(f"run {repeat + 1}: peer {peer_s[-1]:.2f}s, ours {seconds:.2f}s "
                  + " ".join(f"{k}={v:.2f}" for k, v in phases.items()))  # fmt: skip
            shutil.rmtree(work)
        peer_median, ours_median = statistics.median(peer_s), statistics.median(ours_s)
        ratio = ours_median / peer_median
        pair_ratios = [o / p for o, p in zip(ours_s, peer_s, strict=True)]
        median_run = sorted(range(len(ours_s)), key=ours_s.__getitem__)[len(ours_s) // 2]
        print(f"peer (read_csv + write_deltalake): {args.rows / peer_median:,.0f} rows/s")
        print(f"ours (ingest_files):               {args.rows / ours_median:,.0f} rows/s")
        print(f"overhead ratio ours/peer: {ratio:.2f} (target at 10M rows: <= 1.5); per run: "
              + ", ".join(f"{r:.2f}" for r in pair_ratios))  # fmt: skip
        result_line = {
            "name": "ingest",
            "rows": args.rows,
            "ours": round(ours_median, 3),
            "peer": round(peer_median, 3),
            "ratio": round(ratio, 3),
            "unit": "s",
            "ours_rows_per_s": round(args.rows / ours_median),
            "peer_rows_per_s": round(args.rows / peer_median),
            "repeats": args.repeats,
            "bad_rows": bad,
            "pair_ratios": [round(r, 3) for r in pair_ratios],
            "phases_s": {k: round(v, 3) for k, v in phases_seen[median_run].items()},
        }
        print("RESULT " + json.dumps(result_line))
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
