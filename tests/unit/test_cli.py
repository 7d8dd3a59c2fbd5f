"""The command line: bad input prints one line naming the problem, exits 2, writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent / "loopline"


def _bad_csv(tmp_path: Path) -> str:
    path = tmp_path / "bad.csv"
    path.write_text(
        "transaction_id,event_timestamp,customer_id,merchant_id,amount,merchant_category,"
        "channel,country,hour\ntx-1,2026-01-01T00:00:00Z,1,1,-4,grocery,chip,US,1\n"
    )
    return str(path)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "--use-case", "nope"], "unknown use case 'nope'"),
        (["demo", "--days", "-3"], "'--days'"),
        (["demo", "--customers", "0"], "'--customers'"),
        (["demo", "--days", "ten"], "'--days'"),
        (["ingest", "/no/such/file.csv", "--table", "transactions"], "input file not found"),
        (["ingest", "/no/such/file.csv"], "--table is required"),
        (["ingest", "{bad}", "--table", "transactions"], "'amount' breaks"),
        (["ingest", "{bad}", "--table", "invoices"], "unknown table(s) ['invoices']"),
        (["train"], "has no version yet: run the ingest stage first"),
        (["promote", "--version", "0"], "'--version'"),
        (["logs", "nginx"], "unknown component 'nginx'"),
        (["replay"], "events file not found"),
        (["no-such-command"], "No such command"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    run: Callable[..., tuple[int, str, str]], tmp_path: Path, args: list[str], expected: str
) -> None:
    home = tmp_path / "home"
    args = [a.replace("{bad}", _bad_csv(tmp_path)) for a in args]
    code, out, err = run(home, *args)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error") and expected in lines[0]
    lake = home / "lake"
    assert not lake.exists() or not any(lake.iterdir())


def test_demo_ingest_and_listing(run: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run(home, "demo", "--days", "8", "--customers", "50")[0] == 0
    code, _, err = run(home, "demo", "--days", "8", "--customers", "50")
    assert code == 2 and "already present" in err
    code, _, err = run(home, "ingest")
    assert code == 0, err
    code, out, _ = run(home, "runs", "list", "--json")
    assert '"kind": "ingest"' in out and '"status": "succeeded"' in out


def test_the_installed_entry_point_reports_errors_the_same_way(tmp_path: Path) -> None:
    env = {**os.environ, "LOOPLINE_HOME": str(tmp_path)}
    done = subprocess.run(
        [str(BIN), "train", "-u", "nope"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "error: unknown use case 'nope' (known: fraud)"
