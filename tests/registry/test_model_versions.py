"""Versions: normalised names, gap-free numbers under concurrent registration, archiving."""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

import pytest
from registry_helpers import FEATURES, SERVICE, new_run, register
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from loopline.lake.artifacts import ArtifactStore
from loopline.registry import models as registry
from loopline.registry.describe import version_rows
from loopline.registry.names import normalise_alias, normalise_model_name
from loopline.settings import Settings
from loopline.store import Store
from loopline.store.tables import Artifact, AuditEvent, Model, ModelVersion

FULLWIDTH_CHURN = "\uff43\uff48\uff55\uff52\uff4e"  # "churn" in fullwidth letters


def _seed(store: Store) -> tuple[str, str]:
    """A run and a model artifact every registration can point at."""
    run_id = new_run(store)
    artifact_id = "sha256:" + "ab" * 32
    with store.session() as session:
        session.add(Artifact(id=artifact_id, size_bytes=1, media_type="text/plain"))
    return run_id, artifact_id


def _register(session: Any, name: str, run_id: str, artifact_id: str) -> ModelVersion:
    return registry.register_version(
        session, model_name=name, use_case="fraud", run_id=run_id, artifact_id=artifact_id,
        feature_service=SERVICE, feature_names=FEATURES, metrics={}, datasets={},
    )  # fmt: skip


# --- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    ["churn", "Churn", "  CHURN\t", FULLWIDTH_CHURN, "%63hurn", "%2563HURN", "\uff23hurn"],
)
def test_spellings_of_one_name_normalise_to_one_key(spelling: str) -> None:
    assert normalise_model_name(spelling)[1] == "churn"


def test_spellings_of_one_name_are_one_model(backend_store: Store) -> None:
    run_id, artifact_id = _seed(backend_store)
    for spelling in ["Churn", "churn", " CHURN ", FULLWIDTH_CHURN, "%63hurn"]:
        with backend_store.session() as session:
            _register(session, spelling, run_id, artifact_id)
    with backend_store.reader() as session:
        models = session.scalars(select(Model)).all()
        assert [(m.name, m.name_key, m.last_version) for m in models] == [("Churn", "churn", 5)]
        assert [v.version for v in registry.list_versions(session, "CHURN")] == [5, 4, 3, 2, 1]
        assert registry.get_version(session, FULLWIDTH_CHURN, 2).model_name == "Churn"


@pytest.mark.parametrize(
    ("spelling", "message"),
    [
        ("team/churn", "contains a slash"),
        ("team%2Fchurn", "contains a slash"),
        ("team%2fchurn", "contains a slash"),
        ("team%252Fchurn", "contains a slash"),
        ("team\uff0fchurn", "contains a slash"),  # fullwidth solidus: NFKC makes it '/'
        ("team\\churn", "contains a slash"),
        ("", "is empty"),
        ("   ", "is empty"),
        ("churn model", "use ASCII letters"),
        ("churn\u200b", "use ASCII letters"),  # zero-width space
        ("\u0441hurn", "use ASCII letters"),  # a Cyrillic letter that looks like 'c'
        ("churn@2", "use ASCII letters"),
        ("-churn", "starting with a letter or digit"),
        ("x" * 101, "longer than 100"),
        ("%FFchurn", "not UTF-8"),
        ("%" + "25" * 6 + "2F", "percent-encoded too many times"),
    ],
)
def test_bad_names_are_refused_and_nothing_is_written(
    store: Store, spelling: str, message: str
) -> None:
    run_id, artifact_id = _seed(store)
    with pytest.raises(registry.InvalidName, match=message), store.session() as session:
        _register(session, spelling, run_id, artifact_id)
    with store.reader() as session:
        assert session.scalars(select(Model)).all() == []
        assert session.scalars(select(AuditEvent)).all() == []


def test_the_database_refuses_a_second_spelling_of_a_name(backend_store: Store) -> None:
    with backend_store.session() as session:
        session.add(Model(name="churn", use_case="fraud"))
    with pytest.raises(IntegrityError), backend_store.session() as session:
        session.add(Model(name="CHURN", use_case="fraud"))  # name_key defaults to 'churn'
    with backend_store.reader() as session:
        assert session.scalars(select(Model.name)).all() == ["churn"]


def test_aliases_are_normalised_too(store: Store, artifacts: ArtifactStore) -> None:
    register(store, artifacts)
    with store.session() as session:
        event = registry.set_alias(
            session, model_name="Fraud-Detector", alias=" Champion ", version=1,
            expected_revision=None, actor="t",
        )  # fmt: skip
        assert (event.model_name, event.alias) == ("fraud-detector", "champion")
    with store.reader() as session:
        found = registry.get_alias(session, "FRAUD-DETECTOR", "CHAMPION")
        assert found is not None and found.model_version.version == 1
    for bad, message in [("champ/ion", "use lowercase"), ("latest", "reserved"), ("7", "use")]:
        with pytest.raises(registry.InvalidName, match=message):
            normalise_alias(bad)


# --- gap-free numbering ------------------------------------------------------------------------


def _registrar(
    settings: Settings, names: list[str], fail_after: set[int], run_id: str, artifact_id: str,
    start: Any, out: Any,
) -> None:  # fmt: skip
    store = Store.open(settings, migrate=False)
    got: list[int] = []
    errors: list[str] = []
    start.wait(30)
    for i, name in enumerate(names):
        try:
            with store.session() as session:
                version = _register(session, name, run_id, artifact_id)
                number = version.version
                if i in fail_after:
                    raise RuntimeError("rolled back after registering")
            got.append(number)
        except RuntimeError:
            pass
        except Exception as exc:  # reported to the test, which fails on any
            errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
    store.dispose()
    out.put((got, errors))


