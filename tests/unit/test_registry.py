"""Registry: version numbering, lineage, compare-and-swap aliases, history, rollback, gates."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from loopline.lake.artifacts import ArtifactStore
from loopline.registry import models as registry
from loopline.registry.evidence import Evidence
from loopline.registry.gates import evaluate_gates
from loopline.settings import Settings
from loopline.spec import BeatsChampionGate, MetricGate
from loopline.store import Store
from loopline.store.tables import AliasEvent, Artifact, AuditEvent, Run


@pytest.fixture
def store(settings: Settings) -> Store:
    return Store.open(settings)


def _register(store: Store, settings: Settings, n: int) -> list[int]:
    artifacts = ArtifactStore(settings.artifacts_dir)
    versions = []
    for i in range(n):
        artifact_id = artifacts.put_bytes(f"model {i}".encode())
        with store.session() as session:
            run = Run(kind="train", use_case="fraud")
            session.add_all([run, Artifact(id=artifact_id, size_bytes=7, media_type="text/plain")])
            session.flush()
            version = registry.register_version(
                session,
                model_name="m",
                use_case="fraud",
                run_id=run.id,
                artifact_id=artifact_id,
                feature_service="svc_v1",
                feature_names=["a", "b"],
                metrics={"auc": 0.8 + i / 100},
                datasets={},
            )
            versions.append(version.version)
    return versions


def test_versions_count_up_per_model(store: Store, settings: Settings) -> None:
    assert _register(store, settings, 3) == [1, 2, 3]


def test_alias_moves_by_compare_and_swap_with_history(store: Store, settings: Settings) -> None:
    _register(store, settings, 2)
    with store.session() as session:
        registry.set_alias(
            session, model_name="m", alias="champion", version=1, expected_revision=None, actor="a"
        )
    with store.session() as session:
        registry.set_alias(
            session, model_name="m", alias="champion", version=2, expected_revision=1, actor="b"
        )
    with pytest.raises(registry.AliasConflict), store.session() as session:
        registry.set_alias(
            session, model_name="m", alias="champion", version=1, expected_revision=1, actor="c"
        )
    with store.reader() as session:
        target = registry.get_alias(session, "m", "champion")
        assert target is not None and target.model_version.version == 2 and target.revision == 2
        events = session.scalars(select(AliasEvent).order_by(AliasEvent.revision)).all()
        assert [(e.actor, e.revision) for e in events] == [("a", 1), ("b", 2)]
        actions = session.scalars(select(AuditEvent.action)).all()
        assert actions.count("alias.promote") == 2


def test_rollback_returns_to_the_previous_version(store: Store, settings: Settings) -> None:
    _register(store, settings, 2)
    with store.session() as session:
        registry.set_alias(
            session, model_name="m", alias="champion", version=1, expected_revision=None, actor="a"
        )
        registry.set_alias(
            session, model_name="m", alias="champion", version=2, expected_revision=1, actor="a"
        )
    with store.session() as session:
        registry.rollback_alias(session, model_name="m", alias="champion", actor="ops")
    with store.reader() as session:
        target = registry.get_alias(session, "m", "champion")
        assert target is not None and target.model_version.version == 1


def test_rollback_without_history_is_a_clear_error(store: Store, settings: Settings) -> None:
    _register(store, settings, 1)
    with store.session() as session:
        registry.set_alias(
            session, model_name="m", alias="champion", version=1, expected_revision=None, actor="a"
        )
    with pytest.raises(registry.RegistryError, match="no earlier version"), store.session() as s:
        registry.rollback_alias(s, model_name="m", alias="champion", actor="ops")


def test_alias_to_unknown_version_changes_nothing(store: Store, settings: Settings) -> None:
    _register(store, settings, 1)
    with pytest.raises(registry.RegistryError, match="no version 9"), store.session() as session:
        registry.set_alias(
            session, model_name="m", alias="champion", version=9, expected_revision=None, actor="a"
        )
    with store.reader() as session:
        assert registry.get_alias(session, "m", "champion") is None


GATES = [
    MetricGate(name="floor", kind="min", metric="auc", threshold=0.7),
    MetricGate(name="ceiling", kind="max", metric="log_loss", threshold=0.5),
    BeatsChampionGate(name="beat", kind="beats_champion", metric="auc", margin=0.01),
]


@pytest.mark.parametrize(
    ("metrics", "champion", "expected"),
    [
        ({"auc": 0.8, "log_loss": 0.3}, None, [True, True, True]),
        ({"auc": 0.6, "log_loss": 0.3}, None, [False, True, True]),
        ({"auc": 0.8, "log_loss": 0.9}, 0.78, [True, False, True]),
        ({"auc": 0.8, "log_loss": 0.3}, 0.795, [True, True, False]),
        ({"auc": 0.8, "log_loss": 0.3}, 0.82, [True, True, False]),
        ({"log_loss": 0.3}, None, [False, True, True]),
        ({"log_loss": 0.3}, 0.7, [False, True, False]),
    ],
)
def test_gate_verdicts(
    metrics: dict[str, float], champion: float | None, expected: list[bool]
) -> None:
    if champion is None:
        comparison: dict[str, object] = {"basis": "no_champion", "windows": []}
    else:
        window = {"window": "holdout", "candidate": metrics.get("auc"), "champion": champion}
        comparison = {"basis": "rescored", "windows": [window]}
    evidence = Evidence(metrics=metrics, comparisons={"beat": comparison})
    assert [v.passed for v in evaluate_gates(GATES, evidence)] == expected
