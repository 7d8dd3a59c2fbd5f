"""Model packages: layout and hash, verification on load, refusals audited, limits, serving."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from registry_helpers import FEATURES, SERVICE, TYPES, model_text, new_run, package, register, rows
from sqlalchemy import select

from loopline.lake.artifacts import ArtifactStore
from loopline.registry import models as registry
from loopline.registry.package import (
    MANIFEST_FILE,
    MEMBERS,
    MODEL_FILE,
    PackageError,
    PackageLimits,
    PackageRefused,
    build_package,
    load_package,
    load_version,
    package_model,
    read_package,
)
from loopline.serving.model_cache import ModelCache
from loopline.store import Store
from loopline.store.tables import Artifact, AuditEvent, ModelVersion


def _version(store: Store, number: int, name: str = "fraud-detector") -> ModelVersion:
    with store.reader() as session:
        return registry.get_version(session, name, number)


def _overwrite(artifacts: ArtifactStore, artifact_id: str, data: bytes) -> None:
    path = artifacts.path(artifact_id)
    os.chmod(path, 0o644)
    path.write_bytes(data)


def _refusals(store: Store) -> list[AuditEvent]:
    with store.reader() as session:
        return list(
            session.scalars(select(AuditEvent).where(AuditEvent.action == "package_refused"))
        )


def _rezip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


# --- the package itself ------------------------------------------------------------------------


def test_package_round_trips_and_its_hash_covers_the_whole_file() -> None:
    data = package_model(
        model_text(),
        feature_names=FEATURES,
        feature_types=TYPES,
        feature_service=SERVICE,
        metadata={"run_id": "r1", "datasets": {"events": "dv1"}},
    )
    again = package_model(
        model_text().encode(),
        feature_names=FEATURES,
        feature_types=TYPES,
        feature_service=SERVICE,
        metadata={"datasets": {"events": "dv1"}, "run_id": "r1"},
    )
    assert data == again  # deterministic: same inputs, same bytes, same hash
    members = _members(data)
    assert list(members) == list(MEMBERS)
    manifest = json.loads(members[MANIFEST_FILE])
    assert (
        manifest["files"][MODEL_FILE]["sha256"] == hashlib.sha256(model_text().encode()).hexdigest()
    )

    read = read_package(data)
    assert read.package_id == f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert read.signature.feature_names == tuple(FEATURES)
    assert read.signature.feature_types == tuple(TYPES)
    assert read.signature.feature_service == SERVICE
    assert (read.signature.objective, read.signature.num_class) == ("binary", 1)
    assert read.signature.num_trees == 12
    assert read.metadata == {"run_id": "r1", "datasets": {"events": "dv1"}}
    x = rows(50, seed=3)
    original = build_package(
        model_text(), feature_names=FEATURES, feature_types=TYPES, feature_service=SERVICE
    )
    np.testing.assert_array_equal(read.booster().predict(x), original.booster().predict(x))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"feature_names": ["a", "b", "c", "d"]}, "differ from the model's"),
        ({"feature_names": FEATURES[:3]}, "3 features"),
        ({"feature_names": [*FEATURES[:3], "amount"]}, "must be unique"),
        ({"feature_types": TYPES[:3]}, "3 types for 4 features"),
        ({"feature_types": ["float64", "float64", "float64", "text"]}, "unknown type"),
        ({"feature_service": " "}, "feature_service"),
        ({"metadata": {"x": object()}}, "metadata: not JSON"),
        ({"model_text": "not a model"}, "not a LightGBM text model"),
        ({"model_text": b"\xff\xfe"}, "not UTF-8"),
    ],
)
def test_building_refuses_bad_input_naming_the_field(change: dict, message: str) -> None:
    kwargs = {
        "model_text": model_text(),
        "feature_names": FEATURES,
        "feature_types": TYPES,
        "feature_service": SERVICE,
        "metadata": {},
    } | change
    text = kwargs.pop("model_text")
    with pytest.raises(PackageError, match=message):
        package_model(text, **kwargs)


def test_metadata_is_made_plain_json() -> None:
    from datetime import UTC, datetime

    built = package(
        when=datetime(2026, 3, 1, 14, tzinfo=UTC),
        scores=np.array([0.5, np.nan]),
        auc=np.float32(0.75),
        loss=float("inf"),
        tags={"b", "a"},
    )
    assert read_package(built.to_bytes()).metadata == {
        "trainer": "tests",
        "when": "2026-03-01T14:00:00+00:00",
        "scores": [0.5, None],
        "auc": 0.75,
        "loss": None,
        "tags": ["a", "b"],
    }


def test_reading_checks_members_against_the_manifest() -> None:
    good = _members(package().to_bytes())
    other_model = model_text("binary", 12, 1).encode()
    cases = {
        "member changed, manifest not": good | {MODEL_FILE: other_model},
        "member missing": {k: v for k, v in good.items() if k != "metadata.json"},
        "extra member": good | {"evil.py": b"import os"},
    }
    for case, members in cases.items():
        with pytest.raises(PackageError) as caught:
            read_package(_rezip(members))
        assert "manifest" in str(caught.value) or "members" in str(caught.value), case
    compressed = io.BytesIO()
    with zipfile.ZipFile(compressed, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in good.items():
            archive.writestr(name, data)
    with pytest.raises(PackageError, match="compressed"):
        read_package(compressed.getvalue())
    with pytest.raises(PackageError, match="not a ZIP"):
        read_package(b"tree\nversion=v4\n")
    # A consistent manifest does not help a swapped model: the signature no longer fits it.
    swapped = good | {MODEL_FILE: model_text("regression").encode()}
    manifest = json.loads(good[MANIFEST_FILE])
    manifest["files"][MODEL_FILE] = {
        "sha256": hashlib.sha256(swapped[MODEL_FILE]).hexdigest(),
        "size": len(swapped[MODEL_FILE]),
    }
    swapped[MANIFEST_FILE] = json.dumps(manifest).encode()
    with pytest.raises(PackageError, match=r"differ from signature\.json"):
        read_package(_rezip(swapped))


def test_limits_bound_trees_size_and_features_before_parsing() -> None:
    data = package(rounds=12).to_bytes()
    with pytest.raises(PackageError, match="12 trees exceed the limit of 5"):
        read_package(data, limits=PackageLimits(max_trees=5))
    with pytest.raises(PackageError, match="exceeds the limit of 1000"):
        read_package(data, limits=PackageLimits(max_package_bytes=1000))
    with pytest.raises(PackageError, match="4 features exceed the limit of 3"):
        read_package(data, limits=PackageLimits(max_features=3))
    # The header must agree with the trees that follow (a lying header is refused).
    text = model_text()
    lying = text.replace("tree_sizes=", "tree_sizes=1 ", 1)
    with pytest.raises(PackageError, match="declares 13 trees but 12 follow"):
        build_package(lying, feature_names=FEATURES, feature_types=TYPES, feature_service=SERVICE)


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPLINE_MODEL_MAX_TREES", "7")
    assert PackageLimits.from_env().max_trees == 7
    with pytest.raises(PackageError, match="trees exceed the limit of 7"):
        package()
    monkeypatch.setenv("LOOPLINE_MODEL_MAX_TREES", "lots")
    with pytest.raises(PackageError, match="LOOPLINE_MODEL_MAX_TREES='lots'"):
        PackageLimits.from_env()


# --- registered packages -----------------------------------------------------------------------


def test_registered_version_loads_through_its_verified_package(
    store: Store, artifacts: ArtifactStore
) -> None:
    number = register(store, artifacts)
    version = _version(store, number)
    assert version.package_id is not None
    with store.reader() as session:
        assert session.get_one(Artifact, version.package_id).media_type.endswith("+zip")
    verified = load_version(store, artifacts, version)
    assert verified.source_id == version.package_id
    assert verified.package is not None and verified.package.signature.feature_service == SERVICE
    x = rows(20, seed=5)
    np.testing.assert_array_equal(verified.booster.predict(x), package().booster().predict(x))
    assert _refusals(store) == []


@pytest.mark.parametrize("tamper", ["flip a byte", "swap in another valid package"])
def test_tampered_package_is_refused_with_an_audit_event(
    store: Store, artifacts: ArtifactStore, tamper: str
) -> None:
    number = register(store, artifacts)
    version = _version(store, number)
    assert version.package_id is not None
    original = artifacts.path(version.package_id).read_bytes()
    if tamper == "flip a byte":
        at = original.index(b"leaf_value=") + len(b"leaf_value=")
        forged = (
            original[:at] + (b"9" if original[at : at + 1] != b"9" else b"8") + original[at + 1 :]
        )
    else:
        forged = package(seed=1).to_bytes()
    _overwrite(artifacts, version.package_id, forged)

    with pytest.raises(PackageRefused, match="hash mismatch") as caught:
        load_version(store, artifacts, version, actor="serving")
    actual = f"sha256:{hashlib.sha256(forged).hexdigest()}"
    assert (caught.value.expected, caught.value.actual) == (version.package_id, actual)
    [event] = _refusals(store)
    assert (event.actor, event.subject_type, event.subject_id) == (
        "serving",
        "model_version",
        f"fraud-detector/{number}",
    )
    assert event.detail["expected"] == version.package_id
    assert event.detail["actual"] == actual
    with pytest.raises(PackageRefused):
        load_package(store, artifacts, version.package_id)
    assert len(_refusals(store)) == 2


def test_oversized_package_is_refused_before_it_is_read(
    store: Store, artifacts: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = _version(store, register(store, artifacts))
    monkeypatch.setenv("LOOPLINE_MODEL_MAX_BYTES", "2048")
    with pytest.raises(PackageRefused, match="exceeds the limit of 2048 bytes"):
        load_version(store, artifacts, version)
    [event] = _refusals(store)
    assert event.detail["expected"] == 2048 and event.detail["actual"] > 2048


def test_package_not_matching_the_registry_record_is_refused(
    store: Store, artifacts: ArtifactStore
) -> None:
    """A valid package registered with other inputs or another model file is not loaded."""
    run_id = new_run(store)
    pkg = package()
    with store.session() as session:
        from loopline.registry.package import write_package

        package_id = write_package(session, artifacts, pkg)
        other_model = artifacts.put_bytes(model_text("binary", 12, 2).encode())
        session.add(Artifact(id=other_model, size_bytes=1, media_type="text/plain"))
        common = {
            "use_case": "fraud",
            "run_id": run_id,
            "metrics": {},
            "datasets": {},
            "package_id": package_id,
        }
        registry.register_version(
            session, model_name="m", artifact_id=package_id, feature_service=SERVICE,
            feature_names=list(reversed(FEATURES)), **common,
        )  # fmt: skip
        registry.register_version(
            session, model_name="m", artifact_id=package_id, feature_service="fraud_v2",
            feature_names=FEATURES, **common,
        )  # fmt: skip
        registry.register_version(
            session, model_name="m", artifact_id=other_model, feature_service=SERVICE,
            feature_names=FEATURES, **common,
        )  # fmt: skip
    for number, message in [
        (1, "inputs differ"),
        (2, "feature service differs"),
        (3, "not the version's model artifact"),
    ]:
        with pytest.raises(PackageRefused, match=message):
            load_version(store, artifacts, _version(store, number, "m"))
    assert len(_refusals(store)) == 3


def test_version_without_a_package_loads_its_model_file_under_the_same_checks(
    store: Store, artifacts: ArtifactStore
) -> None:
    run_id = new_run(store)
    text = model_text().encode()
    model_id = artifacts.put_bytes(text)
    with store.session() as session:
        session.add(Artifact(id=model_id, size_bytes=len(text), media_type="text/plain"))
        registry.register_version(
            session, model_name="m", use_case="fraud", run_id=run_id, artifact_id=model_id,
            feature_service=SERVICE, feature_names=FEATURES, metrics={}, datasets={},
        )  # fmt: skip
    version = _version(store, 1, "m")
    assert load_version(store, artifacts, version).package is None
    with pytest.raises(PackageRefused, match="trees exceed"):
        load_version(store, artifacts, version, limits=PackageLimits(max_trees=3))
    _overwrite(artifacts, model_id, text.replace(b"leaf_value=", b"leaf_value=1", 1))
    with pytest.raises(PackageRefused, match="hash mismatch"):
        load_version(store, artifacts, version)
    assert len(_refusals(store)) == 2


def test_serving_loads_the_champion_through_the_verified_path(
    store: Store, artifacts: ArtifactStore
) -> None:
    first = register(store, artifacts, seed=0)
    second = register(store, artifacts, seed=1)
    with store.session() as session:
        registry.set_alias(
            session, model_name="fraud-detector", alias="champion", version=first,
            expected_revision=None, actor="t",
        )  # fmt: skip
    cache = ModelCache(store, artifacts, "fraud-detector")
    loaded = cache.refresh()
    assert loaded is not None and loaded.version == first
    assert loaded.package_id == _version(store, first).package_id
    # The next champion's package was tampered with: serving keeps the old model.
    package_id = _version(store, second).package_id
    assert package_id is not None
    _overwrite(artifacts, package_id, package(seed=2).to_bytes())
    with store.session() as session:
        registry.set_alias(
            session, model_name="fraud-detector", alias="champion", version=second,
            expected_revision=1, actor="t",
        )  # fmt: skip
    assert cache.refresh() is loaded
    assert cache.last_error is not None and "PackageRefused" in cache.last_error
    [event] = _refusals(store)
    assert event.actor == "serving" and event.subject_id == f"fraud-detector/{second}"


def test_write_package_refuses_bytes_that_are_not_a_package(
    store: Store, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    from loopline.registry.package import write_package

    with pytest.raises(PackageError, match="not a ZIP"), store.session() as session:
        write_package(session, artifacts, b"hello")
    with store.reader() as session:
        assert session.scalars(select(Artifact)).all() == []
