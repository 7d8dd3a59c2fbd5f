"""Use-case specs: the shipped ones load; broken ones name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from loopline.spec import SpecError, available_use_cases, load_spec


def test_fraud_spec_loads() -> None:
    spec = load_spec("fraud")
    assert spec.entity_keys == ["customer_id", "merchant_id"]
    assert spec.labels.delay_days == 14
    assert "fraud" in available_use_cases()


def _broken(tmp_path: Path, edit: dict) -> Path:
    raw = yaml.safe_load(load_spec.__globals__["USECASES_DIR"].joinpath("fraud.yaml").read_text())
    for dotted, value in edit.items():
        *parents, leaf = dotted.split(".")
        node = raw
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[leaf] = value
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"task": "clustering"}, "field 'task'"),
        ({"primary_metric": "f1"}, "primary_metric 'f1' is not in 'metrics'"),
        ({"labels.delay_days": -1}, "field 'labels.delay_days'"),
        ({"features.request": ["amount", "nope"]}, "request feature 'nope'"),
        ({"name": "Bad Name"}, "field 'name'"),
        ({"events.columns.amount": {"type": "float", "min": 5, "max": 1}}, "min (5.0) is greater"),
        ({"surprise": 1}, "field 'surprise'"),
    ],
)
def test_broken_spec_names_the_field(tmp_path: Path, edit: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_spec(_broken(tmp_path, edit))


@pytest.mark.parametrize("name", ["nope", "../fraud", "/etc/passwd"])
def test_unknown_use_case_is_refused(name: str) -> None:
    with pytest.raises(SpecError):
        load_spec(name)
