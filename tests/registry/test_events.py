"""Prefect events of registry changes: one per committed change, with its payload; none for a
refusal; never sent where no Prefect API is configured; a failure to send undoes nothing.

The changes that send events run in a separate (spawned) process: Prefect's events worker
leaves an exit hook behind that breaks processes forked later, and other tests fork.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any

import pytest
from policy_helpers import MODEL, POLICY, TWO_PERSON, champion, versions

from loopline.lake.artifacts import ArtifactStore
from loopline.registry import events, policy
from loopline.settings import Settings
from loopline.store import Store

# --- run in the spawned process ----------------------------------------------------------------


@contextmanager
def _recording(settings: dict[Any, Any] | None = None) -> Iterator[list[dict[str, Any]]]:
    """Prefect configured with an API that answers (a listening socket) and its events client
    replaced by Prefect's recording test client; yields the list the sent events land in."""
    from prefect.events.clients import AssertingEventsClient
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    listener = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/api"
    AssertingEventsClient.reset()
    EventsWorker.set_client_override(AssertingEventsClient)
    sent: list[dict[str, Any]] = []
    try:
        with temporary_settings({PREFECT_API_URL: url, **(settings or {})}):
            yield sent
            EventsWorker.instance().drain()
        for client in AssertingEventsClient.all:
            sent.extend(event.model_dump(mode="json") for event in client.pop_events())
    finally:
        EventsWorker.set_client_override(None)
        listener.close()


def _promote_override_rollback(home: str) -> dict[str, Any]:
    store = Store.open(Settings(home=Path(home)), migrate=False)
    with _recording() as sent:
        first = policy.promote(
            store, POLICY, model_name=MODEL, version=1, actor="alice", reason="first",
            use_case="fraud",
        )  # fmt: skip
        with suppress(policy.GatesFailed):  # refused: no event
            policy.promote(store, POLICY, model_name=MODEL, version=2, actor="alice")
        policy.promote(
            store, POLICY, model_name=MODEL, version=2, actor="carol", role="model-risk",
            override=True, reason="spike was a load test",
        )  # fmt: skip
        back = policy.rollback(store, model_name=MODEL, actor="ops", reason="alerts")
    store.dispose()
    return {"sent": sent, "flags": [first.event_sent, back.event_sent]}


def _two_person_steps(home: str) -> dict[str, Any]:
    store = Store.open(Settings(home=Path(home)), migrate=False)
    with _recording() as sent:
        first = policy.request_promotion(
            store, TWO_PERSON, model_name=MODEL, version=1, actor="alice", reason="good"
        )
        policy.approve_request(store, TWO_PERSON, first["id"], actor="bob", role="model-risk")
        second = policy.request_promotion(
            store, TWO_PERSON, model_name=MODEL, version=2, actor="alice", reason="better"
        )
        policy.reject_request(store, TWO_PERSON, second["id"], reason="no", actor="alice")
    store.dispose()
    return {"sent": sent, "request_id": first["id"], "flags": [first["event_sent"]]}


def _too_large_to_send(home: str) -> dict[str, Any]:
    from prefect.settings import PREFECT_SERVER_EVENTS_MAXIMUM_SIZE_BYTES

    store = Store.open(Settings(home=Path(home)), migrate=False)
    logged: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("loopline.registry.events").addHandler(handler)
    # Prefect refuses events over its size limit by raising: the promotion must stand.
    with _recording({PREFECT_SERVER_EVENTS_MAXIMUM_SIZE_BYTES: 64}) as sent:
        change = policy.promote(store, POLICY, model_name=MODEL, version=1, actor="alice")
    store.dispose()
    return {"sent": sent, "flags": [change.event_sent], "logged": logged}


# --- the tests ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fresh() -> Iterator[Callable[[Callable[[str], dict[str, Any]], Settings], dict[str, Any]]]:
    """Run a scenario (a function of the data home) in one spawned process; its result."""
    with Pool(1, context=mp.get_context("spawn")) as pool:
        yield lambda scenario, settings: pool.apply(scenario, (str(settings.home),))


