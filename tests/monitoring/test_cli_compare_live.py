"""`loopline models compare-live`: the table, --json, and one-line errors with exit code 2."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from live_log import live_records, write_labels, write_live_log

from loopline.settings import Settings

Run = Callable[..., tuple[int, str, str]]


def test_compare_live_prints_the_figures_and_the_same_as_json(settings: Settings, run: Run) -> None:
    records, labels = live_records(200, role="shadow", seed=3)
    write_live_log(settings, records)
    write_labels(settings, labels)
    code, out, err = run(settings.home, "models", "compare-live", "--bootstrap", "50")
    assert code == 0, err
    assert "fraud-detector: champion vs shadow" in out
    assert "200 paired requests, same decision" in out
    assert "│ average_precision" in out and "KS " in out and "PSI " in out
    assert "[low, high]: 95% interval (paired bootstrap, 50 resamples)" in out
    code, out, err = run(
        settings.home, "models", "compare-live", "fraud-detector", "--since", "7d",
        "--bootstrap", "50", "--json",
    )  # fmt: skip
    assert code == 0, err
    found = json.loads(out)
    assert found["challenger_role"] == "shadow" and found["agreement"]["pairs"] == 200
    assert found["metric"]["resamples"] == 50 and found["since"] is not None
    assert {b["role"] for b in found["histogram"]} == {"champion", "shadow"}


def test_compare_live_on_an_empty_log_says_why(settings: Settings, run: Run) -> None:
    code, out, _ = run(settings.home, "models", "compare-live")
    assert code == 0
    assert "no prediction of fraud-detector is logged in the window" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--role", "blue"], "error: --role 'blue': must be one of auto, shadow, canary"),
        (["--since", "yesterday"], "error: --since 'yesterday': not an ISO time"),
        (["--since", "2026-03-01T00:00:00"], "error: --since '2026-03-01T00:00:00': add a UTC"),
        (["--since", "1h", "--until", "2d"], "error: --since '1h': must be before --until '2d'"),
        (["other-model"], "error: model 'other-model' is not the model of use case 'fraud'"),
    ],
)
def test_compare_live_bad_input_is_one_line_and_exit_2(
    settings: Settings, run: Run, args: list[str], message: str
) -> None:
    code, out, err = run(settings.home, "models", "compare-live", *args)
    assert code == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1
