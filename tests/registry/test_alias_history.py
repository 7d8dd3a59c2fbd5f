"""Alias history: "which version was champion at time T" equals a replay of the recorded moves."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from registry_helpers import register

from loopline.lake.artifacts import ArtifactStore
from loopline.registry import models as registry
from loopline.registry.history import alias_at, alias_change_at, alias_history, aliases_at
from loopline.store import Store
from loopline.store.tables import AliasEvent

MODEL = "fraud-detector"
ALIASES = ("champion", "challenger")


def _random_moves(store: Store, rng: random.Random, n: int) -> list[tuple[datetime, str, int]]:
    """Apply `n` random promotions and rollbacks; returns (time, alias, version) as recorded."""
    recorded: list[tuple[datetime, str, int]] = []
    while len(recorded) < n:
        alias = rng.choice(ALIASES)
        with store.reader() as session:
            current = registry.get_alias(session, MODEL, alias)
        rollback = current is not None and rng.random() < 0.3
        try:
            move = registry.move_alias(
                store,
                model_name=MODEL,
                alias=alias,
                version=rng.randint(1, 5),
                expected_revision=None if current is None else current.revision,
                actor=rng.choice(["alice", "bob", "pipeline"]),
                reason=f"move {len(recorded)}",
                rollback=rollback,
            )
        except registry.RegistryError:
            continue  # e.g. a rollback with nothing to return to: refused, not a move
        with store.reader() as session:
            event = (
                session.query(AliasEvent)
                .filter_by(model_name=MODEL, alias=alias, revision=move.revision)
                .one()
            )
        recorded.append((event.at, alias, move.to_version))
    return recorded


def _replay(recorded: list[tuple[datetime, str, int]], alias: str, at: datetime) -> int | None:
    """Brute force: walk every recorded move in the order it was made."""
    state = None
    for when, moved, version in recorded:
        if moved == alias and when <= at:
            state = version
    return state


def test_alias_at_any_time_matches_a_replay_of_the_history(
    backend_store: Store, artifacts: ArtifactStore
) -> None:
    store = backend_store
    for seed in range(5):
        register(store, artifacts, seed=seed)
    rng = random.Random(20261124)
    recorded = _random_moves(store, rng, 40)
    times = [when for when, _, _ in recorded]
    assert times == sorted(times)
    tiny = timedelta(microseconds=1)
    probes = [times[0] - timedelta(days=1), times[-1] + timedelta(days=1)]
    probes += [t + d for t in times for d in (-tiny, timedelta(0), tiny)]
    span = (times[-1] - times[0]).total_seconds()
    probes += [times[0] + timedelta(seconds=rng.uniform(0, span)) for _ in range(200)]
    with store.reader() as session:
        for at in probes:
            for alias in ALIASES:
                assert alias_at(session, MODEL, alias, at) == _replay(recorded, alias, at), (
                    alias,
                    at,
                )
            expected = {a: _replay(recorded, a, at) for a in ALIASES}
            got = {a: c.to_version for a, c in aliases_at(session, MODEL, at).items()}
            assert got == {a: v for a, v in expected.items() if v is not None}
        # The present equals the last recorded state.
        now = datetime.now(UTC)
        assert registry.aliases_of(session, MODEL) == {
            a: _replay(recorded, a, now) for a in ALIASES if _replay(recorded, a, now)
        }
        history = alias_history(session, MODEL)
        assert [(c.at, c.alias, c.to_version) for c in history] == recorded
        # Each alias's moves chain: every move starts where the previous one ended.
        for alias in ALIASES:
            moves = alias_history(session, MODEL, alias)
            assert [m.revision for m in moves] == list(range(1, len(moves) + 1))
            assert [m.from_version for m in moves] == [None] + [m.to_version for m in moves[:-1]]


def test_who_put_it_there_and_window_queries(store: Store, artifacts: ArtifactStore) -> None:
    for seed in range(3):
        register(store, artifacts, seed=seed)
    moves = [(1, None, "alice", "first"), (2, 1, "bob", "better"), (3, 2, "carol", "best")]
    for version, expected, actor, reason in moves:
        with store.session() as session:
            registry.set_alias(
                session, model_name=MODEL, alias="champion", version=version,
                expected_revision=expected, actor=actor, reason=reason,
            )  # fmt: skip
    with store.session() as session:
        registry.rollback_alias(
            session, model_name=MODEL, alias="champion", actor="ops", reason="regression"
        )
    with store.reader() as session:
        history = alias_history(session, MODEL, "Champion")
        assert [(c.from_version, c.to_version, c.action, c.actor) for c in history] == [
            (None, 1, "promote", "alice"),
            (1, 2, "promote", "bob"),
            (2, 3, "promote", "carol"),
            (3, 2, "rollback", "ops"),
        ]
        during = alias_change_at(session, MODEL, "champion", history[2].at + timedelta(0))
        assert during is not None and (during.to_version, during.actor) == (3, "carol")
        assert alias_at(session, MODEL, "champion", history[0].at - timedelta(seconds=1)) is None
        assert alias_at(session, "FRAUD-DETECTOR", "champion", datetime.now(UTC)) == 2
        window = alias_history(session, MODEL, since=history[1].at, until=history[2].at)
        assert [c.to_version for c in window] == [2, 3]
        assert [c.to_version for c in alias_history(session, MODEL, limit=2)] == [3, 2]
        with pytest.raises(registry.RegistryError, match="timezone-aware"):
            alias_at(session, MODEL, "champion", datetime(2026, 1, 1))
        with pytest.raises(registry.RegistryError, match="no model named"):
            alias_at(session, "nope", "champion", datetime.now(UTC))
        with pytest.raises(registry.RegistryError, match="limit"):
            alias_history(session, MODEL, limit=0)
