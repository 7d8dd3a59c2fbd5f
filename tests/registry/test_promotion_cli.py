"""`loopline models promote|request|approve|reject|requests|rollback` and `loopline promote`:
the policy from the command line, with exit code 2 and one line for bad input or a refusal."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from policy_helpers import MODEL, audits, champion, versions

from loopline.lake.artifacts import ArtifactStore
from loopline.registry import models as registry
from loopline.settings import Settings
from loopline.spec import USECASES_DIR
from loopline.store import Store

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture(autouse=True)
def _no_prefect_api() -> Iterator[None]:
    """No Prefect API, whatever the environment says: no event is sent from this process."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: None}):
        yield


@pytest.fixture
def three(store: Store, artifacts: ArtifactStore) -> Store:
    """Versions 1-3; version 2's latency gate failed, version 3 has no gate results."""
    versions(store, artifacts, 3, failing={2: ["latency"]}, ungated=(3,))
    return store


@pytest.fixture
def two_person_spec(tmp_path: Path) -> str:
    """The fraud spec with the two-person rule on, as a file."""
    raw = yaml.safe_load((USECASES_DIR / "fraud.yaml").read_text())
    raw["promotion"] = {"approver_roles": ["model-risk"], "two_person_rule": True}
    path = tmp_path / "fraud-4eyes.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _error(code: int, err: str, expected: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error") and expected in lines[0], err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["fraud-detector@2"], "gates failed: latency"),
        (["fraud-detector@3"], "no gate results recorded"),
        (["fraud-detector@2", "--override"], "needs a reason"),
        (["fraud-detector@2", "--override", "--reason", "x"], "needs an approver role"),
        (
            ["fraud-detector@2", "--override", "--reason", "x", "--role", "intern"],
            "role 'intern' is not an approver role (model-risk)",
        ),
        (["fraud-detector@2", "--role", "bad role"], "role 'bad role'"),
        (["fraud-detector@9"], "has no version 9"),
        (["fraud-detector"], "expected NAME@VERSION or NAME@ALIAS"),
        (["fraud-detector@champion"], "alias 'champion' of 'fraud-detector' is not set"),
        (["fraud-detector@1", "--alias", "Top Model"], "alias 'Top Model'"),
        (["fraud-detector@1", "--expect-version", "4"], "is unset, expected version 4"),
        (["fraud-detector@1", "--expect-version", "-1"], "'--expect-version'"),
        (["fraud-detector@1", "--use-case", "nope"], "unknown use case 'nope'"),
    ],
)
def test_bad_promotions_exit_2_with_one_line_and_move_nothing(
    run: Run, settings: Settings, three: Store, args: list[str], expected: str
) -> None:
    code, _, err = run(settings.home, "models", "promote", *args)
    _error(code, err, expected)
    assert champion(three) is None
    assert audits(three, "alias.promote") == []