def _related(event: dict[str, Any]) -> list[tuple[str, str]]:
    return [(r["prefect.resource.id"], r["prefect.resource.role"]) for r in event["related"]]


def test_each_committed_change_sends_one_event_with_its_payload(
    fresh: Any, settings: Settings, store: Store, artifacts: ArtifactStore
) -> None:
    versions(store, artifacts, 2, failing={2: ["latency"]})
    result = fresh(_promote_override_rollback, settings)
    assert result["flags"] == [True, True] and champion(store) == 1
    got = result["sent"]
    assert [e["event"] for e in got] == [
        events.MODEL_PROMOTED,
        events.MODEL_PROMOTED,
        events.MODEL_ROLLED_BACK,
    ]
    promoted, overridden, rolled = got
    assert promoted["resource"] == {
        "prefect.resource.id": f"loopline.model.{MODEL}",
        "prefect.resource.name": MODEL,
        "loopline.alias": "champion",
        "loopline.use-case": "fraud",
    }
    payload = promoted["payload"]
    assert {k: payload[k] for k in ("from", "to", "actor", "reason", "override")} == {
        "from": None,
        "to": 1,
        "actor": "alice",
        "reason": "first",
        "override": False,
    }
    assert _related(promoted) == [(f"loopline.model.{MODEL}.version.1", "to")]
    payload = overridden["payload"]
    assert (payload["override"], payload["failed_gates"], payload["role"]) == (
        True,
        ["latency"],
        "model-risk",
    )
    assert (payload["from"], payload["to"], payload["actor"]) == (1, 2, "carol")
    payload = rolled["payload"]
    assert (payload["from"], payload["to"], payload["reason"]) == (2, 1, "alerts")
    assert sorted(role for _, role in _related(rolled)) == ["from", "to"]


def test_the_two_person_rule_steps_send_events(
    fresh: Any, settings: Settings, store: Store, artifacts: ArtifactStore
) -> None:
    versions(store, artifacts, 2)
    result = fresh(_two_person_steps, settings)
    got = result["sent"]
    assert [e["event"] for e in got] == [
        events.PROMOTION_REQUESTED,
        events.MODEL_PROMOTED,
        events.PROMOTION_REQUESTED,
        events.PROMOTION_REJECTED,
    ]
    requested, approved, _, rejected = (e["payload"] for e in got)
    assert (requested["request_id"], requested["to"], requested["status"]) == (
        result["request_id"],
        1,
        "pending",
    )
    assert (approved["request_id"], approved["actor"], approved["requested_by"]) == (
        result["request_id"],
        "bob",
        "alice",
    )
    assert (rejected["status"], rejected["decision_note"]) == ("rejected", "no")
    assert champion(store) == 1


def test_a_change_stays_when_its_event_cannot_be_sent(
    fresh: Any, settings: Settings, store: Store, artifacts: ArtifactStore
) -> None:
    versions(store, artifacts, 1)
    result = fresh(_too_large_to_send, settings)
    assert result["flags"] == [False] and result["sent"] == [] and champion(store) == 1
    assert any("could not send event loopline.model.promoted" in m for m in result["logged"])


def test_without_a_prefect_api_nothing_is_sent_and_nothing_starts(
    store: Store, artifacts: ArtifactStore, caplog: pytest.LogCaptureFixture
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    versions(store, artifacts, 2)
    began = time.monotonic()
    with temporary_settings({PREFECT_API_URL: None}):
        change = policy.promote(store, POLICY, model_name=MODEL, version=1, actor="alice")
    assert not change.event_sent and champion(store) == 1
    # An API that does not answer: skipped with a warning, no reconnect attempts at exit.
    dead = socket.create_server(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    with (
        temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{port}/api"}),
        caplog.at_level(logging.WARNING, logger="loopline.registry.events"),
    ):
        change = policy.promote(store, POLICY, model_name=MODEL, version=2, actor="alice")
    assert not change.event_sent and champion(store) == 2
    assert "does not answer" in caplog.text
    assert time.monotonic() - began < 5  # no throwaway server started, no retries
