"""`loopline runs`: list, show, compare, reap, note, tag; bad input is one line and exit 2."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from tracking_fixtures import populate

from loopline.cli import main
from loopline.settings import Settings
from loopline.store import Store
from loopline.store.tables import Run

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def ids(home: Path) -> dict[str, str]:
    store = Store.open(Settings(home=home))
    try:
        return populate(store)
    finally:
        store.dispose()


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], home: Path) -> Cli:
    """Call the CLI's entry point in-process: (exit code, stdout, stderr)."""
    monkeypatch.setenv("LOOPLINE_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "200")

    def call(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["loopline", *args])
        with pytest.raises(SystemExit) as exited:
            main()
        out = capsys.readouterr()
        return int(exited.value.code or 0), out.out, out.err

    return call


def test_list_filters_sorts_and_pages(cli: Cli, ids: dict[str, str]) -> None:
    code, out, err = cli(
        "runs", "list", "--filter", "metrics.roc_auc > 0", "-o", "metrics.roc_auc desc",
        "--limit", "2", "--json", "--count",
    )  # fmt: skip
    assert code == 0, err
    body = json.loads(out)
    assert [r["name"] for r in body["runs"]] == ["r1", "r4"]
    assert body["total"] == 4 and body["next_page_token"]
    code, out, _ = cli(
        "runs", "list", "-f", "metrics.roc_auc > 0", "-o", "metrics.roc_auc desc",
        "--limit", "2", "--json", "--page-token", body["next_page_token"],
    )  # fmt: skip
    assert [r["name"] for r in json.loads(out)["runs"]] == ["r8", "r3"]
    code, out, _ = cli("runs", "list", "--kind", "train", "-f", "status = 'succeeded'")
    assert code == 0 and ids["r1"][:8] in out and ids["r8"][:8] in out and ids["r2"][:8] not in out


def test_show_compare_note_tag(cli: Cli, ids: dict[str, str]) -> None:
    code, out, err = cli("runs", "show", ids["r1"][:8])
    assert code == 0, err
    assert "train run r1" in out and "valid_auc" in out and "num_leaves" in out
    code, out, _ = cli("runs", "show", ids["r5"], "--json")
    assert json.loads(out)["lineage"]["children_count"] == 2
    code, out, err = cli("runs", "compare", ids["r1"], ids["r3"], ids["r8"])
    assert code == 0, err
    assert "params that differ" in out and "objective" in out and "roc_auc" in out
    code, out, _ = cli("runs", "compare", ids["r1"], ids["r3"], "--json")
    body = json.loads(out)
    assert {p["key"] for p in body["params"] if p["differs"]} == {
        "objective", "learning_rate", "training.early_stopping",
    }  # fmt: skip
    assert {c["key"] for c in body["curves"]} == {"valid_auc"}
    assert cli("runs", "note", ids["r2"][:8], "bad seed")[0] == 0
    assert cli("runs", "tag", ids["r2"][:8], "reviewed=yes", "owner=ana")[0] == 0
    code, out, _ = cli(
        "runs", "list", "-f", "tags.reviewed = 'yes' and notes = 'bad seed'", "--json"
    )
    assert [r["name"] for r in json.loads(out)["runs"]] == ["r2"]


def test_reap_marks_a_silent_run_crashed(cli: Cli, ids: dict[str, str], home: Path) -> None:
    code, out, _ = cli("runs", "reap", "--json")
    reaped = json.loads(out)["reaped"]
    assert code == 0 and [r["run_id"] for r in reaped] == [ids["r7"]]  # r7 is old and silent
    assert "no heartbeat" in reaped[0]["reason"]
    assert cli("runs", "reap")[1].strip() == "no crashed runs"
    store = Store.open(Settings(home=home))
    with store.reader() as session:
        assert session.get_one(Run, ids["r7"]).status == "crashed"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["runs", "list", "-f", "metrics.x > 0; DROP TABLE runs"],
            "invalid run query at position 14 near ';': unexpected character ';'",
        ),
        (["runs", "list", "-f", "params.a = '' or 1=1 --"], "at position 18 near '1'"),
        (["runs", "list", "-f", "colour = 'red'"], "unknown field 'colour'"),
        (["runs", "list", "--kind", "train", "-f", "status = 'done'"], "unknown status 'done'"),
        (["runs", "list", "-o", "colour"], "unknown field 'colour'"),
        (["runs", "list", "--page-token", "nope"], "page token is not one this API issued"),
        (["runs", "list", "--limit", "0"], "'--limit'"),
        (["runs", "show", "deadbeef"], "no run 'deadbeef'"),
        (["runs", "show", "x'; drop"], "run ids are 32 hex characters"),
        (["runs", "compare", "{r1}"], "compare needs 2 to 50 distinct runs, got 1"),
        (["runs", "compare", "{r1}", "0000000000"], "no run '0000000000'"),
        (["runs", "note", "deadbeef", "x"], "no run 'deadbeef'"),
        (["runs", "tag", "{r1}", "novalue"], "is not KEY=VALUE"),
        (["runs", "reap", "--stale-after", "0"], "'--stale-after'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    cli: Cli, ids: dict[str, str], home: Path, args: list[str], expected: str
) -> None:
    args = [a.replace("{r1}", ids["r1"]) for a in args]
    code, out, err = cli(*args)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error") and expected in lines[0], lines[0]
    store = Store.open(Settings(home=home))
    with store.reader() as session:
        assert session.get_one(Run, ids["r7"]).status == "running"  # no reaping either
