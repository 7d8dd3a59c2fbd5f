"""The Models page's actions under AppTest, on a store written through the registry API.

Every action goes through the page's form and the registry policy; the assertions read the
page (its messages, champion metric, tables) and the store (alias, alias events, audit events),
so an action that is shown but not done, or done but not audited, fails here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest
from test_app import PAGES, metric, open_page, text

from loopline.lake.artifacts import ArtifactStore
from loopline.registry.history import alias_change_at, alias_history
from loopline.registry.models import CHAMPION, archive_version, get_alias
from loopline.registry.policy import list_requests, promote
from loopline.spec import load_spec
from loopline.store import Store
from loopline.store.tables import AliasEvent, AuditEvent
from loopline.ui import queries as q

if TYPE_CHECKING:  # conftest is not importable as a module; these are its fixture types
    from conftest import Registry

MODELS = PAGES[2]


@pytest.fixture(params=["registry_home"])
def registry(request: pytest.FixtureRequest) -> Registry:
    """The store the page acts on: `registry_home`, or `two_person_home` when parametrized."""
    return request.getfixturevalue(request.param)


@pytest.fixture
def store(registry: Registry) -> Iterator[Store]:
    """The registry's store, opened beside the app's (for setup and assertions)."""
    opened = Store.open(registry.home.settings)
    yield opened
    opened.dispose()


TWO_PERSON = pytest.mark.parametrize("registry", ["two_person_home"], indirect=True)


def page(*, actor: str = "alice", role: str = "", version: int | None = None) -> AppTest:
    """The Models page, acting as `actor` in `role`, with `version` selected."""
    at = open_page(MODELS)
    at.text_input(key="models.actor").input(actor)
    at.text_input(key="models.role").input(role)
    if version is not None:
        at.selectbox(key="models.version").set_value(version)
    return ran(at.run())


def ran(at: AppTest) -> AppTest:
    """`at` after a run that raised nothing."""
    assert not at.exception, [e.value for e in at.exception]
    return at


def submit(at: AppTest, button: str, **fields: Any) -> AppTest:
    """Fill form fields by key (text, numbers, checkboxes) and press a submit button."""
    for key, value in fields.items():
        if isinstance(value, bool):
            at.checkbox(key=f"models.{key}").set_value(value)
        elif isinstance(value, int):
            at.number_input(key=f"models.{key}").set_value(value)
        elif key in ("reason", "rollback_reason"):
            at.text_area(key=f"models.{key}").input(value)
        else:
            at.text_input(key=f"models.{key}").input(value)
    at.button(key=f"models.{button}").click()
    return ran(at.run())


def messages(at: AppTest) -> tuple[list[str], list[str]]:
    """(successes, errors) shown on the page."""
    return [s.value for s in at.success], [e.value for e in at.error]


def frame_with(at: AppTest, column: str) -> Any:
    """The one table on the page with this column."""
    [found] = [d.value for d in at.dataframe if column in d.value.columns]
    return found


def champion(store: Store) -> int | None:
    with store.reader() as session:
        found = get_alias(session, "fraud-detector", CHAMPION)
        return None if found is None else found.model_version.version


def audits(store: Store, action: str) -> list[AuditEvent]:
    with store.reader() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )


def alias_moves(store: Store) -> int:
    with store.reader() as session:
        return session.scalar(select(func.count()).select_from(AliasEvent)) or 0


def test_promoting_a_passing_version_moves_the_champion_and_is_audited(
    registry: Registry, store: Store
) -> None:
    at = page(actor="carol", version=registry.passing)
    assert metric(at, "Champion") == "v1"
    at = submit(at, "promote_submit", reason="beats v1 on average precision")
    done, refused = messages(at)
    assert refused == []
    assert done == [
        f"champion of fraud-detector: v1 → v{registry.passing} (promote, revision 2, by carol)"
    ]
    assert metric(at, "Champion") == f"v{registry.passing}"  # the page shows the new state
    versions = at.dataframe[0].value.set_index("version")
    assert versions.loc[registry.passing, "aliases"] == "champion"
    assert champion(store) == registry.passing
    event = audits(store, "alias.promote")[-1]
    assert event.actor == "carol"
    assert (event.detail["from_version"], event.detail["to_version"]) == (1, registry.passing)
    assert event.detail["reason"] == "beats v1 on average precision"
    assert event.detail["override"] is False and event.detail["gates"]["passed"] is True


def test_a_version_whose_gates_failed_is_refused_and_nothing_moves(
    registry: Registry, store: Store
) -> None:
    at = page(version=registry.failing)
    before = alias_moves(store)
    at = submit(at, "promote_submit", reason="looks fine to me")
    done, refused = messages(at)
    assert done == []
    assert len(refused) == 1 and f"gates failed: {registry.failed_gate}" in refused[0]
    assert metric(at, "Champion") == "v1"
    assert champion(store) == 1 and alias_moves(store) == before
    event = audits(store, "alias.refused")[-1]
    assert event.detail["to_version"] == registry.failing
    assert event.detail["gates"]["failed"] == [registry.failed_gate]


def test_an_override_needs_an_approver_role_and_is_recorded_with_its_reason(
    registry: Registry, store: Store
) -> None:
    at = page(actor="dana", version=registry.failing)
    reason = "p99 measured on a loaded CI box; 4 ms in production"
    at = submit(at, "promote_submit", override=True, reason=reason)
    done, refused = messages(at)
    assert done == [] and len(refused) == 1
    assert "an override of failed gates needs an approver role" in refused[0]
    assert champion(store) == 1

    at.text_input(key="models.role").input("model-risk")
    at = submit(at, "promote_submit")  # the form kept the reason and the override
    done, refused = messages(at)
    assert refused == []
    assert done == [
        f"champion of fraud-detector: v1 → v{registry.failing} (promote, revision 2, by dana) "
        f"by override of {registry.failed_gate}"
    ]
    assert champion(store) == registry.failing
    event = audits(store, "alias.promote")[-1]
    assert (event.actor, event.detail["role"], event.detail["reason"]) == (
        "dana",
        "model-risk",
        reason,
    )
    assert event.detail["override"] is True
    assert event.detail["gates"]["failed"] == [registry.failed_gate]
    with store.reader() as session:
        assert alias_history(session, "fraud-detector", "champion")[-1].reason == reason


def test_an_archived_version_says_so_and_cannot_take_an_alias(
    registry: Registry, store: Store
) -> None:
    with store.session() as session:
        archive_version(
            session, model_name="fraud-detector", version=registry.passing, actor="ops",
            reason="superseded",
        )  # fmt: skip
    at = page(version=registry.passing)
    assert f"v{registry.passing} is archived" in text(at)
    assert frame_with(at, "status").set_index("version").loc[registry.passing, "status"] == (
        "archived"
    )
    at = submit(at, "promote_submit", reason="bring it back")
    assert "is archived; unarchive it" in messages(at)[1][0]
    assert champion(store) == 1


def test_the_override_checkbox_is_offered_only_when_gates_failed(registry: Registry) -> None:
    at = page(version=registry.passing)
    assert not [c for c in at.checkbox if c.key == "models.override"]
    at.selectbox(key="models.version").set_value(registry.failing)
    at = ran(at.run())
    assert at.checkbox(key="models.override").value is False


@TWO_PERSON
def test_the_two_person_rule_needs_a_request_and_someone_elses_approval(
    registry: Registry, store: Store
) -> None:
    at = page(actor="alice", role="model-risk", version=registry.passing)
    at = submit(at, "promote_submit", reason="v2 beats v1 on both windows")
    assert "the two-person rule is on for 'champion'" in messages(at)[1][0]

    at = submit(at, "request_submit")
    done, refused = messages(at)
    assert refused == [] and done[0].startswith(f"Requested v{registry.passing} as champion")
    pending = frame_with(at, "expires_at")
    assert pending[["version", "requested_by"]].values.tolist() == [[registry.passing, "alice"]]

    at = submit(at, "approve_submit", decision_note="lgtm")  # alice approves her own request
    assert "alice requested" in messages(at)[1][0]
    assert "cannot approve it too" in messages(at)[1][0]
    assert champion(store) == 1

    at.text_input(key="models.actor").input("bob")
    at = submit(at, "approve_submit")
    done, refused = messages(at)
    assert refused == []
    assert done[0].startswith("Approved request")
    assert done[0].endswith(f"v1 → v{registry.passing} (promote, revision 2, by bob)")
    assert champion(store) == registry.passing
    assert metric(at, "Champion") == f"v{registry.passing}"
    with store.reader() as session:
        [request] = list_requests(session, "fraud-detector")
    assert (request["status"], request["requested_by"], request["decided_by"]) == (
        "approved",
        "alice",
        "bob",
    )
    assert "No pending request." in text(at)


@TWO_PERSON
def test_a_request_can_be_rejected_with_a_reason(registry: Registry, store: Store) -> None:
    at = page(actor="alice", version=registry.passing)
    at = submit(at, "request_submit", reason="try v2")
    at.text_input(key="models.actor").input("bob")
    at.text_input(key="models.role").input("model-risk")
    at = submit(at, "reject_submit")
    assert "rejecting a promotion request needs a reason" in messages(at)[1][0]
    at = submit(at, "reject_submit", decision_note="wait for the holiday data")
    assert messages(at)[0][0].endswith("wait for the holiday data")
    assert champion(store) == 1
    with store.reader() as session:
        [request] = list_requests(session, "fraud-detector")
    assert (request["status"], request["decision_note"]) == (
        "rejected",
        "wait for the holiday data",
    )


def test_rollback_returns_the_champion_to_its_previous_holder(
    registry: Registry, store: Store
) -> None:
    spec = load_spec("fraud")
    promote(store, spec.promotion, model_name="fraud-detector", version=registry.passing,
            actor="bob", reason="better")  # fmt: skip
    at = page(actor="erin")
    assert f"champion: v{registry.passing} → v1" in text(at)
    at = submit(at, "rollback_submit", rollback_reason="precision dropped overnight")
    done, refused = messages(at)
    assert refused == []
    assert done == [
        f"champion of fraud-detector: v{registry.passing} → v1 (rollback, revision 3, by erin)"
    ]
    assert champion(store) == 1 and metric(at, "Champion") == "v1"
    with store.reader() as session:
        last = alias_history(session, "fraud-detector", "champion")[-1]
    assert (last.action, last.actor, last.reason) == (
        "rollback",
        "erin",
        "precision dropped overnight",
    )


def _ceil_second(moment: datetime) -> datetime:
    whole = moment.replace(microsecond=0)
    return whole if whole == moment else whole + timedelta(seconds=1)


def test_who_was_champion_at_a_moment_answers_from_the_history(
    registry: Registry, store: Store
) -> None:
    time.sleep(1.1)  # the inputs have one-second steps: keep the two moves seconds apart
    promote(store, load_spec("fraud").promotion, model_name="fraud-detector",
            version=registry.passing, actor="bob", reason="beats v1")  # fmt: skip
    with store.reader() as session:
        first, second = alias_history(session, "fraud-detector", "champion")
    moments = {
        first.at.replace(microsecond=0) - timedelta(seconds=1): None,
        _ceil_second(first.at): (1, "alice", "first model"),
        _ceil_second(second.at): (registry.passing, "bob", "beats v1"),
    }
    at = page()
    for moment, expected in moments.items():
        at.date_input(key="models.at_date").set_value(moment.date())
        at.time_input(key="models.at_time").set_value(moment.time())
        at = ran(at.run())
        # The page's other notes (e.g. the live comparison's) are not the answer.
        [answer] = [i.value for i in at.info if i.value.startswith("At ")]
        with store.reader() as session:
            recorded = alias_change_at(session, "fraud-detector", "champion", moment)
        when = moment.strftime("%Y-%m-%d %H:%M:%S")
        if expected is None:
            assert recorded is None
            assert answer == f"At {when} UTC, **champion** was not set."
            continue
        version, actor, reason = expected
        assert recorded is not None
        assert (recorded.to_version, recorded.actor, recorded.reason) == expected
        assert answer.startswith(
            f"At {when} UTC, **champion** was **v{version}**: promote by **{actor}**"
        )
        assert answer.endswith(f"because: {reason}")


def test_verify_accepts_an_intact_package_and_refuses_a_tampered_one(
    registry: Registry, store: Store
) -> None:
    at = page(actor="frank", version=registry.passing)
    at.button(key="models.verify").click()
    at = ran(at.run())
    done, refused = messages(at)
    assert refused == [] and done[0].startswith("Verified: the package matches its hash")
    assert registry.package_ids[registry.passing] in text(at)

    package_id = registry.package_ids[registry.failing]
    path = ArtifactStore(registry.home.settings.artifacts_dir).path(package_id)
    forged = bytearray(path.read_bytes())
    forged[forged.index(b"leaf_value=") + len(b"leaf_value=")] ^= 0x01
    path.chmod(0o644)
    path.write_bytes(bytes(forged))

    at.selectbox(key="models.version").set_value(registry.failing)
    at = ran(at.run())
    at.button(key="models.verify").click()
    at = ran(at.run())
    done, refused = messages(at)
    assert done == []
    assert len(refused) == 1
    assert refused[0].startswith(f"refused model_version fraud-detector/{registry.failing}:")
    assert "hash mismatch" in refused[0]
    assert "recorded in the audit log (`package_refused`)" in text(at)
    [event] = audits(store, "package_refused")
    assert (event.actor, event.subject_id) == ("frank", f"fraud-detector/{registry.failing}")


def test_gate_verdicts_read_as_a_table_with_their_evidence(registry: Registry) -> None:
    at = page(version=registry.failing)
    gates = frame_with(at, "measures").set_index("gate")
    assert gates.loc[registry.failed_gate, "verdict"] == "FAILED"
    assert gates.loc[registry.failed_gate, "measures"] == "p99 ms vs budget"
    assert gates.loc[registry.failed_gate, ["observed", "threshold"]].tolist() == [35.0, 20.0]
    beats = gates.loc["beats_champion"]
    assert beats["measures"] == "improvement vs margin"
    # the smallest improvement over champion v1 across the holdout and the recent window
    assert (beats["observed"], beats["threshold"]) == pytest.approx((0.05, 0.005))
    assert set(gates["verdict"]) == {"passed", "FAILED"}
    assert f"Promotion: gates failed: {registry.failed_gate}." in text(at)
    labels = [e.label for e in at.expander]
    for gate, kind in (
        (registry.failed_gate, "latency, FAILED"),
        ("country_selection_gap", "fairness, passed"),
        ("model_size", "model_size, passed"),
        ("training_data", "data, passed"),
        ("beats_champion", "beats_champion, passed"),
    ):
        assert f"Evidence: {gate} ({kind})" in labels
    assert "- p99_ms: `35`" in text(at)
    groups = frame_with(at, "selection_rate")
    assert groups.set_index("group").loc["NG", "ratio"] == pytest.approx(1.0)
    windows = frame_with(at, "improvement")
    assert windows["window"].tolist() == ["holdout", "recent"]


@pytest.mark.parametrize(
    ("detail", "measures"),
    [
        ({"kind": "beats_champion", "metric": "log_loss"}, "improvement vs margin"),
        ({"kind": "min", "metric": "roc_auc"}, "roc_auc vs floor"),
        (
            {
                "kind": "data",
                "checks": [
                    {"check": "min_rows", "passed": True},
                    {"check": "max_null_fraction", "passed": False},
                ],
            },
            "max_null_fraction vs limit",
        ),
        ({}, "observed vs threshold"),
    ],
)
def test_gate_measures_name_what_observed_and_threshold_are(detail: dict, measures: str) -> None:
    assert q.gate_measures({"gate": "g", "detail": detail}) == measures


def test_gate_evidence_flattens_maps_and_tabulates_mixed_records() -> None:
    evidence = q.gate_evidence(
        {
            "gate": "training_data",
            "detail": {
                "kind": "data",
                "rows": 10,
                "null_fraction_top": {"a": 0.5},
                "checks": [
                    {"check": "min_rows", "observed": 10, "over": None},
                    {"check": "max_null_fraction", "observed": 0.5, "over": ["a", "b"]},
                ],
                "error": "shown in the table",
            },
        }
    )
    assert evidence.kind == "data"
    assert evidence.facts == {"rows": "10", "null_fraction_top.a": "0.5"}
    checks = evidence.tables["checks"]
    assert checks["observed"].to_list() == [10.0, 0.5]
    assert checks["over"].to_list() == [None, "a, b"]