def test_concurrent_registrations_get_unique_gap_free_versions(
    backend_settings: Settings,
) -> None:
    """100 registrations from 20 processes (plus 20 that roll back) -> exactly 1..100."""
    store = Store.open(backend_settings)
    run_id, artifact_id = _seed(store)
    store.dispose()  # no pooled connection may cross the fork
    ctx = mp.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    spellings = ["churn", "Churn", FULLWIDTH_CHURN, "%63hurn", " CHURN"]

    def names(w: int) -> list[str]:
        return [spellings[(w + i) % len(spellings)] for i in range(6)]

    # Each worker registers 6 times and rolls one of them back: 100 kept numbers in all.
    workers = [
        ctx.Process(
            target=_registrar,
            args=(backend_settings, names(w), {w % 6}, run_id, artifact_id, start, out),
        )
        for w in range(20)
    ]
    for worker in workers:
        worker.start()
    started = time.perf_counter()
    start.set()
    results = [out.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    elapsed = time.perf_counter() - started
    assert [e for _, errors in results for e in errors] == []
    numbers = sorted(n for got, _ in results for n in got)
    assert numbers == list(range(1, 101)), numbers
    with store.reader() as session:
        model = session.scalars(select(Model)).one()
        assert (model.name_key, model.last_version) == ("churn", 100)
        stored = sorted(session.scalars(select(ModelVersion.version)))
        assert stored == list(range(1, 101))
        registers = session.scalars(select(AuditEvent).where(AuditEvent.action == "register"))
        assert len(list(registers)) == 100
    store.dispose()
    assert elapsed < 60


def test_counter_steps_over_versions_written_around_it(store: Store) -> None:
    """Versions inserted without the counter (older schema, direct writes) are not reused."""
    run_id, artifact_id = _seed(store)
    with store.session() as session:
        session.add(Model(name="m", use_case="fraud"))
        session.flush()
        for number in (1, 2, 5):
            session.add(
                ModelVersion(
                    model_name="m", version=number, run_id=run_id, artifact_id=artifact_id,
                    feature_service=SERVICE,
                )
            )  # fmt: skip
    with store.session() as session:
        assert _register(session, "m", run_id, artifact_id).version == 6
    with store.session() as session:
        assert _register(session, "m", run_id, artifact_id).version == 7


# --- archiving ---------------------------------------------------------------------------------


def test_archived_version_cannot_take_an_alias(
    backend_store: Store, artifacts: ArtifactStore
) -> None:
    for seed in range(3):
        register(backend_store, artifacts, seed=seed)
    store = backend_store
    with store.session() as session:
        registry.set_alias(
            session, model_name="fraud-detector", alias="champion", version=1,
            expected_revision=None, actor="t",
        )  # fmt: skip
        registry.set_alias(
            session, model_name="fraud-detector", alias="champion", version=2,
            expected_revision=1, actor="t",
        )  # fmt: skip
    with pytest.raises(registry.RegistryError, match="holds alias"), store.session() as session:
        registry.archive_version(session, model_name="fraud-detector", version=2, actor="t")
    with store.session() as session:
        registry.archive_version(
            session, model_name="fraud-detector", version=1, actor="ops", reason="superseded"
        )
    with pytest.raises(registry.VersionArchived, match="archived"), store.session() as session:
        registry.set_alias(
            session, model_name="fraud-detector", alias="challenger", version=1,
            expected_revision=None, actor="t",
        )  # fmt: skip
    with pytest.raises(registry.VersionArchived), store.session() as session:
        registry.rollback_alias(session, model_name="fraud-detector", alias="champion", actor="t")
    with pytest.raises(registry.RegistryError, match="already archived"), store.session() as s:
        registry.archive_version(s, model_name="fraud-detector", version=1, actor="t")
    with store.reader() as session:
        assert registry.aliases_of(session, "fraud-detector") == {"champion": 2}
        active = registry.list_versions(session, "fraud-detector", include_archived=False)
        assert [v.version for v in active] == [3, 2]
        rows = {r["version"]: r["status"] for r in version_rows(session, "fraud-detector")}
        assert rows == {3: "ready", 2: "ready", 1: "archived"}
        actions = session.scalars(
            select(AuditEvent.action).where(AuditEvent.subject_type == "model_version")
        ).all()
        assert actions.count("version.archive") == 1
    with store.session() as session:
        registry.unarchive_version(session, model_name="fraud-detector", version=1, actor="ops")
    with store.session() as session:
        registry.rollback_alias(session, model_name="fraud-detector", alias="champion", actor="t")
    with store.reader() as session:
        assert registry.aliases_of(session, "fraud-detector") == {"champion": 1}


def test_references_name_versions_aliases_and_latest(
    store: Store, artifacts: ArtifactStore
) -> None:
    for seed in range(3):
        register(store, artifacts, seed=seed)
    with store.session() as session:
        registry.set_alias(
            session, model_name="fraud-detector", alias="challenger", version=2,
            expected_revision=None, actor="t",
        )  # fmt: skip
    with store.reader() as session:
        assert registry.resolve_ref(session, "Fraud-Detector@1").version == 1
        assert registry.resolve_ref(session, "fraud-detector@Challenger").version == 2
        assert registry.resolve_ref(session, "fraud-detector@latest").version == 3
        for bad, message in [
            ("fraud-detector", "expected NAME@VERSION"),
            ("fraud-detector@9", "no version 9"),
            ("fraud-detector@champion", "'champion' of 'fraud-detector' is not set"),
            ("nope@1", "no model named 'nope'"),
            ("a/b@1", "slash"),
        ]:
            with pytest.raises(registry.RegistryError, match=message):
                registry.resolve_ref(session, bad)
