"""`loopline models list|show|history|rollback|archive|unarchive` on a real store."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from registry_helpers import champion, register
from sqlalchemy import select

from loopline.lake.artifacts import ArtifactStore
from loopline.registry import models as registry
from loopline.registry.history import alias_history
from loopline.settings import Settings
from loopline.store import Store
from loopline.store.tables import (
    AuditEvent,
    DatasetVersion,
    GateResult,
    ModelVersion,
    ModelVersionDataset,
)

Run = Callable[..., tuple[int, str, str]]
MODEL = "fraud-detector"


@pytest.fixture
def populated(store: Store, artifacts: ArtifactStore) -> Store:
    """Three packaged versions, one with lineage and gates; champion 1 -> 2, challenger 3."""
    for seed in range(3):
        register(store, artifacts, seed=seed, metrics={"roc_auc": 0.8 + seed / 100})
    with store.session() as session:
        v2 = registry.get_version(session, MODEL, 2)
        session.add(
            DatasetVersion(
                id="dv-events-7", dataset="transactions", use_case="fraud", table_version=7,
                uri="/lake/transactions", content_hash="sha256:" + "e" * 64, row_count=10,
            )
        )  # fmt: skip
        session.flush()
        session.add(
            ModelVersionDataset(
                model_version_id=v2.id, dataset_version_id="dv-events-7", role="events"
            )
        )
        session.add_all(
            [
                GateResult(model_version_id=v2.id, gate="auc_floor", passed=True, observed=0.81,
                           threshold=0.7),
                GateResult(model_version_id=v2.id, gate="beats_champion", passed=False,
                           observed=0.81, threshold=0.85),
            ]
        )  # fmt: skip
        for version, expected, actor in [(1, None, "alice"), (2, 1, "bob")]:
            registry.set_alias(
                session, model_name=MODEL, alias="champion", version=version,
                expected_revision=expected, actor=actor, reason=f"by {actor}",
            )  # fmt: skip
        registry.set_alias(
            session, model_name=MODEL, alias="challenger", version=3, expected_revision=None,
            actor="carol",
        )  # fmt: skip
    return store


def test_list_shows_status_aliases_and_gates(
    run: Run, settings: Settings, populated: Store
) -> None:
    code, out, err = run(settings.home, "models", "list", "--json")
    assert code == 0, err
    rows = {r["version"]: r for r in json.loads(out)["model_versions"]}
    assert sorted(rows) == [1, 2, 3]
    assert rows[2]["aliases"] == ["champion"] and rows[3]["aliases"] == ["challenger"]
    assert rows[2]["gates_passed"] is False and rows[1]["gates_passed"] is True
    assert {r["status"] for r in rows.values()} == {"ready"}
    assert all(r["package_id"].startswith("sha256:") for r in rows.values())
    code, out, _ = run(settings.home, "models", "list", "FRAUD-DETECTOR", "--json")
    assert code == 0 and len(json.loads(out)["model_versions"]) == 3
    code, out, _ = run(settings.home, "models", "list", "other", "--json")
    assert code == 0 and json.loads(out)["model_versions"] == []
    code, out, _ = run(settings.home, "models", "list")
    assert code == 0 and "status" in out
    code, _, err = run(settings.home, "models", "list", "a/b")
    assert code == 2 and "slash" in err


def test_show_prints_version_aliases_metrics_lineage_hash_and_gates(
    run: Run, settings: Settings, populated: Store
) -> None:
    code, out, err = run(settings.home, "models", "show", "fraud-detector@champion", "--json")
    assert code == 0, err
    shown = json.loads(out)
    with populated.reader() as session:
        v2 = registry.get_version(session, MODEL, 2)
    assert (shown["version"], shown["aliases"], shown["status"]) == (2, ["champion"], "ready")
    assert shown["metrics"] == {"roc_auc": pytest.approx(0.81)}
    assert shown["package_id"] == v2.package_id
    assert shown["lineage"]["run_id"] == v2.run_id
    assert shown["lineage"]["datasets"] == [
        {"role": "events", "dataset": "transactions", "table_version": 7, "id": "dv-events-7",
         "content_hash": "sha256:" + "e" * 64},
    ]  # fmt: skip
    assert [(g["gate"], g["passed"]) for g in shown["gates"]] == [
        ("auc_floor", True),
        ("beats_champion", False),
    ]
    assert [(m["alias"], m["from_version"], m["to_version"]) for m in shown["alias_moves"]] == [
        ("champion", 1, 2)
    ]
    code, out, err = run(settings.home, "models", "show", "fraud-detector@2", "--verify")
    assert code == 0, err
    assert str(v2.package_id) in out and "beats_champion" in out and "verified  yes" in out
    assert "transactions v7" in out
    for bad, message in [
        ("fraud-detector", "expected NAME@VERSION"),
        ("fraud-detector@7", "no version 7"),
        ("nope@latest", "no model named 'nope'"),
    ]:
        code, _, err = run(settings.home, "models", "show", bad)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_show_verify_refuses_a_tampered_package(
    run: Run, settings: Settings, populated: Store, artifacts: ArtifactStore
) -> None:
    with populated.reader() as session:
        package_id = registry.get_version(session, MODEL, 1).package_id
    assert package_id is not None
    path = artifacts.path(package_id)
    path.chmod(0o644)
    path.write_bytes(path.read_bytes().replace(b"num_leaves=", b"num_leaves=9", 1))
    code, _, err = run(settings.home, "models", "show", "fraud-detector@1", "--verify")
    assert code == 2 and "hash mismatch" in err, err
    with populated.reader() as session:
        refused = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "package_refused")
        ).one()
        assert refused.actor == "cli" and refused.detail["expected"] == package_id


def test_history_lists_moves_and_answers_what_served_when(
    run: Run, settings: Settings, populated: Store
) -> None:
    code, out, err = run(settings.home, "models", "history", MODEL, "--json")
    assert code == 0, err
    moves = json.loads(out)["moves"]
    assert [(m["alias"], m["to_version"], m["actor"]) for m in moves] == [
        ("champion", 1, "alice"),
        ("champion", 2, "bob"),
        ("challenger", 3, "carol"),
    ]
    first = datetime.fromisoformat(moves[0]["at"])
    between = first + (datetime.fromisoformat(moves[1]["at"]) - first) / 2
    code, out, err = run(
        settings.home, "models", "history", MODEL, "--at", between.isoformat(), "--json"
    )
    assert code == 0, err
    served = json.loads(out)["aliases"]
    assert {k: (v["to_version"], v["actor"]) for k, v in served.items()} == {
        "champion": (1, "alice")
    }
    code, out, _ = run(
        settings.home, "models", "history", MODEL, "--alias", "champion",
        "--at", (first - timedelta(days=1)).isoformat(),
    )  # fmt: skip
    assert code == 0 and "no alias" in out
    code, _, err = run(settings.home, "models", "history", MODEL, "--at", "2026-03-01 14:00")
    assert code == 2 and "UTC offset" in err
    code, _, err = run(settings.home, "models", "history", MODEL, "--at", "tuesday")
    assert code == 2 and "not an ISO time" in err


def test_rollback_moves_the_champion_back_and_failures_are_audited(
    run: Run, settings: Settings, populated: Store
) -> None:
    code, out, err = run(
        settings.home, "models", "rollback", MODEL, "--reason", "precision dropped",
        "--actor", "ops",
    )  # fmt: skip
    assert code == 0, err
    assert "rolled back from version 2 to 1" in out
    assert champion(populated) == 1
    with populated.reader() as session:
        last = alias_history(session, MODEL, "champion")[-1]
        assert (last.action, last.actor, last.reason) == ("rollback", "ops", "precision dropped")
    # The default model comes from the use case (fraud -> fraud-detector), as before.
    code, out, err = run(settings.home, "models", "rollback", "--use-case", "fraud")
    assert code == 0, err
    assert champion(populated) == 2
    code, _, err = run(settings.home, "models", "rollback", MODEL, "--alias", "challenger")
    assert code == 2 and "no earlier version" in err
    with populated.reader() as session:
        refused = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "alias.refused")
        ).one()
        assert refused.subject_id == f"{MODEL}@challenger"


def test_archive_and_unarchive(run: Run, settings: Settings, populated: Store) -> None:
    code, out, err = run(settings.home, "models", "archive", "fraud-detector@1", "--reason", "old")
    assert code == 0 and "archived fraud-detector version 1" in out, err
    with populated.reader() as session:
        assert (
            session.scalars(select(ModelVersion.status).where(ModelVersion.version == 1)).one()
            == "archived"
        )
    code, _, err = run(settings.home, "models", "archive", "fraud-detector@2")
    assert code == 2 and "holds alias(es) champion" in err
    code, _, err = run(settings.home, "models", "rollback", MODEL)
    assert code == 2 and "archived" in err
    code, _, err = run(settings.home, "models", "archive", "fraud-detector@champion")
    assert code == 2 and "expected NAME@VERSION" in err
    code, _, err = run(settings.home, "models", "unarchive", "fraud-detector@1")
    assert code == 0, err
    code, _, err = run(settings.home, "models", "rollback", MODEL)
    assert code == 0, err
    assert champion(populated) == 1
