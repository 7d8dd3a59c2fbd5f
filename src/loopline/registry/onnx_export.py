"""ONNX export of a registered model version (onnxmltools' LightGBM converter).

The version is loaded through the verified package path, converted with one float32 input
named `input` (features in signature order), and checked before it is written: onnxruntime
and LightGBM score rows drawn from the model's own feature ranges (with missing values) and
must agree within a tolerance. The file is written atomically; the ONNX model's metadata
names the model, version, package hash and inputs.

Outputs: binary classifiers give `label` and `probabilities` (n x 2: column 1 is LightGBM's
score), multiclass ones `label` and `probabilities` (n x classes), regressions `variable`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from loopline.lake.artifacts import ArtifactStore
from loopline.registry.models import resolve_ref
from loopline.registry.names import RegistryError
from loopline.registry.package import load_version
from loopline.store import Store

INPUT_NAME = "input"
CHECK_ROWS = 256
ATOL = 1e-5
RTOL = 1e-5
_CLASSIFIERS = ("binary", "multiclass", "multiclassova")


class ExportError(RegistryError):
    """The model cannot be exported (unsupported objective, parity check failed, bad path)."""


@dataclass(frozen=True)
class OnnxExport:
    """What an export wrote and how well the ONNX model matched LightGBM."""

    path: str
    model_name: str
    version: int
    source_id: str
    objective: str
    outputs: list[str]
    size_bytes: int
    checked_rows: int
    max_abs_diff: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def _objective(booster: lgb.Booster) -> str:
    return str(booster.dump_model(num_iteration=1).get("objective", "")).split()[0]


def booster_to_onnx(booster: lgb.Booster, *, metadata: dict[str, str] | None = None) -> Any:
    """An ONNX model of a booster: one float32 input `input` of shape (n, features).

    Raises:
        ExportError: the converter does not support the model (e.g. its objective).
    """
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    n = booster.num_feature()
    try:
        model = convert_lightgbm(
            booster, initial_types=[(INPUT_NAME, FloatTensorType([None, n]))], zipmap=False
        )
    except Exception as exc:  # the converter raises bare NotImplementedError, RuntimeError...
        raise ExportError(
            f"cannot convert a LightGBM '{_objective(booster)}' model to ONNX: {exc}"
        ) from exc
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


def onnx_scores(model_bytes: bytes, rows: np.ndarray) -> np.ndarray:
    """What LightGBM's `predict` returns, computed by onnxruntime from an exported model.

    Binary: the positive-class probability (n,); multiclass: probabilities (n, classes);
    regression: values (n,).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # the converter declares label's shape as [1]: noise
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    outputs = session.run(None, {INPUT_NAME: np.asarray(rows, dtype=np.float32)})
    if len(outputs) == 2:
        probabilities = np.asarray(outputs[1])
        return probabilities[:, 1] if probabilities.shape[1] == 2 else probabilities
    return np.asarray(outputs[0]).ravel()


def sample_rows(booster: lgb.Booster, n: int = CHECK_ROWS, *, seed: int = 0) -> np.ndarray:
    """Rows in the model's feature ranges (from its header), 10% missing, as float32."""
    info = booster.dump_model(num_iteration=1).get("feature_infos", {})
    names = booster.feature_name()
    rng = np.random.default_rng(seed)
    columns = []
    for name in names:
        entry = info.get(name, {})
        values = entry.get("values") or []
        low, high = entry.get("min_value"), entry.get("max_value")
        if values:  # a categorical feature: its seen categories
            column = rng.choice(np.asarray(values, dtype=np.float64), size=n)
        elif low is None or high is None or not np.isfinite([low, high]).all():
            column = rng.normal(size=n)
        else:
            span = max(float(high) - float(low), 1e-6)
            column = rng.uniform(float(low) - 0.1 * span, float(high) + 0.1 * span, size=n)
        column[rng.random(n) < 0.1] = np.nan
        columns.append(column)
    return np.column_stack(columns).astype(np.float32)


def check_parity(booster: lgb.Booster, model_bytes: bytes, rows: np.ndarray) -> tuple[float, bool]:
    """(max absolute difference, within tolerance) of ONNX against LightGBM on `rows`."""
    rows32 = np.asarray(rows, dtype=np.float32)
    expected = np.asarray(booster.predict(rows32.astype(np.float64), num_threads=1))
    actual = onnx_scores(model_bytes, rows32)
    if actual.shape != expected.shape:
        return float("inf"), False
    diff = np.abs(actual.astype(np.float64) - expected)
    ok = bool(np.all(diff <= ATOL + RTOL * np.abs(expected)))
    return float(diff.max(initial=0.0)), ok


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_onnx(
    store: Store,
    artifacts: ArtifactStore,
    ref: str,
    out: Path,
    *,
    overwrite: bool = False,
    actor: str = "loopline",
) -> OnnxExport:
    """Export the version `ref` (`NAME@ALIAS`, `NAME@VERSION`) to an ONNX file at `out`.

    Raises:
        RegistryError: unknown model, version or alias.
        PackageRefused: the version's package failed verification.
        ExportError: the output path is unusable, the objective is unsupported, or the ONNX
            model's scores differ from LightGBM's.
    """
    out = Path(out)
    if out.exists() and (out.is_dir() or not overwrite):
        raise ExportError(f"--out {out}: already exists (use --force to replace a file)")
    if not out.parent.is_dir():
        raise ExportError(f"--out {out}: folder {out.parent} does not exist")
    with store.reader() as session:
        version = resolve_ref(session, ref)
    verified = load_version(store, artifacts, version, actor=actor)
    booster = verified.booster
    metadata = {
        "loopline.model": version.model_name,
        "loopline.version": str(version.version),
        "loopline.source_id": verified.source_id,
        "loopline.feature_service": version.feature_service,
        "loopline.inputs": json.dumps(booster.feature_name()),
    }
    model = booster_to_onnx(booster, metadata=metadata)
    data = model.SerializeToString()
    rows = sample_rows(booster)
    max_diff, ok = check_parity(booster, data, rows)
    if not ok:
        raise ExportError(
            f"the ONNX model's scores differ from LightGBM's by up to {max_diff:.3g} "
            f"(tolerance {ATOL} + {RTOL} x |score|); nothing written"
        )
    _write_atomically(out, data)
    return OnnxExport(
        path=str(out),
        model_name=version.model_name,
        version=version.version,
        source_id=verified.source_id,
        objective=_objective(booster),
        outputs=[o.name for o in model.graph.output],
        size_bytes=len(data),
        checked_rows=len(rows),
        max_abs_diff=max_diff,
    )
