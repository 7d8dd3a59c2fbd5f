"""`loopline models export NAME@ALIAS --format onnx`: onnxruntime scores equal LightGBM's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from registry_helpers import FEATURES, SERVICE, model_text, new_run, register, rows

from loopline.lake.artifacts import ArtifactStore
from loopline.registry import models as registry
from loopline.registry.package import build_package, register_package
from loopline.settings import Settings
from loopline.store import Store

Run = Callable[..., tuple[int, str, str]]


def _scores(path: Path, x: np.ndarray) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    return session.run(None, {"input": x.astype(np.float32)})


@pytest.mark.parametrize("objective", ["binary", "regression", "multiclass"])
def test_exported_onnx_matches_lightgbm(
    run: Run, settings: Settings, store: Store, artifacts: ArtifactStore, tmp_path: Path,
    objective: str,
) -> None:  # fmt: skip
    number = register(store, artifacts, objective=objective)
    with store.session() as session:
        registry.set_alias(
            session, model_name="fraud-detector", alias="champion", version=number,
            expected_revision=None, actor="t",
        )  # fmt: skip
    out = tmp_path / "model.onnx"
    code, stdout, stderr = run(
        settings.home, "models", "export", "fraud-detector@champion", "--format", "onnx",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    assert "matches LightGBM" in stdout

    x = rows(300, seed=11, missing=0.05).astype(np.float32)
    booster = build_package(
        model_text(objective), feature_names=FEATURES, feature_types=["float64"] * 4,
        feature_service=SERVICE,
    ).booster()  # fmt: skip
    expected = booster.predict(x.astype(np.float64))
    outputs = _scores(out, x)
    if objective == "binary":
        label, probabilities = outputs
        assert probabilities.shape == (300, 2)
        got = probabilities[:, 1]
        np.testing.assert_array_equal(label, (expected > 0.5).astype(np.int64))
    elif objective == "multiclass":
        label, got = outputs
        assert got.shape == (300, 3)
        np.testing.assert_array_equal(label, expected.argmax(axis=1))
    else:
        got = outputs[0].ravel()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["loopline.model"] == "fraud-detector" and meta["loopline.version"] == str(number)
    assert meta["loopline.source_id"].startswith("sha256:")


def test_export_refusals_are_one_line_and_write_nothing(
    run: Run, settings: Settings, store: Store, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    register(store, artifacts)
    # A model whose objective the converter does not support.
    import lightgbm as lgb

    x = rows(300)
    booster = lgb.train(
        {"objective": "cross_entropy", "verbosity": -1, "num_threads": 1},
        lgb.Dataset(x, (x[:, 0] > 100).astype(float), feature_name=FEATURES),
        num_boost_round=3,
    )
    with store.session() as session:
        register_package(
            session, artifacts,
            build_package(
                booster.model_to_string(), feature_names=FEATURES,
                feature_types=["float64"] * 4, feature_service=SERVICE,
            ),
            model_name="fraud-detector", use_case="fraud", run_id=new_run(store), metrics={},
        )  # fmt: skip
    existing = tmp_path / "taken.onnx"
    existing.write_bytes(b"keep")
    out = tmp_path / "m.onnx"
    cases = [
        (["fraud-detector@2"], "cannot convert a LightGBM 'cross_entropy' model"),
        (["fraud-detector@champion"], "alias 'champion' of 'fraud-detector' is not set"),
        (["fraud-detector"], "expected NAME@VERSION or NAME@ALIAS"),
        (["fraud-detector@1", "--format", "pmml"], "--format 'pmml': unsupported"),
        (["fraud-detector@1", "--out", str(existing)], "already exists"),
        (["fraud-detector@1", "--out", str(tmp_path / "no" / "m.onnx")], "does not exist"),
    ]
    for args, message in cases:
        if "--out" not in args:
            args = [*args, "--out", str(out)]
        code, _, stderr = run(settings.home, "models", "export", *args)
        assert code == 2, (args, stderr)
        assert message in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not out.exists() and existing.read_bytes() == b"keep"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    code, _, stderr = run(
        settings.home, "models", "export", "fraud-detector@1", "--out", str(existing), "--force"
    )
    assert code == 0, stderr
    assert existing.read_bytes() != b"keep"
