"""Benchmark: the train stage with all its tracking against a bare script on the same data.

Builds a demo home whose point-in-time training set has about --rows rows (seeded demo data,
ingested, features built and materialized), then times, alternately, --repeats times each:

- ours: `loopline.stages.run_train` (labelled events, the Feast point-in-time load, the
  training-set snapshot, LightGBM with learning curves, resolved params, metrics, importance,
  SHAP, the evaluation report with slices and fairness, the whylogs drift reference, the model
  artifact and the registered version with its gates);
- peer: a bare script doing the same load (labelled events + the same Feast point-in-time
  load), the same encoding, the same LightGBM training (same params, seed, early stopping) and
  the primary metric, and nothing else.

Both models must be byte-identical (checked before anything is reported). The ratio is the
median of ours over the median of the peer; the target is at most 1.10 at 1,000,000 rows.

    .venv/bin/python bench/train_overhead.py --rows 1000000

The last line is `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

# The demo writes about 0.52 transactions per customer per day; training uses the days after
# the 30-day warm-up and before the 14-day label delay.
TX_PER_CUSTOMER_DAY = 0.52
DAYS = 104
LABELLED_DAYS = DAYS - 30 - 14


def build_home(home: Path, rows: int) -> None:
    """Write, ingest and featurise demo data sized for a training set of about `rows`."""
    from loopline.settings import Settings
    from loopline.spec import load_spec
    from loopline.stages import run_features, run_ingest, write_demo_data

    settings, spec = Settings(home=home), load_spec("fraud")
    customers = max(200, round(rows / (LABELLED_DAYS * TX_PER_CUSTOMER_DAY)))
    write_demo_data(settings, days=DAYS, customers=customers, seed=5)
    run_ingest(settings, spec)
    run_features(settings, spec)


def ours(home: Path) -> tuple[float, str, int]:
    """The train stage; returns (seconds, model sha256, training rows)."""
    from loopline.settings import Settings
    from loopline.spec import load_spec
    from loopline.stages import run_train
    from loopline.store.db import Store
    from loopline.store.tables import RunArtifact

    settings, spec = Settings(home=home), load_spec("fraud")
    started = time.perf_counter()
    result = run_train(settings, spec)
    elapsed = time.perf_counter() - started
    store = Store.open(settings)
    with store.reader() as session:
        model = session.get_one(RunArtifact, (result["run_id"], "model")).artifact_id
    store.dispose()
    rows = result["train_rows"] + result["valid_rows"]
    return elapsed, model.removeprefix("sha256:"), rows


def peer(home: Path) -> tuple[float, str, float]:
    """The bare script: same load, encoding, training and metric; returns (seconds, model
    sha256, metric)."""
    import lightgbm as lgb
    from sklearn.metrics import average_precision_score

    from loopline.features import feast_ops, transform
    from loopline.lake import tables
    from loopline.settings import Settings
    from loopline.spec import load_spec
    from loopline.training.dataset import labelled_events

    settings, spec = Settings(home=home), load_spec("fraud")
    started = time.perf_counter()
    events = tables.read(tables.table_uri(settings.lake_dir, spec.events.table))
    labels = tables.read(tables.table_uri(settings.lake_dir, spec.labels.table))
    as_of = events.get_column(spec.events.timestamp).max()
    assert isinstance(as_of, datetime)
    labelled = labelled_events(events, labels, spec, as_of=as_of)
    frame = feast_ops.training_set(
        feast_ops.open_store(settings), labelled, spec.features.service
    ).frame
    ordered = frame.sort(spec.events.timestamp)
    cut = round(ordered.height * (1 - spec.training.valid_fraction))
    train, valid = ordered.head(cut), ordered.tail(ordered.height - cut)
    names = transform.feature_names(spec)
    x_train = transform.to_numpy(transform.model_inputs(train, spec))
    x_valid = transform.to_numpy(transform.model_inputs(valid, spec))
    y_train = train.get_column(spec.labels.column).to_numpy()
    y_valid = valid.get_column(spec.labels.column).to_numpy()
    params = {
        "objective": "binary",
        "metric": ["binary_logloss", "auc"],
        **spec.training.params,
        "seed": spec.training.seed,
        "deterministic": True,
        "force_col_wise": True,
        "num_threads": 1,
        "verbosity": -1,
    }
    train_set = lgb.Dataset(x_train, y_train, feature_name=names)
    valid_set = lgb.Dataset(x_valid, y_valid, reference=train_set)
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=spec.training.num_boost_round,
        valid_sets=[train_set, valid_set],
        valid_names=["train", "valid"],
        callbacks=[lgb.early_stopping(spec.training.early_stopping_rounds, verbose=False)],
    )
    best = booster.best_iteration or booster.current_iteration()
    metric = average_precision_score(y_valid, booster.predict(x_valid, num_iteration=best))
    elapsed = time.perf_counter() - started
    model = booster.model_to_string(num_iteration=best).encode()
    return elapsed, hashlib.sha256(model).hexdigest(), float(metric)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="Training-set rows (approx.).")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.rows < 1000 or args.repeats < 1:
        parser.error("--rows must be >= 1000 and --repeats >= 1")
    with tempfile.TemporaryDirectory(prefix="loopline-bench-train-") as tmp:
        home = Path(tmp) / "home"
        os.environ["LOOPLINE_HOME"] = str(home)
        started = time.perf_counter()
        build_home(home, args.rows)
        print(f"home built in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        ours_s, peer_s = [], []
        for repeat in range(args.repeats):
            p_s, p_hash, metric = peer(home)
            o_s, o_hash, rows = ours(home)
            if o_hash != p_hash:
                print("the two models differ: not comparable", file=sys.stderr)
                return 1
            peer_s.append(p_s)
            ours_s.append(o_s)
            print(
                f"repeat {repeat + 1}: ours {o_s:.2f} s, peer {p_s:.2f} s ({rows} rows)",
                file=sys.stderr,
            )
    result = {
        "benchmark": "train_overhead",
        "rows": rows,
        "repeats": args.repeats,
        "ours_s": round(statistics.median(ours_s), 3),
        "peer_s": round(statistics.median(peer_s), 3),
        "ratio": round(statistics.median(ours_s) / statistics.median(peer_s), 3),
        "average_precision": round(metric, 5),
        "target_ratio": 1.10,
    }
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
