"""Promotion policy: gates block, overrides need a reason and an approver role, the two-person
rule for champion, rollback in one step, and every attempt audited with its evidence."""

from __future__ import annotations

import getpass
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from policy_helpers import MODEL, POLICY, TWO_PERSON, audits, champion, record_gates, versions
from pydantic import ValidationError
from sqlalchemy import select, update

from loopline.lake.artifacts import ArtifactStore
from loopline.registry import models as registry
from loopline.registry import policy
from loopline.settings import Settings
from loopline.spec import PromotionSpec, load_spec
from loopline.stages.promote import run_promote, run_rollback
from loopline.store import Store
from loopline.store.tables import AliasEvent, PromotionRequest, Run, utcnow

FRAUD = load_spec("fraud")


@pytest.fixture(autouse=True)
def _no_prefect_api() -> Iterator[None]:
    """No Prefect API, whatever the environment says: no event is sent from this process."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: None}):
        yield


def _promote(store: Store, version: int, **kwargs: object) -> policy.PolicyChange:
    options: dict[str, object] = {"actor": "alice", "reason": "better", **kwargs}
    spec = options.pop("policy", POLICY)
    return policy.promote(store, spec, model_name=MODEL, version=version, **options)  # type: ignore[arg-type]


# --- gates -------------------------------------------------------------------------------------


def test_failing_gates_block_and_the_refusal_is_audited_with_evidence(
    store: Store, artifacts: ArtifactStore
) -> None:
    versions(store, artifacts, 2, failing={2: ["latency"]}, ungated=(1,))
    with pytest.raises(policy.GatesFailed, match=r"gates failed: latency") as failed:
        _promote(store, 2)
    assert failed.value.failed == ["latency"]
    with pytest.raises(policy.GatesFailed, match="no gate results recorded"):
        _promote(store, 1)
    assert champion(store) is None
    refused = audits(store, "alias.refused")
    assert [r["detail"]["to_version"] for r in refused] == [2, 1]
    gates = refused[0]["detail"]["gates"]
    assert gates["passed"] is False and gates["failed"] == ["latency"]
    by_gate = {g["gate"]: g for g in gates["results"]}
    assert by_gate["latency"]["detail"]["evidence"] == "latency of v2"  # failed: full evidence
    assert "detail" not in by_gate["auc_floor"] and by_gate["auc_floor"]["passed"]
    assert refused[1]["detail"]["gates"] == {"passed": False, "failed": [], "results": []}


def test_the_latest_verdict_of_each_gate_counts(store: Store, artifacts: ArtifactStore) -> None:
    versions(store, artifacts, 1, failing={1: ["latency"]})
    record_gates(store, 1, {"latency": True})  # re-evaluated later: passes now
    change = _promote(store, 1)
    assert (change.move.to_version, change.override) == (1, False)


def test_passing_gates_promote_and_the_audit_has_who_why_and_evidence(
    store: Store, artifacts: ArtifactStore
) -> None:
    versions(store, artifacts, 2)
    first = _promote(store, 1, reason="first model")
    second = _promote(store, 2, actor="bob", reason="beats v1", expect_version=1)
    assert (first.move.from_version, first.move.to_version, first.move.revision) == (None, 1, 1)
    assert (second.move.from_version, second.move.to_version, second.move.revision) == (1, 2, 2)
    assert champion(store) == 2
    promoted = audits(store, "alias.promote")
    assert [(p["actor"], p["detail"]["reason"]) for p in promoted] == [
        ("alice", "first model"),
        ("bob", "beats v1"),
    ]
    detail = promoted[1]["detail"]
    assert (detail["from_version"], detail["to_version"], detail["override"]) == (1, 2, False)
    assert detail["gates"]["passed"] is True and len(detail["gates"]["results"]) == 2
    with pytest.raises(policy.PromotionRefused, match="already holds 'champion'"):
        _promote(store, 2)


def test_an_override_needs_a_reason_and_an_approver_role(
    store: Store, artifacts: ArtifactStore
) -> None:
    versions(store, artifacts, 1, failing={1: ["latency", "auc_floor"]})
    before = len(audits(store))
    with pytest.raises(policy.PolicyError, match="needs a reason"):
        _promote(store, 1, override=True, reason="  ")
    assert len(audits(store)) == before  # bad input writes nothing
    with pytest.raises(policy.PromotionRefused, match="needs an approver role"):
        _promote(store, 1, override=True, reason="known latency spike")
    with pytest.raises(policy.PromotionRefused, match="role 'analyst' is not an approver role"):
        _promote(store, 1, override=True, reason="known latency spike", role="Analyst")
    assert champion(store) is None
    refusals = audits(store, "alias.refused")
    assert [(r["detail"]["override_requested"], r["detail"]["role"]) for r in refusals] == [
        (True, None),
        (True, "analyst"),
    ]
    change = _promote(
        store, 1, override=True, reason="known latency spike", role=" Model-Risk ", actor="carol"
    )
    assert champion(store) == 1
    assert change.override and set(change.failed_gates) == {"latency", "auc_floor"}
    [promoted] = audits(store, "alias.promote")
    detail = promoted["detail"]
    assert promoted["actor"] == "carol"
    assert (detail["override"], detail["role"], detail["reason"]) == (
        True,
        "model-risk",
        "known latency spike",
    )
    assert set(detail["gates"]["failed"]) == {"latency", "auc_floor"}
    assert all("evidence" in g["detail"] for g in detail["gates"]["results"])
    with store.reader() as session:
        [moved] = session.scalars(select(AliasEvent)).all()
        assert (moved.actor, moved.reason) == ("carol", "known latency spike")


def test_no_approver_roles_means_no_override(store: Store, artifacts: ArtifactStore) -> None:
    versions(store, artifacts, 1, failing={1: ["latency"]})
    with pytest.raises(policy.PromotionRefused, match="approver_roles is empty"):
        _promote(store, 1, override=True, reason="r", role="model-risk", policy=PromotionSpec())


def test_bad_input_is_refused_before_anything_is_written(
    store: Store, artifacts: ArtifactStore
) -> None:
    versions(store, artifacts, 1)
    before = len(audits(store))
    cases: list[tuple[dict[str, object], type[Exception], str]] = [
        ({"version": 0}, policy.PolicyError, "positive whole number"),
        ({"version": True}, policy.PolicyError, "positive whole number"),
        ({"alias": "Champ ion"}, registry.InvalidName, "alias"),
        ({"alias": "latest"}, registry.InvalidName, "reserved"),
        ({"role": "risk team"}, policy.PolicyError, "role 'risk team'"),
        ({"actor": "eve\u200b"}, policy.PolicyError, "control or invisible"),
        ({"actor": "x" * 201}, policy.PolicyError, "longer than 200"),
        ({"expect_version": -1}, policy.PolicyError, ">= 0"),
        ({"reason": "r" * 2001}, policy.PolicyError, "longer than 2000"),
    ]
    for kwargs, error, message in cases:
        options = {"version": 1, **kwargs}
        version = options.pop("version")
        with pytest.raises(error, match=message):
            _promote(store, version, **options)  # type: ignore[arg-type]
    assert len(audits(store)) == before
    # Unknown and archived versions are refusals of a real attempt: audited, nothing moved.
    with pytest.raises(registry.RegistryError, match="no version 7"):
        _promote(store, 7)
    with store.session() as session:
        registry.archive_version(session, model_name=MODEL, version=1, actor="ops")
    with pytest.raises(registry.VersionArchived, match="archived"):
        _promote(store, 1)
    assert [a["detail"]["to_version"] for a in audits(store, "alias.refused")] == [7, 1]
    assert champion(store) is None


def test_identity_normalises_actor_and_role() -> None:
    assert policy.identity(None, None) == policy.Identity(getpass.getuser(), None)
    assert policy.identity("  Alice ", " Model-Risk ") == policy.Identity("Alice", "model-risk")
    assert policy.identity("\uff21lice", "").actor == "Alice"  # fullwidth letters: NFKC
    assert policy.identity("Alice").key == policy.identity("alice").key


def test_the_spec_policy_is_validated_and_normalised() -> None:
    assert FRAUD.promotion.approver_roles == ["model-risk"]
    assert not FRAUD.promotion.two_person_rule
    spec = PromotionSpec(approver_roles=[" Model-Risk", "model-risk", "ML.Lead"])
    assert spec.approver_roles == ["model-risk", "ml.lead"]
    with pytest.raises(ValidationError, match="needs at least one of approver_roles"):
        PromotionSpec(two_person_rule=True)
    with pytest.raises(ValidationError, match="must be a list"):
        PromotionSpec(approver_roles="model-risk")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="request_ttl must be between"):
        PromotionSpec(approver_roles=["a"], request_ttl="0s")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="Extra inputs"):
        PromotionSpec.model_validate({"approvers": ["a"]})


# --- races -------------------------------------------------------------------------------------


def test_an_expectation_or_a_race_lost_is_a_conflict_and_audited(
    backend_store: Store, artifacts: ArtifactStore
) -> None:
    store = backend_store
    versions(store, artifacts, 6)
    _promote(store, 1)
    with pytest.raises(registry.AliasConflict, match="is version 1, expected version 3"):
        _promote(store, 2, expect_version=3)
    with pytest.raises(registry.AliasConflict, match="is version 1, expected unset"):
        _promote(store, 2, expect_version=0)
    [first, second] = audits(store, "alias.conflict")
    assert first["detail"]["expect_version"] == 3 and first["detail"]["to_version"] == 2
    assert second["detail"]["expect_version"] == 0

    # Five promoters at once: each reads the revision, then swaps; losers get a conflict.
    outcomes: dict[int, str] = {}
    start = threading.Barrier(5)

    def promoter(version: int) -> None:
        start.wait()
        try:
            _promote(store, version, actor=f"p{version}")
            outcomes[version] = "won"
        except registry.AliasConflict:
            outcomes[version] = "conflict"

    threads = [threading.Thread(target=promoter, args=(v,)) for v in range(2, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == [2, 3, 4, 5, 6] and "won" in outcomes.values()
    attempts = [a for a in audits(store) if a["actor"].startswith("p")]
    assert sorted(a["actor"] for a in attempts) == [f"p{v}" for v in range(2, 7)]
    for event in attempts:
        won = outcomes[int(event["actor"][1:])] == "won"
        assert event["action"] == ("alias.promote" if won else "alias.conflict")
    winners = [a for a in attempts if a["action"] == "alias.promote"]
    assert champion(store) == winners[-1]["detail"]["to_version"]


# --- rollback ----------------------------------------------------------------------------------


def test_rollback_returns_champion_to_its_previous_holder_in_one_step(
    store: Store, artifacts: ArtifactStore
) -> None:
    versions(store, artifacts, 3)
    for version in (1, 2, 3):
        _promote(store, version)
    change = policy.rollback(store, model_name=MODEL, actor="ops", role="SRE", reason="p@k fell")
    assert (change.move.from_version, change.move.to_version, change.move.action) == (
        3,
        2,
        "rollback",
    )
    assert champion(store) == 2
    [rolled] = audits(store, "alias.rollback")
    assert rolled["actor"] == "ops"
    assert (rolled["detail"]["reason"], rolled["detail"]["role"]) == ("p@k fell", "sre")
    with pytest.raises(registry.AliasConflict, match="is version 2, expected version 3"):
        policy.rollback(store, model_name=MODEL, actor="ops", expect_version=3)
    assert champion(store) == 2
    with pytest.raises(registry.RegistryError, match="alias 'challenger' of 'fraud-detector'"):
        policy.rollback(store, model_name=MODEL, alias="challenger", actor="ops")


# --- the two-person rule -----------------------------------------------------------------------


def _request(store: Store, version: int, **kwargs: object) -> dict[str, object]:
    options: dict[str, object] = {"actor": "alice", "reason": "beats the champion", **kwargs}
    return policy.request_promotion(
        store,
        TWO_PERSON,
        model_name=MODEL,
        version=version,
        **options,  # type: ignore[arg-type]
    )


def test_two_person_rule_request_then_someone_else_approves(
    store: Store, artifacts: ArtifactStore
) -> None:
    versions(store, artifacts, 2)
    with pytest.raises(policy.PromotionRefused, match="two-person rule is on for 'champion'"):
        _promote(store, 1, policy=TWO_PERSON, role="model-risk")
    shadow = _promote(store, 1, policy=TWO_PERSON, alias="shadow")  # other aliases: direct
    assert shadow.move.alias == "shadow" and champion(store) is None

    with pytest.raises(policy.PolicyError, match="a promotion request needs a reason"):
        _request(store, 1, reason="")
    with pytest.raises(policy.PolicyError, match="promotion requests are for 'champion'"):
        _request(store, 1, alias="shadow")
    request = _request(store, 1)
    assert request["status"] == "pending" and request["expected_revision"] is None
    assert request["gates"]["passed"] is True and request["requested_by"] == "alice"
    with pytest.raises(policy.PromotionRefused, match="already pending"):
        _request(store, 1, actor="bob")

    request_id = str(request["id"])
    with pytest.raises(policy.PromotionRefused, match="cannot approve it too"):
        policy.approve_request(store, TWO_PERSON, request_id, actor="ALICE", role="model-risk")
    with pytest.raises(policy.PromotionRefused, match="needs an approver role"):
        policy.approve_request(store, TWO_PERSON, request_id, actor="bob")
    assert champion(store) is None

    change = policy.approve_request(
        store, TWO_PERSON, request_id[:8], actor="bob", role="model-risk", note="checked"
    )
    assert champion(store) == 1
    assert (change.request_id, change.actor, change.reason) == (
        request_id,
        "bob",
        "beats the champion",
    )
    with store.reader() as session:
        [row] = policy.list_requests(session, MODEL)
    assert (row["status"], row["decided_by"], row["decision_note"]) == (
        "approved",
        "bob",
        "checked",
    )
    [approve] = audits(store, "promotion.approve")
    assert approve["detail"]["requested_by"] == "alice"
    [promoted] = audits(store, "alias.promote")[-1:]
    assert (promoted["actor"], promoted["detail"]["request_id"]) == ("bob", request_id)
    assert [r["detail"]["action"] for r in audits(store, "promotion.refused")] == [
        "request",
        "approve",
        "approve",
    ]
    with pytest.raises(policy.PromotionRefused, match="already approved by bob"):
        policy.approve_request(store, TWO_PERSON, request_id, actor="carol", role="model-risk")


def test_a_request_made_stale_by_another_move_cannot_be_approved(
    backend_store: Store, artifacts: ArtifactStore
) -> None:
    store = backend_store
    versions(store, artifacts, 3)
    _promote(store, 1)
    for_2 = _request(store, 2, actor="alice")
    for_3 = _request(store, 3, actor="carol")
    assert for_2["expected_revision"] == for_3["expected_revision"] == 1
    policy.approve_request(store, TWO_PERSON, str(for_2["id"]), actor="bob", role="model-risk")
    with pytest.raises(registry.AliasConflict, match="is stale"):
        policy.approve_request(store, TWO_PERSON, str(for_3["id"]), actor="bob", role="model-risk")
    assert champion(store) == 2
    with store.reader() as session:
        statuses = {r["version"]: r["status"] for r in policy.list_requests(session)}
        assert policy.list_requests(session, status="stale")[0]["version"] == 3
    assert statuses == {2: "approved", 3: "stale"}
    assert [a["detail"]["to_version"] for a in audits(store, "alias.conflict")] == [3]
    assert len(audits(store, "promotion.stale")) == 1


def test_requests_can_be_rejected_withdrawn_and_expire(
    store: Store, artifacts: ArtifactStore
) -> None:
    versions(store, artifacts, 3, failing={3: ["latency"]})
    first = str(_request(store, 1)["id"])
    with pytest.raises(policy.PolicyError, match="needs a reason"):
        policy.reject_request(store, TWO_PERSON, first, reason=" ", actor="bob", role="model-risk")
    with pytest.raises(policy.PromotionRefused, match="needs an approver role"):
        policy.reject_request(store, TWO_PERSON, first, reason="no", actor="dave")
    rejected = policy.reject_request(
        store, TWO_PERSON, first, reason="wait for holiday data", actor="bob", role="model-risk"
    )
    assert (rejected["status"], rejected["decided_by"]) == ("rejected", "bob")
    with pytest.raises(policy.PromotionRefused, match="already rejected"):
        policy.approve_request(store, TWO_PERSON, first, actor="carol", role="model-risk")

    withdrawn = policy.reject_request(
        store, TWO_PERSON, str(_request(store, 1)["id"]), reason="wrong version", actor="Alice"
    )
    assert withdrawn["status"] == "rejected"  # the requester withdraws without a role

    late = str(_request(store, 2)["id"])
    with store.session() as session:
        session.execute(
            update(PromotionRequest)
            .where(PromotionRequest.id == late)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    with store.reader() as session:
        assert policy.list_requests(session, status="expired")[0]["id"] == late
    with pytest.raises(policy.PromotionRefused, match="expired at"):
        policy.approve_request(store, TWO_PERSON, late, actor="bob", role="model-risk")
    assert len(audits(store, "promotion.expire")) == 1
    assert champion(store) is None
    assert _request(store, 2)["status"] == "pending"  # an expired request does not block

    with pytest.raises(policy.GatesFailed, match="gates failed: latency"):
        _request(store, 3)
    override = _request(store, 3, override=True, reason="latency spike was the load test")
    assert override["override"] is True
    change = policy.approve_request(
        store, TWO_PERSON, str(override["id"]), actor="bob", role="model-risk"
    )
    assert champion(store) == 3 and change.override and change.failed_gates == ("latency",)
    promoted = audits(store, "alias.promote")[-1]["detail"]
    assert promoted["override"] is True and promoted["gates"]["failed"] == ["latency"]


def test_request_ids_and_statuses_are_checked(store: Store, artifacts: ArtifactStore) -> None:
    versions(store, artifacts, 1)
    with pytest.raises(policy.PolicyError, match="expected 6 to 32 hex characters"):
        policy.approve_request(store, TWO_PERSON, "nope", actor="bob", role="model-risk")
    with pytest.raises(registry.RegistryError, match="no promotion request 'abcdef'"):
        policy.approve_request(store, TWO_PERSON, "abcdef", actor="bob", role="model-risk")
    request = _request(store, 1)
    with pytest.raises(policy.PolicyError, match="is for model 'fraud-detector', not 'churn'"):
        with store.session() as session:
            registry.ensure_model(session, name="churn", use_case="churn")
        policy.approve_request(
            store, TWO_PERSON, str(request["id"]), actor="bob", role="model-risk",
            model_name="churn",
        )  # fmt: skip
    with store.reader() as session, pytest.raises(policy.PolicyError, match="status 'open'"):
        policy.list_requests(session, status="open")


# --- the stages --------------------------------------------------------------------------------


def test_the_promote_stage_reports_blocks_overrides_and_requests(
    settings: Settings, store: Store, artifacts: ArtifactStore
) -> None:
    versions(store, artifacts, 3, failing={2: ["latency"]})
    first = run_promote(settings, FRAUD, model_version=1, actor="pipeline")
    assert first["promoted"] is True and first["previous"] is None
    blocked = run_promote(settings, FRAUD, model_version=2)
    assert blocked["promoted"] is False and blocked["blocked"] is True
    assert blocked["failed_gates"] == ["latency"] and "gates failed: latency" in blocked["reason"]
    with pytest.raises(policy.PolicyError, match="needs a reason"):
        run_promote(settings, FRAUD, model_version=2, force=True)
    with pytest.raises(policy.PromotionRefused, match="approver role"):
        run_promote(settings, FRAUD, model_version=2, override=True, reason="ok")
    forced = run_promote(
        settings, FRAUD, model_version=2, override=True, reason="ok", role="model-risk"
    )
    assert forced["promoted"] is True and forced["override"] is True and forced["previous"] == 1
    again = run_promote(settings, FRAUD, model_version=2)
    assert again["promoted"] is False and again["reason"] == "already champion"

    two = FRAUD.model_copy(update={"promotion": TWO_PERSON})
    requested = run_promote(settings, two, actor="pipeline")  # the newest: version 3
    assert requested["requested"] is True and requested["promoted"] is False
    assert champion(store) == 2
    approved = policy.approve_request(
        store, TWO_PERSON, requested["request_id"], actor="bob", role="model-risk"
    )
    assert approved.move.to_version == 3

    back = run_rollback(settings, FRAUD, reason="precision fell", actor="ops")
    assert (back["from_version"], back["to_version"], back["rolled_back"]) == (3, 2, True)
    assert champion(store) == 2
    with store.reader() as session:
        runs = session.scalars(select(Run.kind).order_by(Run.started_at)).all()
    assert runs.count("promote") == 6 and runs[-1] == "rollback"
