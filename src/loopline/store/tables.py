"""Metadata store schema: runs, metrics, artifacts, datasets, models, aliases, gates, audit, drift.

One SQLAlchemy 2 declarative model per concept. JSON columns hold open-ended maps (params,
environment, details); everything that is listed or filtered on has its own indexed column.
The schema already holds what the roadmap needs next (alias history, gate results, drift
results, alerts) so later stages add rows, not redesigns. Alembic migrations under
`store/migrations` create and evolve it; `Base.metadata` is their source of truth.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Timezone-aware current time in UTC."""
    return datetime.now(UTC)


def new_id() -> str:
    """A fresh opaque identifier (uuid4 hex)."""
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the metadata store; use UTC-aware values")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base with a stable constraint naming convention (for migrations)."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, datetime: UTCDateTime()}


class Run(Base):
    """One execution of a stage (ingest, features, train, promote, monitor, pipeline)."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(32))
    use_case: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(16), default="running")
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    environment: Mapped[dict[str, Any]] = mapped_column(default=dict)
    git_commit: Mapped[str | None] = mapped_column(String(64))
    lock_hash: Mapped[str | None] = mapped_column(String(64))
    prefect_flow_run_id: Mapped[str | None] = mapped_column(String(64))
    parent_run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]
    duration_s: Mapped[float | None] = mapped_column(Float)
    peak_memory_mb: Mapped[float | None] = mapped_column(Float)
    # Added by migration 0003 (run search, crash detection).
    notes: Mapped[str] = mapped_column(Text, default="", server_default="")
    git_dirty: Mapped[bool | None] = mapped_column(Boolean)
    pid: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_runs_kind_started", "kind", "started_at"),
        Index("ix_runs_use_case_started", "use_case", "started_at"),
        Index("ix_runs_status_started", "status", "started_at"),
        Index("ix_runs_prefect_flow_run_id", "prefect_flow_run_id"),
        Index("ix_runs_started_id", "started_at", "id"),
        Index("ix_runs_parent_started", "parent_run_id", "started_at"),
    )


class RunMetric(Base):
    """A metric value of a run at a step; final values use step 0 unless a history exists."""

    __tablename__ = "run_metrics"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    step: Mapped[int] = mapped_column(Integer, default=0)
    value: Mapped[float] = mapped_column(Float)
    is_final: Mapped[bool] = mapped_column(Boolean, default=True)
    logged_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("run_id", "key", "step", name="uq_run_metrics_run_key_step"),
        Index("ix_run_metrics_key_value", "key", "value"),
        # Migration 0003: covers `metrics.<key> <op> <value>` searches over final values.
        Index("ix_run_metrics_final_key_value", "key", "is_final", "value", "run_id", "step"),
    )


class RunTag(Base):
    """A searchable tag of a run (the runs.tags JSON mirrors these for display)."""

    __tablename__ = "run_tags"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[str] = mapped_column(String(1000))

    __table_args__ = (
        Index("ix_run_tags_key_value", "key", "value"),
        # Migration 0003: covers `tags.<key> = <value>` searches (no table lookups).
        Index("ix_run_tags_key_value_run", "key", "value", "run_id"),
    )


class RunParam(Base):
    """One flattened parameter of a run, for search (the runs.params JSON stays the record).

    Nested maps flatten to dotted keys (`training.num_leaves`). `value_text` holds the value as
    text (JSON for lists and maps, `true`/`false` for booleans, NULL for None) and `value_num`
    the number when the value is one or reads as one, so `params.num_leaves = 63` and
    `params.objective = 'binary'` both use an index.
    """

    __tablename__ = "run_params"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value_text: Mapped[str | None] = mapped_column(String(1000))
    value_num: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        Index("ix_run_params_key_num", "key", "value_num", "run_id"),
        Index("ix_run_params_key_text", "key", "value_text", "run_id"),
    )


class Artifact(Base):
    """A content-addressed blob in the artifact store (id = 'sha256:<hex>')."""

    __tablename__ = "artifacts"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    media_type: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RunArtifact(Base):
    """Which run produced or used which artifact, under which logical name."""

    __tablename__ = "run_artifacts"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    artifact_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id"), index=True)


class DatasetVersion(Base):
    """A version of a curated lake table, with its provenance."""

    __tablename__ = "dataset_versions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    dataset: Mapped[str] = mapped_column(String(200))
    use_case: Mapped[str] = mapped_column(String(64))
    table_version: Mapped[int] = mapped_column(Integer)
    uri: Mapped[str] = mapped_column(String(1000))
    content_hash: Mapped[str] = mapped_column(String(80))
    row_count: Mapped[int] = mapped_column(BigInteger)
    rows_in: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_accepted: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_quarantined: Mapped[int] = mapped_column(BigInteger, default=0)
    schema_: Mapped[dict[str, Any]] = mapped_column("schema", default=dict)
    sources: Mapped[dict[str, Any]] = mapped_column(default=dict)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("dataset_versions.id"))
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("dataset", "table_version", name="uq_dataset_versions_dataset_version"),
        Index("ix_dataset_versions_dataset_hash", "dataset", "content_hash"),
        Index("ix_dataset_versions_dataset_created", "dataset", "created_at"),
    )


class DataBatch(Base):
    """One ingest batch of a raw table: sources, contract results, outcome (migration 0002).

    `status` is `pending` while its lake writes run, `committed` once its dataset version is
    recorded (the commit point: the same transaction), `rejected` when a hard rule failed
    (nothing was written), and `rolled_back` when a crash left it pending and the next ingest
    undid its lake writes. `rules` holds every broken rule with its failure count and examples.
    """

    __tablename__ = "data_batches"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    dataset: Mapped[str] = mapped_column(String(200))
    use_case: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    contract_version: Mapped[int] = mapped_column(Integer, default=1)
    sources: Mapped[dict[str, Any]] = mapped_column(default=dict)
    rows_in: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_accepted: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_quarantined: Mapped[int] = mapped_column(BigInteger, default=0)
    rules: Mapped[dict[str, Any]] = mapped_column(default=dict)
    message: Mapped[str] = mapped_column(Text, default="")
    base_version: Mapped[int | None] = mapped_column(Integer)
    table_version: Mapped[int | None] = mapped_column(Integer)
    quarantine_version: Mapped[int | None] = mapped_column(Integer)
    schema_changes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dataset_version_id: Mapped[str | None] = mapped_column(ForeignKey("dataset_versions.id"))
    report_id: Mapped[str | None] = mapped_column(ForeignKey("artifacts.id"))
    profile_id: Mapped[str | None] = mapped_column(ForeignKey("artifacts.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_data_batches_dataset_created", "dataset", "created_at"),
        Index("ix_data_batches_dataset_status", "dataset", "status"),
        Index("ix_data_batches_run_id", "run_id"),
    )


def _model_name_key(context: Any) -> str:
    # Imported late: the registry's name rules sit above the store in the package layering.
    from loopline.registry.names import model_name_key

    return model_name_key(context.get_current_parameters()["name"])


class Model(Base):
    """A registered model name (one per use case by default).

    `name_key` (migration 0004) is the normalised name (casefolded, NFKC, URL-decoded) and is
    unique, so two spellings of one name cannot coexist. `last_version` is the version counter:
    a registration increments it in its own transaction, which makes numbers gap-free.
    """

    __tablename__ = "models"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    use_case: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Added by migration 0004 (registry core).
    name_key: Mapped[str] = mapped_column(String(100), default=_model_name_key)
    last_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (Index("uq_models_name_key", "name_key", unique=True),)


class ModelVersion(Base):
    """An immutable trained model with its lineage."""

    __tablename__ = "model_versions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    model_name: Mapped[str] = mapped_column(ForeignKey("models.name"))
    version: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    artifact_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id"))
    feature_service: Mapped[str] = mapped_column(String(200))
    feature_names: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    reference_profile_id: Mapped[str | None] = mapped_column(ForeignKey("artifacts.id"))
    status: Mapped[str] = mapped_column(String(16), default="ready")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Added by migration 0004: the verified model package (model text, signature, metadata).
    package_id: Mapped[str | None] = mapped_column(ForeignKey("artifacts.id"))

    __table_args__ = (
        UniqueConstraint("model_name", "version", name="uq_model_versions_name_version"),
        Index("ix_model_versions_run_id", "run_id"),
    )


class ModelVersionDataset(Base):
    """Lineage: which dataset versions a model version was trained on, in which role."""

    __tablename__ = "model_version_datasets"

    model_version_id: Mapped[str] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    dataset_version_id: Mapped[str] = mapped_column(
        ForeignKey("dataset_versions.id"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(32))


class Alias(Base):
    """A movable name (champion, challenger) pointing at one model version.

    `revision` increases on every move; a move states the revision it expects (compare-and-swap).
    """

    __tablename__ = "aliases"

    model_name: Mapped[str] = mapped_column(ForeignKey("models.name"), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"))
    revision: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AliasEvent(Base):
    """Full history of alias moves (set, promote, rollback, delete)."""

    __tablename__ = "alias_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(100))
    alias: Mapped[str] = mapped_column(String(64))
    from_version_id: Mapped[str | None] = mapped_column(ForeignKey("model_versions.id"))
    to_version_id: Mapped[str | None] = mapped_column(ForeignKey("model_versions.id"))
    revision: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_alias_events_model_alias_at", "model_name", "alias", "at"),)


class GateResult(Base):
    """The verdict of one promotion gate on one model version."""

    __tablename__ = "gate_results"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    model_version_id: Mapped[str] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE")
    )
    gate: Mapped[str] = mapped_column(String(200))
    passed: Mapped[bool] = mapped_column(Boolean)
    observed: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    evaluated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_gate_results_version", "model_version_id", "evaluated_at"),)


class AuditEvent(Base):
    """Who did what to which object, when: append-only."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(64))
    subject_id: Mapped[str] = mapped_column(String(200))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (
        Index("ix_audit_events_subject", "subject_type", "subject_id", "at"),
        Index("ix_audit_events_at", "at"),
    )


