"""A small, fixed set of runs to search, written straight into a store (SQLite or PostgreSQL).

Eight runs cover every shape a query meets: nested params, numbers stored as text, booleans,
lists, quotes in values, a metric logged at two final steps (the later one counts), a learning
curve, missing values (NULL durations, absent keys), nested runs, notes and a dirty commit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from loopline.store import Store
from loopline.store.tables import Run, RunMetric, RunParam, RunTag
from loopline.tracking import flatten_params, param_values

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def run_id(name: str) -> str:
    """A deterministic 32-hex id per run name."""
    return hashlib.md5(name.encode()).hexdigest()


@dataclass
class Spec:
    """One run of the fixture set."""

    name: str
    kind: str
    status: str
    started: datetime
    duration_s: float | None
    params: dict[str, Any]
    metrics: dict[str, float | list[tuple[int, float]]]
    tags: dict[str, str] = field(default_factory=dict)
    parent: str | None = None
    notes: str = ""
    git_dirty: bool | None = False
    curves: dict[str, list[float]] = field(default_factory=dict)


SPECS = [
    Spec("r1", "train", "succeeded", T0 - timedelta(days=10), 12.0,
         {"num_leaves": 63, "learning_rate": 0.05, "objective": "binary",
          "training": {"seed": 7, "early_stopping": True}},
         {"roc_auc": 0.93, "log_loss": 0.2}, {"use_case": "fraud", "team": "risk"},
         curves={"valid_auc": [0.7, 0.8, 0.9]}),
    Spec("r2", "train", "failed", T0 - timedelta(days=9), 3.0,
         {"num_leaves": 31, "learning_rate": 0.1, "objective": "binary", "training": {"seed": 8}},
         {}, {"use_case": "fraud"}),
    Spec("r3", "tune-trial", "succeeded", T0 - timedelta(days=8), 5.0,
         {"num_leaves": 63, "learning_rate": 0.1, "objective": "regression",
          "training": {"seed": 7}},
         {"roc_auc": 0.88, "log_loss": 0.3}, {"use_case": "churn", "team": "Growth"},
         parent="r5", curves={"valid_auc": [0.6, 0.85]}),
    Spec("r4", "tune-trial", "crashed", T0 - timedelta(days=7), None,
         {"num_leaves": "127", "learning_rate": 0.01},
         {"roc_auc": [(0, 0.95), (1, 0.91)]}, {"use_case": "fraud"}, parent="r5"),
    Spec("r5", "tune", "succeeded", T0 - timedelta(days=7, hours=1), 100.0,
         {"n_trials": 2, "sampler": "tpe"}, {"best_roc_auc": 0.91}, {"use_case": "fraud"}),
    Spec("r6", "ingest", "succeeded", T0 - timedelta(days=1), 1.0,
         {"paths": ["a.csv", "b.csv"], "note": "O'Brien"}, {"rows": 100},
         {"use_case": "fraud"}, notes="first load of the year"),
    Spec("r7", "evaluate", "running", T0, None, {"threshold": 0.5, "label": "is_fraud"}, {},
         git_dirty=None),
    Spec("r8", "train", "succeeded", T0 - timedelta(days=30), 20.0,
         {"num_leaves": 255, "learning_rate": 0.05, "objective": "binary_v2",
          "name_pattern": "a_b%c"},
         {"roc_auc": 0.9, "log_loss": 0.25}, {"use_case": "fraud"}, git_dirty=True),
]  # fmt: skip


def populate(store: Store) -> dict[str, str]:
    """Write the fixture runs; returns name -> run id."""
    ids = {spec.name: run_id(spec.name) for spec in SPECS}
    with store.session() as session:
        for spec in sorted(SPECS, key=lambda s: s.parent is not None):
            rid = ids[spec.name]
            ended = None
            if spec.status != "running":
                ended = spec.started + timedelta(seconds=spec.duration_s or 0)
            session.add(
                Run(
                    id=rid, kind=spec.kind, use_case="fraud", name=spec.name, status=spec.status,
                    params=spec.params, tags=spec.tags, notes=spec.notes,
                    started_at=spec.started, ended_at=ended, duration_s=spec.duration_s,
                    parent_run_id=ids[spec.parent] if spec.parent else None,
                    git_commit="a" * 40 if spec.git_dirty is not None else None,
                    git_dirty=spec.git_dirty, host="elsewhere",
                    error="ValueError: boom" if spec.status == "failed" else None,
                )
            )  # fmt: skip
            session.flush()
            for key, value in flatten_params(spec.params).items():
                text, number = param_values(value)
                session.add(RunParam(run_id=rid, key=key, value_text=text, value_num=number))
            for key, value in spec.metrics.items():
                steps = value if isinstance(value, list) else [(0, value)]
                for step, number in steps:
                    session.add(RunMetric(run_id=rid, key=key, step=step, value=number))
            for key, values in spec.curves.items():
                for step, number in enumerate(values, start=1):
                    session.add(
                        RunMetric(run_id=rid, key=key, step=step, value=number, is_final=False)
                    )
            for key, value in spec.tags.items():
                session.add(RunTag(run_id=rid, key=key, value=value))
    return ids


@dataclass
class Populated:
    """A store holding the fixture runs."""

    store: Store
    ids: dict[str, str]

    def names(self, run_ids: list[str]) -> list[str]:
        by_id = {v: k for k, v in self.ids.items()}
        return [by_id[r] for r in run_ids]
