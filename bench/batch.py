"""Benchmark: batch scoring (transform, LightGBM, predictions table) against a bare `predict`.

Builds a demo home whose events table has about --rows rows (seeded demo data, ingested,
features built, a model trained and registered), reads the events' point-in-time features
through Feast once (the prepared frame), then times, alternately, --repeats times each:

- ours: the score stage's scoring part over the prepared frame, `stages.score.write_scores`:
  the shared transform (`model_inputs`, `to_numpy`), the booster loaded through the registry's
  verified path, the output rows with their lineage columns, the content hash, and the new
  version of the Delta predictions table;
- peer: `booster.predict` on the numpy matrix of the same prepared frame, and nothing else.

Both must give the same scores (identical floats; checked before anything is reported). The
ratio is the median of ours over the median of the peer; the target is at most 1.5 at
1,000,000 rows. The whole stage (`run_score`: reading the table version, the Feast
point-in-time join, scoring, writing, the run and dataset-version records) is timed once too
and printed as `stage_s`.

    .venv/bin/python bench/batch.py --rows 1000000

The last line is `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# The demo writes about 0.52 transactions per customer per day.
TX_PER_CUSTOMER_DAY = 0.52
DAYS = 60


def build_home(home: Path, rows: int) -> int:
    """Write, ingest and featurise demo data of about `rows` events; train and promote a
    model. Returns the model version."""
    from loopline.settings import Settings
    from loopline.spec import load_spec
    from loopline.stages import run_features, run_ingest, run_promote, run_train, write_demo_data

    settings, spec = Settings(home=home), load_spec("fraud")
    customers = max(200, round(rows / (DAYS * TX_PER_CUSTOMER_DAY)))
    write_demo_data(settings, days=DAYS, customers=customers, seed=5)
    run_ingest(settings, spec)
    run_features(settings, spec)
    version = run_train(settings, spec)["model_version"]
    run_promote(settings, spec, model_version=version)
    return version


def prepare(home: Path, version: int) -> tuple[object, object, object]:
    """(scoring model, prepared frame, events) as the stage builds them."""
    from loopline.settings import Settings
    from loopline.spec import load_spec
    from loopline.stages.common import open_context
    from loopline.stages.score import check_events, load_scoring_model, point_in_time, read_source

    ctx = open_context(Settings(home=home), load_spec("fraud"))
    model = load_scoring_model(ctx, version)
    events = read_source(ctx, None)
    check_events(events.events, model.spec)
    frame, _ = point_in_time(ctx, model, events.events)
    return model, frame, events


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="Events to score (approx.).")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.rows < 1000 or args.repeats < 1:
        parser.error("--rows must be >= 1000 and --repeats >= 1")
    with tempfile.TemporaryDirectory(prefix="loopline-bench-batch-") as tmp:
        home = Path(tmp) / "home"
        os.environ["LOOPLINE_HOME"] = str(home)
        started = time.perf_counter()
        version = build_home(home, args.rows)
        print(f"home built in {time.perf_counter() - started:.1f} s", file=sys.stderr)

        import numpy as np
        import polars as pl

        from loopline.features import transform
        from loopline.lake import tables
        from loopline.settings import Settings
        from loopline.spec import load_spec
        from loopline.stages.score import run_score, write_scores

        mark = time.perf_counter()
        model, frame, events = prepare(home, version)
        print(f"prepared frame in {time.perf_counter() - mark:.1f} s", file=sys.stderr)
        matrix = transform.to_numpy(transform.model_inputs(frame, model.spec))
        spec = model.spec
        key = spec.events.id
        lineage = {"run_id": "bench", "table": events.table, "version": events.version}
        ours_s, peer_s = [], []
        for repeat in range(args.repeats):
            began = time.perf_counter()
            expected = model.booster.predict(matrix)
            peer_s.append(time.perf_counter() - began)
            uri = tables.table_uri(Path(tmp) / "out", f"scores_{repeat}")
            began = time.perf_counter()
            table_version, rows, _ = write_scores(uri, frame, model, lineage)
            ours_s.append(time.perf_counter() - began)
            written = tables.read(uri, table_version).select(key, "score")
            wanted = pl.DataFrame({key: frame[key], "expected": expected})
            same = written.join(wanted, on=key)
            if same.height != frame.height or not np.array_equal(
                same["score"].to_numpy(), same["expected"].to_numpy()
            ):
                print("ours and the peer score differently: not comparable", file=sys.stderr)
                return 1
            print(
                f"repeat {repeat + 1}: ours {ours_s[-1]:.2f} s, peer {peer_s[-1]:.2f} s "
                f"({rows} rows)",
                file=sys.stderr,
            )
        began = time.perf_counter()
        stage = run_score(Settings(home=home), load_spec("fraud"), model_ref=version)
        stage_s = time.perf_counter() - began
        print(f"whole stage: {stage_s:.2f} s ({stage.seconds})", file=sys.stderr)
    ours, peer = statistics.median(ours_s), statistics.median(peer_s)
    result = {
        "name": "batch_scoring",
        "ours": round(ours, 3),
        "peer": round(peer, 3),
        "unit": "s",
        "rows": frame.height,
        "ratio": round(ours / peer, 3),
        "repeats": args.repeats,
        "ours_runs": [round(v, 3) for v in ours_s],
        "peer_runs": [round(v, 3) for v in peer_s],
        "run_ratios": [round(o / p, 3) for o, p in zip(ours_s, peer_s, strict=True)],
        "stage_s": round(stage_s, 3),
        "stage_phases_s": stage.seconds,
        "features": matrix.shape[1],
        "trees": model.booster.num_trees(),
        "target_ratio": 1.5,
    }
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