class PromotionRequest(Base):
    """A request to move an alias under the two-person rule, and its decision (migration 0005).

    `expected_revision` is the alias revision when the request was made (None: unset): the
    approval is a compare-and-swap against it, so a request made stale by another move cannot
    be approved. `status`: pending, approved, rejected, stale, expired. `gates` is the gate
    snapshot the requester saw.
    """

    __tablename__ = "promotion_requests"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    model_name: Mapped[str] = mapped_column(ForeignKey("models.name"))
    alias: Mapped[str] = mapped_column(String(64))
    model_version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"))
    from_version_id: Mapped[str | None] = mapped_column(ForeignKey("model_versions.id"))
    expected_revision: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    override: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str] = mapped_column(Text, default="")
    requested_by: Mapped[str] = mapped_column(String(200))
    requester_role: Mapped[str | None] = mapped_column(String(64))
    gates: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decider_role: Mapped[str | None] = mapped_column(String(64))
    decision_note: Mapped[str] = mapped_column(Text, default="")
    decided_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_promotion_requests_model_alias_status", "model_name", "alias", "status"),
        Index("ix_promotion_requests_created", "created_at"),
    )


class DriftResult(Base):
    """Drift of one feature (or the prediction) in one window against a model's reference."""

    __tablename__ = "drift_results"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    model_version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"))
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    feature: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(String(32))
    statistic: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    drifted: Mapped[bool] = mapped_column(Boolean)
    sample_size: Mapped[int] = mapped_column(Integer)
    reference_size: Mapped[int] = mapped_column(Integer)
    profile_id: Mapped[str | None] = mapped_column(ForeignKey("artifacts.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_drift_results_version_window", "model_version_id", "window_end"),
        Index("ix_drift_results_run", "run_id"),
    )


class Alert(Base):
    """A raised condition (drift, decay, failed run) and its lifecycle."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    subject_type: Mapped[str] = mapped_column(String(64))
    subject_id: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="open")
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_alerts_status_created", "status", "created_at"),)


class ApiKey(Base):
    """An API key of the prediction service (migration 0006); its secret is never stored.

    A key is presented as `ll_<id>_<secret>`. `secret_hash` holds a self-describing salted
    hash of the secret (`scrypt$n$r$p$<salt hex>$<hash hex>`), so a stolen database gives no
    usable key. `scopes` is a space-separated set (`predict`, `admin`); a revoked key keeps
    its row for the audit trail.
    """

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    scopes: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200))
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(200))
    last_used_at: Mapped[datetime | None]
