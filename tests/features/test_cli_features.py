"""`loopline features ...`: bad input prints one line naming the problem, exits 2, writes
nothing; status works on an empty home."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["features", "materialize", "--end", "2999-01-01T00:00:00Z"], "is in the future"),
        (["features", "materialize", "--end", "2026-01-01T00:00:00"], "must include a time zone"),
        (["features", "materialize", "--end", "yesterday"], "not an ISO-8601 time"),
        (["features", "skew", "--sample", "0"], "'--sample'"),
        (["features", "skew", "--service", "fraud_v9"], "'fraud_v9' is not declared"),
        (["features", "build", "--use-case", "nope"], "unknown use case 'nope'"),
        (["features", "build"], "has no version yet: run the ingest stage first"),
        (["features", "rebuild"], "No such command"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, run, args, expected):
    home = tmp_path / "home"
    code, out, err = run(home, *args)
    assert code == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error"), err
    assert expected in lines[0]
    assert not (home / "lake").exists()
    assert not (home / "feast" / "registry.db").exists()


def test_status_on_an_empty_home_lists_the_views_not_yet_built(tmp_path, run):
    code, out, err = run(tmp_path / "home", "features", "status", "--json")
    assert code == 0, err
    assert '"service": "fraud_v2"' in out
    for view in ("customer_activity", "merchant_activity", "customer_stats", "merchant_stats"):
        assert f'"view": "{view}"' in out
    assert '"registered": false' in out
