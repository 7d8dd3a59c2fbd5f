"""Helpers of the registry tests: tiny real boosters, packages, runs and registered versions."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import lightgbm as lgb
import numpy as np

from loopline.lake.artifacts import ArtifactStore
from loopline.registry import models as registry
from loopline.registry.package import build_package, register_package
from loopline.settings import Settings
from loopline.store import Store
from loopline.store.tables import Run

FEATURES = ["amount", "hour", "txn_count_7d", "merchant_risk"]
TYPES = ["float64", "float64", "float64", "categorical"]
SERVICE = "fraud_v1"
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def pg_settings(home: Path, schema: str) -> Settings:
    """Settings of a store in a PostgreSQL schema (the `pg_schema` fixture's)."""
    return Settings(home=home, database_url=f"{PG_URL}?options=-csearch_path%3D{schema}")


def rows(n: int, *, seed: int = 0, missing: float = 0.0) -> np.ndarray:
    """A float64 matrix of FEATURES-shaped rows, optionally with NaNs."""
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.gamma(2.0, 50.0, n),
            rng.integers(0, 24, n).astype(float),
            rng.poisson(3.0, n).astype(float),
            rng.integers(0, 4, n).astype(float),
        ]
    )
    if missing:
        x[rng.random(x.shape) < missing] = np.nan
    return x


@cache
def model_text(objective: str = "binary", rounds: int = 12, seed: int = 0) -> str:
    """LightGBM text of a small deterministic model over FEATURES."""
    x = rows(800, seed=seed)
    signal = x[:, 0] / 100 + (x[:, 1] < 6) + 0.3 * x[:, 2]
    if objective == "binary":
        y, extra = (signal > np.median(signal)).astype(int), {}
    elif objective == "multiclass":
        y, extra = np.digitize(signal, np.quantile(signal, [1 / 3, 2 / 3])), {"num_class": 3}
    else:
        y, extra = signal, {}
    params = {
        "objective": objective,
        "verbosity": -1,
        "num_threads": 1,
        "deterministic": True,
        "seed": seed,
        "num_leaves": 7,
        **extra,
    }
    booster = lgb.train(params, lgb.Dataset(x, y, feature_name=FEATURES), num_boost_round=rounds)
    return booster.model_to_string()


def package(objective: str = "binary", *, seed: int = 0, rounds: int = 12, **metadata: object):
    """A built (validated) package of a small model."""
    return build_package(
        model_text(objective, rounds, seed),
        feature_names=FEATURES,
        feature_types=TYPES,
        feature_service=SERVICE,
        metadata={"trainer": "tests", **metadata},
    )


def new_run(store: Store) -> str:
    """A train run row to hang versions on."""
    with store.session() as session:
        run = Run(kind="train", use_case="fraud")
        session.add(run)
        session.flush()
        return run.id


def register(
    store: Store,
    artifacts: ArtifactStore,
    *,
    model_name: str = "fraud-detector",
    objective: str = "binary",
    seed: int = 0,
    metrics: dict[str, float] | None = None,
) -> int:
    """Register one packaged version; returns its number."""
    run_id = new_run(store)
    with store.session() as session:
        version = register_package(
            session,
            artifacts,
            package(objective, seed=seed),
            model_name=model_name,
            use_case="fraud",
            run_id=run_id,
            metrics=metrics or {"roc_auc": 0.8 + seed / 1000},
        )
        return version.version


def champion(store: Store, model_name: str = "fraud-detector") -> int | None:
    """The champion's version number now."""
    with store.reader() as session:
        found = registry.get_alias(session, model_name, registry.CHAMPION)
        return None if found is None else found.model_version.version