def test_promote_with_passing_gates_or_an_approved_override(
    run: Run, settings: Settings, three: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run(settings.home, "models", "promote", "fraud-detector@1", "--actor", "al")
    assert code == 0, err
    assert "champion of fraud-detector: version - -> 1 (revision 1)" in out
    monkeypatch.setenv("LOOPLINE_ACTOR", "carol")
    monkeypatch.setenv("LOOPLINE_ROLE", "Model-Risk")
    code, out, err = run(
        settings.home, "models", "promote", "fraud-detector@2", "--override",
        "--reason", "latency spike was the load test", "--expect-version", "1", "--json",
    )  # fmt: skip
    assert code == 0, err
    change = json.loads(out)
    assert (change["from"], change["to"], change["override"]) == (1, 2, True)
    assert (change["actor"], change["role"], change["failed_gates"]) == (
        "carol",
        "model-risk",
        ["latency"],
    )
    assert change["event_sent"] is False  # no Prefect API configured here
    promoted = audits(three, "alias.promote")
    assert [p["actor"] for p in promoted] == ["al", "carol"]
    assert promoted[1]["detail"]["override"] is True
    # Another use case's policy cannot move this model.
    with three.session() as session:
        registry.ensure_model(session, name="churn", use_case="churn")
    delivery = Path(__file__).parents[1] / "usecases" / "delivery" / "delivery.yaml"
    code, _, err = run(
        settings.home, "models", "promote", "fraud-detector@1", "--use-case", str(delivery)
    )
    _error(code, err, "is not the model of use case 'delivery'")


def test_rollback_with_an_expectation(run: Run, settings: Settings, three: Store) -> None:
    for ref in ("fraud-detector@1",):
        assert run(settings.home, "models", "promote", ref)[0] == 0
    code, out, err = run(
        settings.home, "models", "promote", "fraud-detector@2", "--override", "--reason", "r",
        "--role", "model-risk",
    )  # fmt: skip
    assert code == 0, err
    code, _, err = run(settings.home, "models", "rollback", "--expect-version", "1")
    _error(code, err, "is version 2, expected version 1")
    code, out, err = run(
        settings.home, "models", "rollback", "--expect-version", "2", "--reason", "alerts",
        "--actor", "ops", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert {k: json.loads(out)[k] for k in ("from", "to", "actor", "reason")} == {
        "from": 2,
        "to": 1,
        "actor": "ops",
        "reason": "alerts",
    }
    assert champion(three) == 1


def test_two_person_rule_from_the_command_line(
    run: Run, settings: Settings, three: Store, two_person_spec: str
) -> None:
    policy_of = ["--use-case", two_person_spec]
    code, _, err = run(settings.home, "models", "promote", "fraud-detector@1", *policy_of)
    _error(code, err, "two-person rule is on for 'champion'")
    code, _, err = run(settings.home, "models", "request", "fraud-detector@1", *policy_of)
    _error(code, err, "a promotion request needs a reason")
    code, out, err = run(
        settings.home, "models", "request", "fraud-detector@1", "--reason", "good", "--actor",
        "alice", "--json", *policy_of,
    )  # fmt: skip
    assert code == 0, err
    request = json.loads(out)
    assert (request["status"], request["version"], request["requested_by"]) == (
        "pending",
        1,
        "alice",
    )
    short = request["id"][:8]
    code, _, err = run(
        settings.home, "models", "approve", short, "--actor", "Alice", "--role", "model-risk",
        *policy_of,
    )  # fmt: skip
    _error(code, err, "cannot approve it too")
    code, _, err = run(settings.home, "models", "approve", "zz", "--actor", "bob", *policy_of)
    _error(code, err, "expected 6 to 32 hex characters")
    code, out, err = run(
        settings.home, "models", "approve", short, "--actor", "bob", "--role", "model-risk",
        "--note", "checked", *policy_of,
    )  # fmt: skip
    assert code == 0, err
    assert f"approved {request['id']}: champion of fraud-detector version - -> 1" in out
    assert champion(three) == 1

    code, out, err = run(settings.home, "models", "requests", MODEL, "--json")
    assert code == 0, err
    [listed] = json.loads(out)["requests"]
    assert (listed["status"], listed["decided_by"], listed["decision_note"]) == (
        "approved",
        "bob",
        "checked",
    )
    code, _, err = run(settings.home, "models", "requests", "--status", "open")
    _error(code, err, "status 'open'")
    code, out, err = run(
        settings.home, "models", "request", "fraud-detector@2", "--reason", "spike", "--override",
        "--actor", "alice", "--json", *policy_of,
    )  # fmt: skip
    assert code == 0, err
    second = json.loads(out)["id"]
    code, _, err = run(settings.home, "models", "reject", second, "--actor", "bob", *policy_of)
    _error(code, err, "rejecting a promotion request needs a reason")
    code, out, err = run(
        settings.home, "models", "reject", second, "--reason", "not now", "--actor", "bob",
        "--role", "model-risk", *policy_of,
    )  # fmt: skip
    assert code == 0 and f"rejected request {second}: not now" in out, err
    code, out, _ = run(settings.home, "models", "requests")
    assert "rejected" in out and "approved" in out and second[:8] in out


def test_loopline_promote_delegates_to_the_policy(
    run: Run, settings: Settings, three: Store
) -> None:
    code, out, err = run(settings.home, "promote", "--version", "2")
    assert code == 1, err  # blocked by gates: the summary says why
    summary = json.loads(out)
    assert summary["blocked"] is True and summary["failed_gates"] == ["latency"]
    code, _, err = run(settings.home, "promote", "--version", "2", "--force")
    _error(code, err, "needs a reason")
    code, out, err = run(
        settings.home, "promote", "--version", "2", "--override", "--reason", "r", "--role",
        "model-risk", "--actor", "carol",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["promoted"], summary["override"], summary["previous"]) == (True, True, None)
    code, out, err = run(settings.home, "promote", "--version", "1", "--expect-version", "1")
    _error(code, err, "is version 2, expected version 1")
    assert champion(three) == 2
