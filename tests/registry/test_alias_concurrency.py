"""50 processes promote different versions to champion at once while a reader polls.

Every read sees exactly one champion, consistent with the alias history; every attempt (won or
lost) is in the audit log; the winners' moves form one unbroken chain.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

import pytest
from registry_helpers import FEATURES, SERVICE, new_run
from sqlalchemy import func, select

from loopline.registry import models as registry
from loopline.settings import Settings
from loopline.store import Store
from loopline.store.tables import Alias, AliasEvent, Artifact, AuditEvent, ModelVersion

MODEL = "fraud-detector"
PROMOTERS = 50
ATTEMPTS = 2


def _setup(settings: Settings) -> None:
    """Versions 1..51, champion at version 1."""
    store = Store.open(settings)
    run_id = new_run(store)
    artifact_id = "sha256:" + "cd" * 32
    with store.session() as session:
        session.add(Artifact(id=artifact_id, size_bytes=1, media_type="text/plain"))
        session.flush()
        for _ in range(PROMOTERS + 1):
            registry.register_version(
                session, model_name=MODEL, use_case="fraud", run_id=run_id,
                artifact_id=artifact_id, feature_service=SERVICE, feature_names=FEATURES,
                metrics={}, datasets={},
            )  # fmt: skip
        registry.set_alias(
            session, model_name=MODEL, alias="champion", version=1, expected_revision=None,
            actor="setup",
        )  # fmt: skip
    store.dispose()  # no pooled connection may cross the fork


def _promoter(settings: Settings, worker: int, start: Any, out: Any) -> None:
    store = Store.open(settings, migrate=False)
    outcomes: list[str] = []
    start.wait(30)
    for _ in range(ATTEMPTS):
        try:
            with store.reader() as session:
                current = registry.get_alias(session, MODEL, "champion")
                revision = None if current is None else current.revision
            move = registry.move_alias(
                store, model_name=MODEL, alias="champion", version=worker + 2,
                expected_revision=revision, actor=f"worker-{worker}", reason="storm",
            )  # fmt: skip
            # A win must be exactly one step past the revision this worker read.
            outcomes.append(
                "won" if revision is not None and move.revision == revision + 1 else "bad"
            )
        except registry.AliasConflict as exc:
            outcomes.append("lost" if "moved since revision" in str(exc) else f"bad: {exc}")
        except Exception as exc:  # reported to the test, which fails on any
            outcomes.append(f"error: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    store.dispose()
    out.put((worker, outcomes))


def _reader(settings: Settings, stop: Any, out: Any) -> None:
    """Poll the champion; each read checks one row and its matching history event."""
    store = Store.open(settings, migrate=False)
    reads, problems, last_revision = 0, [], 0
    while not stop.is_set() or reads < 20:
        with store.reader() as session:
            rows = session.execute(
                select(Alias.revision, Alias.model_version_id, AliasEvent.to_version_id)
                .outerjoin(
                    AliasEvent,
                    (AliasEvent.model_name == Alias.model_name)
                    & (AliasEvent.alias == Alias.alias)
                    & (AliasEvent.revision == Alias.revision),
                )
                .where(Alias.model_name == MODEL, Alias.alias == "champion")
            ).all()
        reads += 1
        if len(rows) != 1:
            problems.append(f"read {reads}: {len(rows)} champions")
            continue
        revision, version_id, event_target = rows[0]
        if event_target != version_id:
            problems.append(f"read {reads}: alias at revision {revision} has no matching event")
        if revision < last_revision:
            problems.append(f"read {reads}: revision went back {last_revision} -> {revision}")
        last_revision = revision
        time.sleep(0.001)  # leave the cores to the promoters
    store.dispose()
    out.put((reads, problems))


def test_promotion_storm_keeps_one_champion_and_audits_every_attempt(
    backend_settings: Settings,
) -> None:
    _setup(backend_settings)
    ctx = mp.get_context("fork")
    start, stop, results, reads = ctx.Event(), ctx.Event(), ctx.Queue(), ctx.Queue()
    reader = ctx.Process(target=_reader, args=(backend_settings, stop, reads))
    promoters = [
        ctx.Process(target=_promoter, args=(backend_settings, w, start, results))
        for w in range(PROMOTERS)
    ]
    reader.start()
    for process in promoters:
        process.start()
    started = time.perf_counter()
    start.set()
    outcomes = dict(results.get(timeout=60) for _ in promoters)
    stop.set()
    read_count, problems = reads.get(timeout=60)
    for process in [*promoters, reader]:
        process.join(30)
        assert process.exitcode == 0
    elapsed = time.perf_counter() - started

    flat = [o for worker in outcomes.values() for o in worker]
    assert [o for o in flat if o not in ("won", "lost")] == []
    won = flat.count("won")
    # 50 processes released at once on a few cores: some must lose (else no CAS happened).
    assert won >= 1 and flat.count("lost") >= 1 and len(flat) == PROMOTERS * ATTEMPTS
    assert problems == [] and read_count >= 20

    store = Store.open(backend_settings, migrate=False)
    with store.reader() as session:
        audited = session.execute(
            select(AuditEvent.actor, AuditEvent.action, func.count())
            .where(AuditEvent.subject_type == "alias", AuditEvent.actor.like("worker-%"))
            .group_by(AuditEvent.actor, AuditEvent.action)
        ).all()
        by_worker: dict[tuple[str, str], int] = {(a, act): n for a, act, n in audited}
        for worker, got in outcomes.items():
            actor = f"worker-{worker}"
            assert by_worker.get((actor, "alias.promote"), 0) == got.count("won"), actor
            assert by_worker.get((actor, "alias.conflict"), 0) == got.count("lost"), actor
        assert sum(by_worker.values()) == PROMOTERS * ATTEMPTS

        alias = session.get_one(Alias, (MODEL, "champion"))
        assert alias.revision == 1 + won
        events = session.scalars(
            select(AliasEvent).where(AliasEvent.alias == "champion").order_by(AliasEvent.revision)
        ).all()
        assert [e.revision for e in events] == list(range(1, won + 2))
        assert [e.from_version_id for e in events[1:]] == [e.to_version_id for e in events[:-1]]
        assert events[-1].to_version_id == alias.model_version_id
        winners = {e.actor for e in events[1:]}
        assert winners == {f"worker-{w}" for w, got in outcomes.items() if "won" in got}
        champion = session.get_one(ModelVersion, alias.model_version_id)
        assert champion.version == int(events[-1].actor.split("-")[1]) + 2
    store.dispose()
    assert elapsed < 60


def test_a_stale_promotion_gets_a_clear_conflict(settings: Settings) -> None:
    _setup(settings)
    store = Store.open(settings)
    with pytest.raises(registry.AliasConflict, match="moved since revision 0"):
        registry.move_alias(
            store, model_name=MODEL, alias="champion", version=3, expected_revision=0,
            actor="late",
        )  # fmt: skip
    with pytest.raises(registry.AliasConflict, match="already set"):
        registry.move_alias(
            store, model_name="Fraud-Detector", alias="Champion", version=3,
            expected_revision=None, actor="late",
        )  # fmt: skip
    with pytest.raises(registry.RegistryError, match="no version 99"):
        registry.move_alias(
            store, model_name=MODEL, alias="champion", version=99, expected_revision=1,
            actor="late",
        )  # fmt: skip
    with store.reader() as session:
        audited = session.execute(
            select(AuditEvent.action, AuditEvent.subject_id)
            .where(AuditEvent.actor == "late")
            .order_by(AuditEvent.id)
        ).all()
        assert [tuple(row) for row in audited] == [
            ("alias.conflict", f"{MODEL}@champion"),
            ("alias.conflict", f"{MODEL}@champion"),  # any spelling audits under one name
            ("alias.refused", f"{MODEL}@champion"),
        ]
        current = registry.get_alias(session, MODEL, "champion")
        assert current is not None and current.model_version.version == 1
    store.dispose()
