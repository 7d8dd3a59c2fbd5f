"""Model packages: a LightGBM text model with its signature and metadata, verified on load.

A package is a ZIP archive whose members are stored uncompressed, in this order, with fixed
timestamps, so the same inputs always give the same bytes:

    MANIFEST.json   format name and version, and the sha256 and size of every other member
    model.txt       the LightGBM model in its text format (never pickle)
    signature.json  inputs in order (name, type), feature service, objective, classes, trees
    metadata.json   lineage and whatever else the trainer records (JSON)

**The package hash** is the sha256 of the whole package file, byte for byte. It covers the
manifest and every member (each member also once more through its digest in the manifest), and
it is the package's artifact id `sha256:<hex>`, which the registry records on the version
(`model_versions.package_id`). Loading a registered package (`load_package`, `load_version`):

1. reads at most `max_package_bytes` (a larger file is refused before it is read whole);
2. re-hashes the bytes and refuses any difference from the recorded id;
3. checks every member against the manifest, then the model's header (tree count, feature
   names) against the limits and the signature, before LightGBM parses anything;
4. checks the signature against the registry (inputs, feature service, model artifact).

A refusal raises `PackageRefused` and writes an audit event `package_refused` (in its own
transaction, so it survives the caller's rollback) with the expected and actual values.
Versions registered before packages existed load their bare model artifact under the same
size, hash and tree checks.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from loopline.lake.artifacts import ARTIFACT_ID, ArtifactError, ArtifactStore
from loopline.registry.models import audit, register_version
from loopline.registry.names import RegistryError
from loopline.store import Store
from loopline.store.tables import ModelVersion

if TYPE_CHECKING:
    import lightgbm as lgb

log = logging.getLogger(__name__)

PACKAGE_FORMAT = "loopline-model-package"
PACKAGE_FORMAT_VERSION = 1
PACKAGE_MEDIA_TYPE = "application/vnd.loopline.model-package+zip"
MODEL_MEDIA_TYPE = "text/x-lightgbm-model"
MANIFEST_FILE = "MANIFEST.json"
MODEL_FILE = "model.txt"
SIGNATURE_FILE = "signature.json"
METADATA_FILE = "metadata.json"
MEMBERS = (MANIFEST_FILE, MODEL_FILE, SIGNATURE_FILE, METADATA_FILE)
FEATURE_TYPES = frozenset({"float64", "float32", "int64", "int32", "bool", "categorical"})
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)

# Default bounds; `PackageLimits.from_env` reads overrides (LOOPLINE_MODEL_MAX_BYTES, ...).
MAX_PACKAGE_BYTES = 256 * 1024 * 1024
MAX_TREES = 50_000
MAX_FEATURES = 10_000
MAX_METADATA_BYTES = 4 * 1024 * 1024


class PackageError(RegistryError):
    """A model package is malformed, too large, inconsistent or does not match its record.

    Attributes:
        expected: what the check wanted (a hash, a limit, a list of names), when it applies.
        actual: what it found.
    """

    def __init__(self, message: str, *, expected: Any = None, actual: Any = None) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class PackageRefused(PackageError):
    """A registered package failed verification on load (recorded as `package_refused`)."""


@dataclass(frozen=True)
class PackageLimits:
    """Bounds a package must stay within, checked before the model is parsed."""

    max_package_bytes: int = MAX_PACKAGE_BYTES
    max_trees: int = MAX_TREES
    max_features: int = MAX_FEATURES
    max_metadata_bytes: int = MAX_METADATA_BYTES

    @classmethod
    def from_env(cls) -> PackageLimits:
        """Defaults, overridden by LOOPLINE_MODEL_MAX_BYTES / _MAX_TREES / _MAX_FEATURES.

        Raises:
            PackageError: an override is not a positive integer.
        """
        values: dict[str, int] = {}
        for attr, env in (
            ("max_package_bytes", "LOOPLINE_MODEL_MAX_BYTES"),
            ("max_trees", "LOOPLINE_MODEL_MAX_TREES"),
            ("max_features", "LOOPLINE_MODEL_MAX_FEATURES"),
        ):
            raw = os.environ.get(env)
            if raw is None:
                continue
            try:
                values[attr] = int(raw)
            except ValueError:
                values[attr] = 0
            if values[attr] <= 0:
                raise PackageError(f"{env}={raw!r}: must be a positive integer")
        return cls(**values)


@dataclass(frozen=True)
class Signature:
    """What a model takes and gives: inputs in order with types, service, objective."""

    feature_names: tuple[str, ...]
    feature_types: tuple[str, ...]
    feature_service: str
    objective: str
    num_class: int
    num_trees: int

    def as_dict(self) -> dict[str, Any]:
        """The JSON form stored as `signature.json`."""
        return {
            "inputs": [
                {"name": n, "type": t}
                for n, t in zip(self.feature_names, self.feature_types, strict=True)
            ],
            "feature_service": self.feature_service,
            "objective": self.objective,
            "num_class": self.num_class,
            "num_trees": self.num_trees,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Signature:
        """Parse `signature.json`.

        Raises:
            PackageError: a field is missing or has the wrong type.
        """
        try:
            inputs = data["inputs"]
            signature = cls(
                feature_names=tuple(str(item["name"]) for item in inputs),
                feature_types=tuple(str(item["type"]) for item in inputs),
                feature_service=str(data["feature_service"]),
                objective=str(data["objective"]),
                num_class=int(data["num_class"]),
                num_trees=int(data["num_trees"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PackageError(f"{SIGNATURE_FILE}: malformed ({exc!r})") from exc
        _check_types(signature.feature_types, len(signature.feature_names))
        return signature


@dataclass(frozen=True)
class ModelPackage:
    """A model with its signature and metadata; `to_bytes` gives the package file."""

    model_text: str
    signature: Signature
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """The package file (deterministic: the same package always gives the same bytes)."""
        members = {
            MODEL_FILE: self.model_text.encode(),
            SIGNATURE_FILE: _canonical_json(self.signature.as_dict()),
            METADATA_FILE: _canonical_json(dict(self.metadata)),
        }
        manifest = {
            "format": PACKAGE_FORMAT,
            "format_version": PACKAGE_FORMAT_VERSION,
            "files": {
                name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                for name, data in members.items()
            },
        }
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, data in ((MANIFEST_FILE, _canonical_json(manifest)), *members.items()):
                info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
                info.compress_type = zipfile.ZIP_STORED
                info.create_system = 3
                info.external_attr = 0o644 << 16
                archive.writestr(info, data)
        return buffer.getvalue()

    @property
    def package_id(self) -> str:
        """The package hash as an artifact id: `sha256:` + sha256 of `to_bytes()`."""
        return f"sha256:{hashlib.sha256(self.to_bytes()).hexdigest()}"

    @property
    def model_sha256(self) -> str:
        """Hex sha256 of the model text (the version's bare model artifact has this id)."""
        return hashlib.sha256(self.model_text.encode()).hexdigest()

    def booster(self) -> lgb.Booster:
        """The LightGBM booster, checked against the signature.

        Raises:
            PackageError: LightGBM cannot parse the model, or it differs from the signature.
        """
        return _booster(self.model_text, self.signature.feature_names, self.signature.num_trees)


@dataclass(frozen=True)
class VerifiedModel:
    """A model version's booster, loaded through the verified path."""

    booster: lgb.Booster
    package: ModelPackage | None
    source_id: str


# --- building ----------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _plain(value: Any) -> Any:
    """JSON-ready values: numpy scalars become Python ones, NaN and infinities null."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy scalars and arrays
        return _plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _canonical_json(value: Any) -> bytes:
    return json.dumps(
        _plain(value),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
        default=_json_default,
    ).encode()


def _check_types(types: Sequence[str], n: int) -> None:
    if len(types) != n:
        raise PackageError(
            f"feature_types: {len(types)} types for {n} features (one type per feature, in order)",
            expected=n,
            actual=len(types),
        )
    unknown = sorted({t for t in types if t not in FEATURE_TYPES})
    if unknown:
        raise PackageError(
            f"feature_types: unknown type(s) {unknown}; known: {sorted(FEATURE_TYPES)}"
        )


@dataclass(frozen=True)
class _Header:
    feature_names: tuple[str, ...]
    objective: str
    num_class: int
    num_trees: int


def _header(model_text: str, limits: PackageLimits) -> _Header:
    """Read the model's header and count its trees without parsing the trees."""
    head, _, _ = model_text.partition("\n\n")
    lines = head.split("\n")
    if not lines or lines[0].strip() != "tree":
        raise PackageError(f"{MODEL_FILE}: not a LightGBM text model (no 'tree' header)")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    missing = [k for k in ("feature_names", "objective", "tree_sizes") if k not in fields]
    if missing:
        raise PackageError(f"{MODEL_FILE}: header lacks {', '.join(missing)}")
    declared = len(fields["tree_sizes"].split())
    counted = model_text.count("\nTree=")
    if counted > limits.max_trees or declared > limits.max_trees:
        raise PackageError(
            f"{MODEL_FILE}: {max(counted, declared)} trees exceed the limit of "
            f"{limits.max_trees} (LOOPLINE_MODEL_MAX_TREES)",
            expected=limits.max_trees,
            actual=max(counted, declared),
        )
    if declared != counted:
        raise PackageError(
            f"{MODEL_FILE}: header declares {declared} trees but {counted} follow",
            expected=declared,
            actual=counted,
        )
    if counted == 0:
        raise PackageError(f"{MODEL_FILE}: the model has no trees")
    names = tuple(fields["feature_names"].split())
    if len(names) > limits.max_features:
        raise PackageError(
            f"{MODEL_FILE}: {len(names)} features exceed the limit of {limits.max_features}",
            expected=limits.max_features,
            actual=len(names),
        )
    try:
        num_class = int(fields.get("num_class", "1"))
    except ValueError as exc:
        raise PackageError(f"{MODEL_FILE}: num_class is not a number") from exc
    return _Header(names, fields["objective"].split()[0], num_class, counted)


def _booster(model_text: str, names: tuple[str, ...], num_trees: int) -> lgb.Booster:
    # LightGBM (and the scikit-learn it imports) takes seconds to import: only loaders pay.
    import lightgbm as lgb

    try:
        booster = lgb.Booster(model_str=model_text)
    except lgb.basic.LightGBMError as exc:
        raise PackageError(f"{MODEL_FILE}: LightGBM cannot parse it: {exc}") from exc
    found = tuple(booster.feature_name())
    if found != names:
        raise PackageError(
            f"{MODEL_FILE}: feature names {list(found)} differ from the signature {list(names)}",
            expected=list(names),
            actual=list(found),
        )
    if booster.num_trees() != num_trees:
        raise PackageError(
            f"{MODEL_FILE}: {booster.num_trees()} trees, the signature says {num_trees}",
            expected=num_trees,
            actual=booster.num_trees(),
        )
    return booster


def build_package(
    model_text: str | bytes,
    *,
    feature_names: Sequence[str],
    feature_types: Sequence[str],
    feature_service: str,
    metadata: Mapping[str, Any] | None = None,
    limits: PackageLimits | None = None,
) -> ModelPackage:
    """Check a trained model against its declared inputs and bundle it as a package.

    Args:
        model_text: LightGBM text (`Booster.model_to_string()`), as str or UTF-8 bytes.
        feature_names: model inputs in the order the model takes them.
        feature_types: one of `FEATURE_TYPES` per input, in the same order.
        feature_service: the Feast feature service (with its version) the inputs come from.
        metadata: lineage and other JSON-serialisable facts (datetimes become ISO strings,
            numpy numbers Python ones, NaN and infinities null).

    Raises:
        PackageError: the model does not parse, its inputs differ from `feature_names`, a type
            is unknown, metadata is not JSON, or a limit is exceeded.
    """
    limits = limits or PackageLimits.from_env()
    if isinstance(model_text, bytes):
        try:
            model_text = model_text.decode()
        except UnicodeDecodeError as exc:
            raise PackageError("model_text: not UTF-8 text (a LightGBM text model?)") from exc
    if len(model_text.encode()) > limits.max_package_bytes:
        raise PackageError(
            f"model_text: larger than the limit of {limits.max_package_bytes} bytes",
            expected=limits.max_package_bytes,
            actual=len(model_text.encode()),
        )
    names = tuple(feature_names)
    if not names or any(not isinstance(n, str) or not n for n in names):
        raise PackageError("feature_names: a non-empty list of non-empty names is required")
    if len(set(names)) != len(names):
        raise PackageError("feature_names: names must be unique")
    _check_types(tuple(feature_types), len(names))
    if not isinstance(feature_service, str) or not feature_service.strip():
        raise PackageError("feature_service: a non-empty name is required")
    header = _header(model_text, limits)
    if header.feature_names != names:
        raise PackageError(
            f"feature_names {list(names)} differ from the model's {list(header.feature_names)}",
            expected=list(names),
            actual=list(header.feature_names),
        )
    try:
        meta_bytes = _canonical_json(dict(metadata or {}))
    except (TypeError, ValueError) as exc:
        raise PackageError(f"metadata: not JSON-serialisable ({exc})") from exc
    if len(meta_bytes) > limits.max_metadata_bytes:
        raise PackageError(
            f"metadata: {len(meta_bytes)} bytes exceed the limit of {limits.max_metadata_bytes}"
        )
    signature = Signature(
        feature_names=names,
        feature_types=tuple(feature_types),
        feature_service=feature_service,
        objective=header.objective,
        num_class=header.num_class,
        num_trees=header.num_trees,
    )
    _booster(model_text, names, header.num_trees)
    package = ModelPackage(model_text, signature, json.loads(meta_bytes))
    if len(package.to_bytes()) > limits.max_package_bytes:
        raise PackageError(f"the package is larger than {limits.max_package_bytes} bytes")
    return package


def package_model(
    model_text: str | bytes,
    *,
    feature_names: Sequence[str],
    feature_types: Sequence[str],
    feature_service: str,
    metadata: Mapping[str, Any] | None = None,
) -> bytes:
    """The package file of a trained model (see `build_package` for the checks).

    Store the bytes as an artifact (e.g. `run.log_artifact_bytes("model_package", data,
    media_type=PACKAGE_MEDIA_TYPE)`) and pass the id as `register_version(package_id=...)`.

    Raises:
        PackageError: see `build_package`.
    """
    return build_package(
        model_text,
        feature_names=feature_names,
        feature_types=feature_types,
        feature_service=feature_service,
        metadata=metadata,
    ).to_bytes()


# --- reading -----------------------------------------------------------------------------------


def read_package(data: bytes, *, limits: PackageLimits | None = None) -> ModelPackage:
    """Parse and check a package file (no registry involved).

    Checks the size, the archive layout (exactly the four members, stored uncompressed), every
    member's sha256 and size against the manifest, the format version, the model header
    against the limits and the signature. The booster itself is parsed by
    `ModelPackage.booster()`.

    Raises:
        PackageError: any check fails.
    """
    limits = limits or PackageLimits.from_env()
    if len(data) > limits.max_package_bytes:
        raise PackageError(
            f"package of {len(data)} bytes exceeds the limit of {limits.max_package_bytes}",
            expected=limits.max_package_bytes,
            actual=len(data),
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise PackageError(f"not a model package (not a ZIP archive: {exc})") from exc
    with archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        if sorted(names) != sorted(MEMBERS):
            raise PackageError(
                f"package members {names} differ from {list(MEMBERS)}",
                expected=list(MEMBERS),
                actual=names,
            )
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED or info.file_size > len(data):
                raise PackageError(f"package member {info.filename} is compressed or oversized")
        try:
            members = {info.filename: archive.read(info) for info in infos}
        except (zipfile.BadZipFile, OSError) as exc:
            raise PackageError(f"package archive is damaged: {exc}") from exc
    try:
        manifest = json.loads(members[MANIFEST_FILE])
        files = manifest["files"]
        declared_format = (manifest["format"], manifest["format_version"])
    except (ValueError, KeyError, TypeError) as exc:
        raise PackageError(f"{MANIFEST_FILE}: malformed ({exc!r})") from exc
    if declared_format != (PACKAGE_FORMAT, PACKAGE_FORMAT_VERSION):
        raise PackageError(
            f"{MANIFEST_FILE}: format {declared_format} is not "
            f"{(PACKAGE_FORMAT, PACKAGE_FORMAT_VERSION)}",
            expected=[PACKAGE_FORMAT, PACKAGE_FORMAT_VERSION],
            actual=list(declared_format),
        )
    for name in MEMBERS[1:]:
        entry = files.get(name) if isinstance(files, dict) else None
        actual = hashlib.sha256(members[name]).hexdigest()
        if not isinstance(entry, dict) or entry.get("sha256") != actual:
            raise PackageError(
                f"{name}: sha256 differs from the manifest",
                expected=None if not isinstance(entry, dict) else entry.get("sha256"),
                actual=actual,
            )
        if entry.get("size") != len(members[name]):
            raise PackageError(f"{name}: size differs from the manifest")
    if len(members[METADATA_FILE]) > limits.max_metadata_bytes:
        raise PackageError(f"{METADATA_FILE}: larger than {limits.max_metadata_bytes} bytes")
    try:
        model_text = members[MODEL_FILE].decode()
        signature = Signature.from_dict(json.loads(members[SIGNATURE_FILE]))
        metadata = json.loads(members[METADATA_FILE])
    except (UnicodeDecodeError, ValueError) as exc:
        raise PackageError(f"package member is not valid text/JSON: {exc}") from exc
    if not isinstance(metadata, dict):
        raise PackageError(f"{METADATA_FILE}: must hold a JSON object")
    header = _header(model_text, limits)
    found = (header.feature_names, header.num_trees, header.objective)
    wanted = (signature.feature_names, signature.num_trees, signature.objective)
    if found != wanted:
        raise PackageError(
            f"{MODEL_FILE} (features, trees, objective) differ from {SIGNATURE_FILE}",
            expected=[list(wanted[0]), *wanted[1:]],
            actual=[list(found[0]), *found[1:]],
        )
    return ModelPackage(model_text, signature, metadata)


def _read_bounded(artifacts: ArtifactStore, artifact_id: str, limit: int) -> bytes:
    """An artifact's bytes, hashed against its id, refusing more than `limit` bytes."""
    if not isinstance(artifact_id, str) or not ARTIFACT_ID.match(artifact_id):
        raise PackageError(f"malformed artifact id {artifact_id!r}")
    try:
        path = artifacts.path(artifact_id)
    except ArtifactError as exc:
        raise PackageError(str(exc), expected=artifact_id, actual=None) from exc
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise PackageError(
            f"artifact {artifact_id} exceeds the limit of {limit} bytes (LOOPLINE_MODEL_MAX_BYTES)",
            expected=limit,
            actual=path.stat().st_size,
        )
    actual = f"sha256:{hashlib.sha256(data).hexdigest()}"
    if actual != artifact_id:
        raise PackageError(
            f"hash mismatch: {artifact_id} holds content hashing to {actual}",
            expected=artifact_id,
            actual=actual,
        )
    return data


def _refuse(
    store: Store,
    exc: PackageError,
    *,
    subject: tuple[str, str],
    source_id: str,
    actor: str,
) -> PackageRefused:
    detail = {
        "source_id": source_id,
        "reason": str(exc),
        "expected": exc.expected,
        "actual": exc.actual,
    }
    try:
        with store.session() as session:
            audit(
                session,
                actor=actor,
                action="package_refused",
                subject_type=subject[0],
                subject_id=subject[1],
                detail=json.loads(_canonical_json(detail)),
            )
    except Exception:  # the refusal stands even if the store cannot record it
        log.exception("could not record the refusal of %s", source_id)
    refused = PackageRefused(
        f"refused {subject[0]} {subject[1]}: {exc}", expected=exc.expected, actual=exc.actual
    )
    refused.__cause__ = exc
    return refused


def load_package(
    store: Store,
    artifacts: ArtifactStore,
    package_id: str,
    *,
    subject: tuple[str, str] | None = None,
    actor: str = "loopline",
    limits: PackageLimits | None = None,
) -> ModelPackage:
    """Read a stored package, verifying its hash, layout, limits and signature.

    Call it outside a write transaction: a refusal is recorded in a transaction of its own.

    Args:
        subject: (subject_type, subject_id) of the audit event on refusal; default the package.

    Raises:
        PackageRefused: any check failed; an audit event `package_refused` holds the reason
            and the expected and actual values.
    """
    limits = limits or PackageLimits.from_env()
    subject = subject or ("artifact", str(package_id)[:200])
    try:
        return read_package(
            _read_bounded(artifacts, package_id, limits.max_package_bytes), limits=limits
        )
    except PackageError as exc:
        raise _refuse(store, exc, subject=subject, source_id=package_id, actor=actor) from exc


def load_version(
    store: Store,
    artifacts: ArtifactStore,
    version: ModelVersion,
    *,
    actor: str = "loopline",
    limits: PackageLimits | None = None,
) -> VerifiedModel:
    """The booster of a registered version, through its verified package.

    The package's signature must match what the registry recorded (inputs in order, feature
    service) and its model text must be the version's model artifact. A version registered
    without a package loads its model artifact under the same size, hash and tree checks.
    Call it outside a write transaction (see `load_package`).

    Raises:
        PackageRefused: verification failed (audited as `package_refused`).
    """
    limits = limits or PackageLimits.from_env()
    subject = ("model_version", f"{version.model_name}/{version.version}")
    inputs = tuple((version.feature_names or {}).get("inputs", []))
    if version.package_id is None:
        try:
            data = _read_bounded(artifacts, version.artifact_id, limits.max_package_bytes)
            text = data.decode()
            header = _header(text, limits)
            booster = _booster(text, inputs or header.feature_names, header.num_trees)
        except UnicodeDecodeError as exc:
            error = PackageError(f"{MODEL_FILE}: not UTF-8 text")
            raise _refuse(
                store, error, subject=subject, source_id=version.artifact_id, actor=actor
            ) from exc
        except PackageError as exc:
            raise _refuse(
                store, exc, subject=subject, source_id=version.artifact_id, actor=actor
            ) from exc
        return VerifiedModel(booster, None, version.artifact_id)
    package = load_package(
        store, artifacts, version.package_id, subject=subject, actor=actor, limits=limits
    )
    try:
        signature = package.signature
        if inputs and signature.feature_names != inputs:
            raise PackageError(
                "the package's inputs differ from the registered ones",
                expected=list(inputs),
                actual=list(signature.feature_names),
            )
        if signature.feature_service != version.feature_service:
            raise PackageError(
                "the package's feature service differs from the registered one",
                expected=version.feature_service,
                actual=signature.feature_service,
            )
        model_id = f"sha256:{package.model_sha256}"
        if version.artifact_id not in (model_id, version.package_id):
            raise PackageError(
                "the package's model is not the version's model artifact",
                expected=version.artifact_id,
                actual=model_id,
            )
        booster = package.booster()
    except PackageError as exc:
        raise _refuse(
            store, exc, subject=subject, source_id=version.package_id, actor=actor
        ) from exc
    return VerifiedModel(booster, package, version.package_id)


# --- storing -----------------------------------------------------------------------------------


def write_package(session: Session, artifacts: ArtifactStore, package: ModelPackage | bytes) -> str:
    """Store a package in the artifact store (and its metadata row); returns its id.

    Raises:
        PackageError: raw bytes that are not a valid package.
    """
    from loopline.tracking import register_artifact

    data = package if isinstance(package, bytes) else package.to_bytes()
    if isinstance(package, bytes):
        read_package(data)
    package_id = artifacts.put_bytes(data)
    register_artifact(session, package_id, len(data), PACKAGE_MEDIA_TYPE)
    return package_id


def register_package(
    session: Session,
    artifacts: ArtifactStore,
    package: ModelPackage,
    *,
    model_name: str,
    use_case: str,
    run_id: str,
    metrics: Mapping[str, float],
    datasets: Mapping[str, str] | None = None,
    reference_profile_id: str | None = None,
    actor: str = "loopline",
) -> ModelVersion:
    """Store a package and its bare model text, and register them as a new version.

    Inputs and feature service come from the package's signature.
    """
    from loopline.tracking import register_artifact

    model_bytes = package.model_text.encode()
    model_id = artifacts.put_bytes(model_bytes)
    register_artifact(session, model_id, len(model_bytes), MODEL_MEDIA_TYPE)
    package_id = write_package(session, artifacts, package)
    version = register_version(
        session,
        model_name=model_name,
        use_case=use_case,
        run_id=run_id,
        artifact_id=model_id,
        package_id=package_id,
        feature_service=package.signature.feature_service,
        feature_names=list(package.signature.feature_names),
        metrics=metrics,
        datasets=datasets or {},
        reference_profile_id=reference_profile_id,
        actor=actor,
    )
    return version
