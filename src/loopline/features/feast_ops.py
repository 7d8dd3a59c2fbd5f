"""Feast helpers: open the store, apply, materialize, training sets, online reads, skew, freshness.

The feature repository (`feature_repo/`) holds the declarations; this module is the code that
talks to Feast. `SERVICES` lists, per feature service, which features its views carry and which
request-time features are derived from them: `loopline.features.transform` reads it to build
model inputs, so a new use case adds a service here and declarations in the repo, not code in
the transform.

Feature services are versions: `feature_repo/service_versions.json` records the definition hash
of every view of every released service, and `apply_repo` refuses a repo in which a released
view changed (`ServiceDefinitionError`). Models record the service and the hashes they were
trained on and are served through that service for as long as they live.

Feast is imported inside the functions: importing it takes seconds, and `transform` (imported by
the API and by training) needs only the `SERVICES` data.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import os
import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlparse

import polars as pl

from loopline.settings import Settings
from loopline.spec import ServiceLayoutSpec, UseCaseSpec

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore, FeatureView

log = logging.getLogger(__name__)

TIMESTAMP = "event_timestamp"
LOCK_FILE = "service_versions.json"
_ROW = "__loopline_row"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SERVICE_CACHE: weakref.WeakKeyDictionary[Any, dict[str, tuple]] = weakref.WeakKeyDictionary()


# ---------------------------------------------------------------------------------------------
# Service layouts: what each feature service feeds the model
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ratio:
    """A request-time input: numerator / denominator, NaN when either is missing or it is 0."""

    name: str
    numerator: str
    denominator: str

    @property
    def needs(self) -> tuple[str, ...]:
        """Columns the value is computed from."""
        return (self.numerator, self.denominator)


@dataclass(frozen=True)
class ZScore:
    """A request-time input: (value - mean) / std, NaN when any is missing or std is 0."""

    name: str
    value: str
    mean: str
    std: str

    @property
    def needs(self) -> tuple[str, ...]:
        """Columns the value is computed from."""
        return (self.value, self.mean, self.std)


@dataclass(frozen=True)
class Elapsed:
    """A request-time input: seconds from `since` (epoch microseconds) to the request time.

    The request time is the use case's event timestamp column: the event's own time in
    training and batch scoring, the moment of the request online.
    """

    name: str
    since: str

    @property
    def needs(self) -> tuple[str, ...]:
        """Columns the value is computed from (besides the request time)."""
        return (self.since,)


Derived = Ratio | ZScore | Elapsed


@dataclass(frozen=True)
class ServiceLayout:
    """The features a Feast feature service returns, in model-input order, plus request-time
    inputs derived from them.

    Attributes:
        views: View name -> its features, in declaration order.
        derived: Request-time inputs, computed by `loopline.features.transform`.
        helpers: Features fetched only to derive request-time inputs (not model inputs
            themselves, e.g. an absolute timestamp).
    """

    views: Mapping[str, tuple[str, ...]]
    derived: tuple[Derived, ...] = field(default=())
    helpers: frozenset[str] = field(default=frozenset())

    @property
    def features(self) -> list[str]:
        """Feast feature names in a fixed order: views in declaration order, then their fields."""
        return [name for names in self.views.values() for name in names]

    @property
    def model_features(self) -> list[str]:
        """The Feast features that are model inputs (all but the helpers), in order."""
        return [name for name in self.features if name not in self.helpers]


def _windows(template: str, windows: Sequence[str]) -> tuple[str, ...]:
    return tuple(template.format(w=w) for w in windows)


_W4 = ("1h", "1d", "7d", "30d")
_W3 = ("1d", "7d", "30d")

# Must match the FeatureService of the same name in feature_repo/ (an integration test checks it).
SERVICES: dict[str, ServiceLayout] = {
    "fraud_v1": ServiceLayout(
        views={
            "customer_stats": (
                "cust_txn_count_1d",
                "cust_txn_count_7d",
                "cust_amount_sum_7d",
                "cust_amount_mean_30d",
                "cust_amount_max_30d",
                "cust_online_share_30d",
                "cust_distinct_countries_30d",
            ),
            "merchant_stats": (
                "merch_txn_count_7d",
                "merch_amount_mean_30d",
                "merch_online_share_30d",
            ),
        },
        derived=(Ratio("amount_to_cust_mean", "amount", "cust_amount_mean_30d"),),
    ),
    "fraud_v2": ServiceLayout(
        views={
            "customer_activity": (
                *_windows("cust_txn_count_{w}", _W4),
                *_windows("cust_amount_sum_{w}", _W4),
                *_windows("cust_amount_mean_{w}", _W3),
                *_windows("cust_amount_std_{w}", _W3),
                *_windows("cust_distinct_merchants_{w}", _W3),
                "cust_last_txn_epoch_us",
            ),
            "merchant_activity": (
                *_windows("merch_txn_count_{w}", _W4),
                *_windows("merch_amount_mean_{w}", ("7d", "30d")),
                "merch_amount_std_30d",
                *_windows("merch_distinct_customers_{w}", ("1d", "30d")),
                *_windows("merch_fraud_labels_{w}", ("7d", "30d")),
                "merch_labels_30d",
                "merch_fraud_rate_30d",
            ),
        },
        derived=(
            Ratio("amount_to_cust_mean_30d", "amount", "cust_amount_mean_30d"),
            ZScore(
                "amount_zscore_cust_30d", "amount", "cust_amount_mean_30d", "cust_amount_std_30d"
            ),
            Ratio("amount_to_cust_sum_1d", "amount", "cust_amount_sum_1d"),
            Elapsed("secs_since_cust_last_txn", "cust_last_txn_epoch_us"),
            Ratio("amount_to_merch_mean_30d", "amount", "merch_amount_mean_30d"),
        ),
        helpers=frozenset({"cust_last_txn_epoch_us"}),
    ),
}


def layout_from_spec(declared: ServiceLayoutSpec) -> ServiceLayout:
    """A service layout declared in a use-case spec, as the transform uses it."""
    derived: list[Derived] = []
    for d in declared.derived:
        if d.kind == "ratio":
            assert d.numerator and d.denominator
            derived.append(Ratio(d.name, d.numerator, d.denominator))
        elif d.kind == "zscore":
            assert d.value and d.mean and d.std
            derived.append(ZScore(d.name, d.value, d.mean, d.std))
        else:
            assert d.since
            derived.append(Elapsed(d.name, d.since))
    return ServiceLayout(
        views={view: tuple(names) for view, names in declared.views.items()},
        derived=tuple(derived),
        helpers=frozenset(declared.helpers),
    )


def service_layout(service_name: str, spec: UseCaseSpec | None = None) -> ServiceLayout:
    """The declared layout of a feature service: the spec's `features.layouts` first, then
    loopline's built-in `SERVICES`.

    Raises:
        ValueError: no layout is declared for that service.
    """
    if spec is not None and service_name in spec.features.layouts:
        return layout_from_spec(spec.features.layouts[service_name])
    try:
        return SERVICES[service_name]
    except KeyError:
        known = ", ".join(sorted({*SERVICES, *(spec.features.layouts if spec else ())}))
        raise ValueError(
            f"features.service: no layout declared for '{service_name}' in the spec's "
            f"features.layouts or loopline.features.feast_ops.SERVICES (known: {known})"
        ) from None


# ---------------------------------------------------------------------------------------------
# Opening the store, applying the repo, definition hashes
# ---------------------------------------------------------------------------------------------


class ServiceDefinitionError(ValueError):
    """A released feature service's views changed: declare a new service version instead."""


def feast_environment(settings: Settings) -> dict[str, str]:
    """Variables the feature_store YAML files expand (`${LOOPLINE_...}`)."""
    env = dict(settings.feast_env())
    env["LOOPLINE_FEAST_PROJECT"] = settings.feast_project
    env["LOOPLINE_FEAST_REDIS"] = redis_connection_string(settings.redis_url)
    if settings.feast_registry_url:
        env["LOOPLINE_FEAST_REGISTRY_URL"] = settings.feast_registry_url
    return env


def redis_connection_string(url: str) -> str:
    """A redis:// URL as Feast's Redis connection string ("host:port,db=N,password=...").

    Raises:
        ValueError: not a redis:// URL.
    """
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss") or not parsed.hostname:
        raise ValueError(f"redis_url: must look like redis://host:port/db, got {url!r}")
    parts = [f"{parsed.hostname}:{parsed.port or 6379}"]
    db = parsed.path.lstrip("/")
    if db:
        parts.append(f"db={int(db)}")
    if parsed.password:
        parts.append(f"password={unquote(parsed.password)}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def open_store(settings: Settings) -> FeatureStore:
    """Open the Feast store of `settings.feature_repo` with the profile's YAML file.

    `settings.feast_yaml` picks the YAML (the embedded `feature_store.yaml` by default, or
    `feature_store.scale.yaml` for Redis and a PostgreSQL registry). Sets the variables the YAML
    and the declarations expand (LOOPLINE_HOME and the scale profile's URLs) in the process
    environment, since Feast expands them when it loads the file; creates the Feast folder of
    the embedded profile.

    Raises:
        FileNotFoundError: the feature repo has no such YAML file.
    """
    yaml_path = settings.feature_repo / settings.feast_yaml
    if not yaml_path.is_file():
        raise FileNotFoundError(
            f"feature_repo: no {settings.feast_yaml} in {settings.feature_repo}"
        )
    os.environ.update(feast_environment(settings))
    settings.feast_dir.mkdir(parents=True, exist_ok=True)

    from feast import FeatureStore

    return FeatureStore(repo_path=str(settings.feature_repo), fs_yaml_file=yaml_path)


def publish_feature_table(frame: pl.DataFrame, path: Path) -> None:
    """Write a feature table as Parquet atomically, with microsecond UTC timestamps.

    Readers see the old file or the new one, never a partial write: the table goes to a temporary
    file in the same folder, is flushed to disk, then renamed over `path`.

    Raises:
        ValueError: event_timestamp is missing, not a timezone-aware datetime, or has nulls.
    """
    if TIMESTAMP not in frame.columns:
        raise ValueError(f"feature table: missing column {TIMESTAMP}")
    dtype = frame.schema[TIMESTAMP]
    if not isinstance(dtype, pl.Datetime) or dtype.time_zone is None:
        raise ValueError(f"{TIMESTAMP}: must be a timezone-aware datetime (UTC), got {dtype}")
    if frame[TIMESTAMP].null_count():
        raise ValueError(f"{TIMESTAMP}: must not be null")
    # Feast's DuckDB offline store cannot cast nanosecond timestamps with a time zone.
    frame = frame.with_columns(
        pl.col(name).dt.convert_time_zone("UTC").dt.cast_time_unit("us")
        for name, dtype in frame.schema.items()
        if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        frame.write_parquet(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def definition_hash(view: FeatureView, home: Path | str | None = None) -> str:
    """A hash of what a feature view computes and serves, independent of where it lives.

    It covers the name, entities, features and their types, ttl, online flag and the source
    (format, timestamp fields, field mapping, path relative to the data home); it ignores
    descriptions, owners, tags and registry metadata (timestamps, materialization intervals).

    Args:
        view: The view.
        home: Data home; a source path under it is hashed relative to it (default:
            LOOPLINE_HOME from the environment).
    """
    proto = view.to_proto().spec
    spec = type(proto)()
    spec.CopyFrom(proto)
    for name in ("project", "description", "owner", "tags", "version", "org"):
        spec.ClearField(name)
    spec.ClearField("entity_columns")  # filled in by `apply` (inferred from the entities)
    for feature in spec.features:
        feature.ClearField("description")
        feature.ClearField("tags")
    source = spec.batch_source
    for name in ("project", "description", "owner", "tags", "meta"):
        source.ClearField(name)
    uri = source.file_options.uri
    root = str(home if home is not None else os.environ.get("LOOPLINE_HOME", ""))
    if root and uri.startswith(root.rstrip("/") + "/"):
        source.file_options.uri = "${LOOPLINE_HOME}/" + uri[len(root.rstrip("/")) + 1 :]
    payload = spec.SerializeToString(deterministic=True)
    return "sha256:" + hashlib.sha256(payload).hexdigest()


def service_definitions(
    views: Mapping[str, FeatureView], services: Sequence[FeatureService]
) -> dict[str, dict[str, str]]:
    """Service name -> {view name -> definition hash} for the given declarations."""
    out: dict[str, dict[str, str]] = {}
    for service in services:
        out[service.name] = {
            p.name: definition_hash(views[p.name]) for p in service.feature_view_projections
        }
    return out


def read_lock(repo: Path) -> dict[str, dict[str, str]]:
    """The released services and their view hashes (empty when the repo has no lock file).

    Raises:
        ValueError: the lock file is not valid JSON of that shape.
    """
    path = repo / LOCK_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not all(
        isinstance(v, dict) and all(isinstance(h, str) for h in v.values()) for v in data.values()
    ):
        raise ValueError(f"{path}: must map service -> {{view: hash}}")
    return data


def check_released(
    declared: Mapping[str, Mapping[str, str]], released: Mapping[str, Mapping[str, str]]
) -> None:
    """Refuse declarations that change a released service.

    Raises:
        ServiceDefinitionError: a released service is gone, or one of its views is gone or has
            another definition hash; the message names the service, the view and both hashes.
    """
    for service, views in released.items():
        now = declared.get(service)
        if now is None:
            raise ServiceDefinitionError(
                f"feature service '{service}' was released ({LOCK_FILE}) but is no longer "
                "declared: models pinned to it could not be served"
            )
        for view, old in views.items():
            new = now.get(view)
            if new != old:
                raise ServiceDefinitionError(
                    f"feature view '{view}' of released service '{service}' changed "
                    f"(released {old[:19]}, now {str(new)[:19]}): leave it as it was and "
                    "declare a new view and a new service version instead"
                )
        extra = sorted(set(now) - set(views))
        if extra:
            raise ServiceDefinitionError(
                f"feature service '{service}' was released without view(s) {', '.join(extra)}: "
                "declare a new service version instead"
            )


def lock_services(repo: Path, declared: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Record the services not yet in the lock file; returns their names.

    Raises:
        ServiceDefinitionError: as for `check_released` (released entries never change).
    """
    released = read_lock(repo)
    check_released(declared, released)
    new = sorted(set(declared) - set(released))
    if new:
        merged = {**released, **{s: dict(declared[s]) for s in new}}
        path = repo / LOCK_FILE
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    return new


def declared_definitions(store: FeatureStore) -> dict[str, dict[str, str]]:
    """Definition hashes of every service declared in the store's repo."""
    repo = _load_declarations(Path(store.repo_path))
    views = {v.name: v for v in repo.feature_views}
    return service_definitions(views, repo.feature_services)


def forget_watermarks(store: FeatureStore, views: Sequence[str]) -> list[str]:
    """Forget the materialization watermarks of views (they are re-registered by the next
    `apply_repo`, and the next `materialize` reloads them from `end - ttl`).

    Returns:
        The views whose watermark was forgotten (registered views with a watermark).
    """
    project = store.project
    forgotten = []
    for view in store.registry.list_feature_views(project, allow_cache=False):
        if view.name in views and view.materialization_intervals:
            # Committed at once: an uncommitted change is dropped when Feast re-reads the file.
            store.registry.delete_feature_view(view.name, project, commit=True)
            forgotten.append(view.name)
    return forgotten


def apply_repo(store: FeatureStore, *, reset_views: Sequence[str] = ()) -> None:
    """Register the repo's declarations and create their online tables; idempotent.

    The programmatic `feast apply`: loads every declaration file (honouring `.feastignore`)
    afresh, checks released services against `service_versions.json`, applies all objects, and
    deletes registry objects no longer declared. Unlike `feast apply`, it always passes every
    view to the online store, so tables dropped by a teardown or a deleted online store are
    recreated. When the SQLite online store file is missing, the registry's materialization
    watermarks are forgotten too, so the next `materialize` refills the store; `reset_views`
    forgets the watermarks of those views (their tables were rewritten before the watermark).

    Raises:
        ServiceDefinitionError: a released service's views changed.
    """
    from feast.feature_view import DUMMY_ENTITY_NAME
    from feast.repo_operations import extract_objects_for_apply_delete

    repo_path = Path(store.repo_path)
    repo = _load_declarations(repo_path)
    views = {v.name: v for v in repo.feature_views}
    check_released(service_definitions(views, repo.feature_services), read_lock(repo_path))
    project = store.project
    objects = [
        *repo.data_sources,
        *(e for e in repo.entities if e.name != DUMMY_ENTITY_NAME),
        *repo.feature_views,
        *repo.on_demand_feature_views,
        *repo.stream_feature_views,
        *repo.feature_services,
    ]
    reset = set(reset_views)
    if _online_store_is_new(store):
        # Watermarks describe what the online store holds, and a new store holds nothing.
        reset |= {v.name for v in store.registry.list_feature_views(project, allow_cache=False)}
    if reset:
        forget_watermarks(store, sorted(reset))
    _, to_delete, _, _ = extract_objects_for_apply_delete(project, store.registry, repo)
    with _quiet():
        store.apply(objects, objects_to_delete=list(to_delete), partial=False)


# ---------------------------------------------------------------------------------------------
# Materialization
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Materialized:
    """What `materialize` did for one view."""

    view: str
    start: datetime | None
    end: datetime
    skipped: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "view": self.view,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat(),
            "skipped": self.skipped,
        }


def materialize(
    store: FeatureStore,
    *,
    end: datetime,
    views: Sequence[str] | None = None,
    now: datetime | None = None,
) -> list[Materialized]:
    """Load feature rows up to `end` into the online store, from each view's watermark.

    A view never materialized starts at `end - ttl` (older rows are expired anyway). Feast
    advances a view's watermark only after its write finished, so a run that fails half-way is
    retried from the old watermark and leaves no gap. A view whose watermark is already at or
    past `end` is left alone.

    Args:
        store: An open feature store.
        end: Materialize rows stamped up to this instant (timezone-aware, not in the future).
        views: Only these views (default: every online view).
        now: The current time (default: the clock); `end` may not be after it.

    Raises:
        ValueError: `end` is naive or in the future, or a named view does not exist.
    """
    _require_aware(end, "end")
    now = now or datetime.now(UTC)
    if end > now:
        raise ValueError(
            f"end: {end.isoformat()} is in the future (now {now.isoformat()}): rows stamped "
            "later are not final yet, so they cannot be served"
        )
    listed = store.list_feature_views(allow_cache=False)
    if views is not None:
        unknown = sorted(set(views) - {v.name for v in listed})
        if unknown:
            raise ValueError(f"views: unknown feature view(s) {', '.join(unknown)}")
    done: list[Materialized] = []
    for view in listed:
        if not view.online or (views is not None and view.name not in views):
            continue
        watermark = view.most_recent_end_time
        if watermark is not None and watermark >= end:
            done.append(Materialized(view.name, watermark, end, skipped=True))
            continue
        start = watermark if watermark is not None else (end - view.ttl if view.ttl else _EPOCH)
        with _quiet():
            store.materialize(start_date=start, end_date=end, feature_views=[view.name])
        done.append(Materialized(view.name, start, end, skipped=False))
    return done


def watermarks(store: FeatureStore) -> dict[str, datetime | None]:
    """View name -> the instant the online store is complete up to (None: never loaded)."""
    return {v.name: v.most_recent_end_time for v in store.list_feature_views(allow_cache=False)}


# ---------------------------------------------------------------------------------------------
# Training sets
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingSet:
    """A point-in-time correct frame and what it was read from.

    Attributes:
        frame: entity_df with the service's features appended, rows in their original order.
        service: Feature service name.
        definitions: View name -> definition hash, as registered when the set was read.
        source_versions: Source name -> Delta version read (None for Parquet sources).
        sources: View name -> source name.
    """

    frame: pl.DataFrame
    service: str
    definitions: dict[str, str]
    source_versions: dict[str, int | None]
    sources: dict[str, str]

    def lineage(self) -> dict[str, Any]:
        """JSON-able lineage: per view its definition hash, source and source version."""
        return {
            view: {
                "definition_hash": self.definitions[view],
                "source": source,
                "source_version": self.source_versions.get(source),
            }
            for view, source in self.sources.items()
        }


def training_set(store: FeatureStore, entity_df: pl.DataFrame, service_name: str) -> TrainingSet:
    """Point-in-time correct features of a feature service for each entity row.

    Goes through `FeatureStore.get_historical_features` (loopline's offline store: sorted as-of
    joins). Each row gets, per feature view, the latest feature row with event_timestamp <= the
    row's event_timestamp and not older than the view's ttl; nulls where there is none. Only
    the join keys and timestamps go through Feast; other columns pass through untouched.

    Args:
        store: An open feature store.
        entity_df: Join keys of the service's entities, event_timestamp (timezone-aware), and
            any passthrough columns.
        service_name: Feast feature service, e.g. "fraud_v2".

    Raises:
        ValueError: a join key or event_timestamp is missing or null, the timestamp is naive, or
            a feature name collides with an entity_df column.
    """
    service = store.get_feature_service(service_name)
    keys = _join_keys(store, service)
    _check_entity_df(entity_df, keys)
    request = entity_df.select(
        pl.int_range(pl.len(), dtype=pl.Int64).alias(_ROW),
        *keys,
        pl.col(TIMESTAMP).dt.convert_time_zone("UTC").dt.cast_time_unit("us"),
    )
    views = {p.name: store.get_feature_view(p.name) for p in service.feature_view_projections}
    job = store.get_historical_features(entity_df=request.to_pandas(), features=service)
    result = pl.from_arrow(job.to_arrow())
    assert isinstance(result, pl.DataFrame)
    features = [c for c in result.columns if c not in request.columns]
    clash = sorted(set(features) & set(entity_df.columns))
    if clash:
        raise ValueError(f"entity_df: column(s) {', '.join(clash)} collide with feature names")
    result = result.sort(_ROW)
    if result[_ROW].to_list() != list(range(entity_df.height)):
        raise RuntimeError("feast returned a different set of rows than it was given")
    sources = {name: view.batch_source.name for name, view in views.items()}
    versions = dict(getattr(job, "source_versions", {}) or {})
    for name in sources.values():
        versions.setdefault(name, None)
    return TrainingSet(
        frame=entity_df.hstack(result.select(features)),
        service=service_name,
        definitions={name: definition_hash(view) for name, view in views.items()},
        source_versions=versions,
        sources=sources,
    )


def training_frame(store: FeatureStore, entity_df: pl.DataFrame, service_name: str) -> pl.DataFrame:
    """`training_set(...).frame`: the point-in-time correct frame alone."""
    return training_set(store, entity_df, service_name).frame


# ---------------------------------------------------------------------------------------------
# Online reads
# ---------------------------------------------------------------------------------------------

NOT_FOUND = "_not_found"
"""Key of `online_features(..., unknown="report")` rows: the entities the store has no row for,
as "join_key=value" strings (empty when every entity was found)."""


class EntityNotFoundError(LookupError):
    """An online lookup named an entity the online store has no row for.

    Attributes:
        missing: One (row index, view, {join key: value}) per unknown entity.
    """

    def __init__(self, service: str, missing: list[tuple[int, str, dict[str, Any]]]) -> None:
        self.service = service
        self.missing = missing
        first = ", ".join(
            f"row {i}: {'/'.join(f'{k}={v}' for k, v in keys.items())} (view {view})"
            for i, view, keys in missing[:3]
        )
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        super().__init__(f"not found in the online store of service '{service}': {first}{more}")


def online_features(
    store: FeatureStore,
    rows: Sequence[Mapping[str, Any]],
    service_name: str,
    *,
    unknown: Literal["raise", "report"] = "raise",
) -> list[dict[str, Any]]:
    """Latest online features of a feature service for each row's entity keys.

    Reads Feast's online store through the store's provider, one `online_read` per view, with
    the service's views, keys and types cached until the registry cache reloads: the same
    values as `FeatureStore.get_online_features`, in less time (bench/online.py).

    An entity the online store has no row for (never seen, or never materialized) is never
    answered with silent nulls: by default the call raises `EntityNotFoundError` naming it;
    with `unknown="report"` each row carries `NOT_FOUND` (a list of "join_key=value" strings),
    the features of an unknown entity are None, and the caller decides.

    Args:
        store: An open feature store.
        rows: One mapping per request holding the service's join keys (other keys are ignored).
        service_name: Feast feature service, e.g. "fraud_v2".
        unknown: "raise" or "report", see above.

    Returns:
        One dict per row: the join keys and every feature of the service (and `NOT_FOUND` with
        "report").

    Raises:
        ValueError: a row lacks a join key or has it null; the message names the key and row.
        EntityNotFoundError: with unknown="raise", an entity is not in the online store.
    """
    if unknown not in ("raise", "report"):
        raise ValueError(f"unknown: must be 'raise' or 'report', got {unknown!r}")
    if not rows:
        return []
    plan = _online_plan(store, service_name)
    out: list[dict[str, Any]] = []
    for index, row in enumerate(rows):
        missing = [k for k in plan.keys if row.get(k) is None]
        if missing:
            raise ValueError(f"row {index}: missing or null join key(s) {', '.join(missing)}")
        out.append({k: row[k] for k in plan.keys})
    not_found: list[tuple[int, str, dict[str, Any]]] = []
    for view in plan.views:
        for i, values in enumerate(_read_online(store, view, rows)):
            if values is None:
                not_found.append((i, view.name, {k: rows[i][k] for k in view.keys}))
                out[i].update(dict.fromkeys(view.features))
            else:
                out[i].update(values)
    if unknown == "raise" and not_found:
        raise EntityNotFoundError(service_name, not_found)
    if unknown == "report":
        for row in out:
            row[NOT_FOUND] = []
        for i, _view, key_values in not_found:
            for label in (f"{k}={v}" for k, v in key_values.items()):
                if label not in out[i][NOT_FOUND]:
                    out[i][NOT_FOUND].append(label)
    return out


def _read_online(
    store: FeatureStore, view: _OnlineView, rows: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any] | None]:
    """Per row: the view's features as Python values, or None when the online store has no row
    for the entity.

    "No row" is what the online store says, not a status Feast derives: SQLite answers None,
    Redis answers empty values without a timestamp (which `get_online_features` reports as
    present nulls). A stored row always carries its event timestamp.
    """
    from feast.type_map import feast_value_type_to_python_type

    answers = store._get_provider().online_read(
        config=store.config,
        table=view.view,
        entity_keys=[view.entity_key(row) for row in rows],
        requested_features=list(view.features),  # a copy: the Redis store appends to it
    )
    out: list[dict[str, Any] | None] = []
    for stamp, data in answers:
        stored = data is not None and (
            (stamp is not None and stamp.timestamp() > 0)
            or any(v.WhichOneof("val") is not None for v in data.values())
        )
        if not stored:
            out.append(None)
            continue
        assert data is not None
        out.append(
            {
                name: None
                if data.get(name) is None
                else feast_value_type_to_python_type(data[name])
                for name in view.features
            }
        )
    return out


@dataclass(frozen=True)
class _OnlineView:
    """What an online read of one view of a service needs, resolved once."""

    name: str
    view: Any
    columns: tuple[str, ...]  # the view's join keys, as the online store keys its rows
    keys: tuple[str, ...]  # where the request holds them (differ under a join key map)
    value_types: tuple[Any, ...]
    features: tuple[str, ...]

    def entity_key(self, row: Mapping[str, Any]) -> Any:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
        from feast.type_map import python_values_to_proto_values

        values = [
            python_values_to_proto_values([row[k]], t)[0]
            for k, t in zip(self.keys, self.value_types, strict=True)
        ]
        return EntityKeyProto(join_keys=list(self.columns), entity_values=values)


@dataclass(frozen=True)
class _OnlinePlan:
    keys: list[str]
    views: list[_OnlineView]


def _online_plan(store: FeatureStore, service_name: str) -> _OnlinePlan:
    """The service's views, join keys and key types, reused until the store's registry cache
    is reloaded (rebuilding them from the registry protos costs more than the read itself)."""

    def token() -> tuple[int, Any]:
        registry = store.registry
        proto = getattr(registry, "cached_registry_proto", None)
        return id(proto), getattr(registry, "cached_registry_proto_created", None)

    per_store = _SERVICE_CACHE.setdefault(store, {})
    hit = per_store.get(service_name)
    if hit is not None and hit[0] == token() and hit[0][1] is not None:
        return hit[1]
    service = store.get_feature_service(service_name, allow_cache=True)
    views = []
    for projection in service.feature_view_projections:
        view = store.get_feature_view(projection.name, allow_registry_cache=True)
        types = {c.name: c.dtype.to_value_type() for c in view.entity_columns}
        if projection.join_key_map:
            pairs = list(projection.join_key_map.items())  # view column -> request key
        else:
            pairs = [(c.name, c.name) for c in view.entity_columns]
        views.append(
            _OnlineView(
                name=projection.name_to_use(),
                view=view,
                columns=tuple(column for column, _ in pairs),
                keys=tuple(request for _, request in pairs),
                value_types=tuple(types[column] for column, _ in pairs),
                features=tuple(f.name for f in projection.features),
            )
        )
    keys = list(dict.fromkeys(k for v in views for k in v.keys))
    plan = _OnlinePlan(keys=keys, views=views)
    per_store[service_name] = (token(), plan)
    return plan


def _join_keys_of(store: FeatureStore, projection: Any, allow_cache: bool = False) -> list[str]:
    if projection.join_key_map:
        return list(projection.join_key_map.values())
    view = store.get_feature_view(projection.name, allow_registry_cache=allow_cache)
    return [column.name for column in view.entity_columns]


def _join_keys(
    store: FeatureStore, service: FeatureService, allow_cache: bool = False
) -> list[str]:
    """Join keys of every view of a service, in order, without duplicates."""
    keys: list[str] = []
    for projection in service.feature_view_projections:
        names = _join_keys_of(store, projection, allow_cache)
        keys.extend(name for name in names if name not in keys)
    return keys


# ---------------------------------------------------------------------------------------------
# Freshness and skew
# ---------------------------------------------------------------------------------------------


def freshness(store: FeatureStore, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """Per feature view: how far the online store and the offline table are behind.

    Returns:
        One dict per view: view, online (bool), watermark (the online store is complete up to
        it, ISO or None), lag_s (now - watermark), source, source_version and source_watermark
        (for Delta sources written by loopline: the newest table version and the instant its
        rows are complete up to), pending_s (source_watermark - watermark: rows built but not
        yet served).
    """
    from feast.data_format import DeltaFormat

    from loopline.features import delta_tables

    now = now or datetime.now(UTC)
    out: list[dict[str, Any]] = []
    for view in sorted(store.list_feature_views(allow_cache=False), key=lambda v: v.name):
        watermark = view.most_recent_end_time
        source = view.batch_source
        table = None
        if source is not None and isinstance(getattr(source, "file_format", None), DeltaFormat):
            table = delta_tables.state(source.path)
        built = table.watermark if table else None
        out.append(
            {
                "view": view.name,
                "online": view.online,
                "watermark": watermark.isoformat() if watermark else None,
                "lag_s": (now - watermark).total_seconds() if watermark else None,
                "source": source.name if source is not None else None,
                "source_version": table.version if table else None,
                "source_watermark": built.isoformat() if built else None,
                "pending_s": (built - watermark).total_seconds() if built and watermark else None,
            }
        )
    return out


@dataclass
class SkewReport:
    """Online values against offline point-in-time values for sampled entities.

    Attributes:
        service: The feature service checked.
        at: Per view, the instant compared (the view's materialization watermark).
        entities: Per view, the number of entities sampled.
        features: Per feature: compared, mismatches and up to three examples
            ({keys, online, offline}).
        not_found_online: Per view, sampled entities with an offline value but no online row.
    """

    service: str
    at: dict[str, str | None]
    entities: dict[str, int]
    features: dict[str, dict[str, Any]]
    not_found_online: dict[str, int]

    @property
    def mismatches(self) -> int:
        """Mismatching values over all features."""
        return sum(f["mismatches"] for f in self.features.values())

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "service": self.service,
            "at": self.at,
            "entities": self.entities,
            "mismatches": self.mismatches,
            "not_found_online": self.not_found_online,
            "features": self.features,
        }


def skew_report(
    store: FeatureStore, service_name: str, *, sample: int = 200, seed: int = 0
) -> SkewReport:
    """Compare online values with offline values at the same timestamp for sampled entities.

    For each view of the service: sample up to `sample` entities that have a row in the source
    table at or before the view's materialization watermark, read their online values, compute
    their point-in-time values at the watermark from the offline store, and count per feature
    the values that differ (nulls equal nulls; floats must be equal bit for bit, since both
    paths carry the same stored value).

    Raises:
        ValueError: `sample` < 1, or the service has a view that was never materialized.
    """
    from loopline.features.offline_store import read_source

    if sample < 1:
        raise ValueError(f"sample: must be >= 1, got {sample}")
    plan = _online_plan(store, service_name)
    report = SkewReport(service_name, {}, {}, {}, {})
    for online_view in plan.views:
        view = online_view.view
        names = online_view.features
        at = view.most_recent_end_time
        report.at[view.name] = at.isoformat() if at else None
        if at is None:
            raise ValueError(f"view '{view.name}' was never materialized: nothing to compare")
        columns = list(online_view.columns)
        assert view.batch_source is not None
        ts = view.batch_source.timestamp_field
        table = read_source(view.batch_source, [*columns, ts]).frame
        candidates = table.filter(pl.col(ts) <= at).select(columns).unique()
        chosen = candidates.sort(columns).sample(n=min(sample, candidates.height), seed=seed)
        chosen = chosen.rename(dict(zip(columns, online_view.keys, strict=True)))
        report.entities[view.name] = chosen.height
        if chosen.is_empty():
            continue
        entity_rows = chosen.to_dicts()
        online = _read_online(store, online_view, entity_rows)
        entity_df = chosen.with_columns(pl.lit(at).dt.cast_time_unit("us").alias(TIMESTAMP))
        job = store.get_historical_features(
            entity_df=entity_df.to_pandas(), features=[f"{view.name}:{n}" for n in names]
        )
        offline = pl.from_arrow(job.to_arrow())
        assert isinstance(offline, pl.DataFrame)
        keys = list(online_view.keys)
        offline = chosen.join(offline, on=keys, how="left", maintain_order="left")
        has_offline = offline.select(pl.any_horizontal(pl.col(names).is_not_null())).to_series()
        report.not_found_online[view.name] = sum(
            1 for row, o in zip(online, has_offline.to_list(), strict=True) if o and row is None
        )
        for name in names:
            left = [None if row is None else row[name] for row in online]
            right = offline[name].to_list()
            bad = [i for i, (a, b) in enumerate(zip(left, right, strict=True)) if a != b]
            report.features[name] = {
                "view": view.name,
                "compared": len(left),
                "mismatches": len(bad),
                "examples": [
                    {
                        "keys": {k: entity_rows[i][k] for k in keys},
                        "online": left[i],
                        "offline": right[i],
                    }
                    for i in bad[:3]
                ],
            }
    return report


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _check_entity_df(entity_df: pl.DataFrame, keys: list[str]) -> None:
    missing = [c for c in (*keys, TIMESTAMP) if c not in entity_df.columns]
    if missing:
        raise ValueError(f"entity_df: missing column(s) {', '.join(missing)}")
    if _ROW in entity_df.columns:
        raise ValueError(f"entity_df: column name {_ROW} is reserved")
    dtype = entity_df.schema[TIMESTAMP]
    if not isinstance(dtype, pl.Datetime) or dtype.time_zone is None:
        raise ValueError(f"{TIMESTAMP}: must be a timezone-aware datetime (UTC), got {dtype}")
    for column in (*keys, TIMESTAMP):
        nulls = entity_df[column].null_count()
        if nulls:
            raise ValueError(f"{column}: must not be null ({nulls} null value(s))")


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name}: must be timezone-aware (UTC), got a naive datetime")


@contextlib.contextmanager
def _quiet() -> Any:
    """Keep Feast's progress prints (materialize, apply) out of our stdout; log them instead."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        yield
    text = sink.getvalue().strip()
    if text:
        log.debug("feast: %s", text)


def _online_store_is_new(store: FeatureStore) -> bool:
    config = store.config.online_store
    if getattr(config, "type", None) != "sqlite":
        return False
    path = Path(config.path)
    if not path.is_absolute():
        path = Path(store.repo_path) / path
    return not path.exists()


def _load_declarations(repo_root: Path) -> Any:
    """Import each declaration file of the repo afresh and collect its Feast objects.

    Fresh imports (not cached in sys.modules) re-read LOOPLINE_HOME each time, so a process that
    opens stores of several homes applies each one's own paths.
    """
    from feast import Entity, FeatureService, FeatureView, OnDemandFeatureView
    from feast.data_source import DataSource
    from feast.feature_view import DUMMY_ENTITY
    from feast.repo_contents import RepoContents
    from feast.repo_operations import get_repo_files
    from feast.stream_feature_view import StreamFeatureView

    found: list[Any] = []
    for index, file in enumerate(get_repo_files(repo_root)):
        spec = importlib.util.spec_from_file_location(f"_loopline_feature_repo_{index}", file)
        if spec is None or spec.loader is None:
            raise ImportError(f"feature_repo: cannot import {file}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for value in vars(module).values():
            if not any(value is seen for seen in found):
                found.append(value)

    def of(kind: type, exclude: tuple[type, ...] = ()) -> list[Any]:
        return [o for o in found if isinstance(o, kind) and not isinstance(o, exclude)]

    views = of(FeatureView, exclude=(StreamFeatureView,))
    sources = of(DataSource)
    for view in views:
        if view.batch_source is not None and not any(view.batch_source is s for s in sources):
            sources.append(view.batch_source)
    for source in sources:
        path = getattr(source, "path", "")
        if "$" in path or (path and "://" not in path and not Path(path).is_absolute()):
            raise ValueError(f"feature_repo: source '{source.name}' path is not absolute: {path}")
    return RepoContents(
        projects=[],
        data_sources=sources,
        feature_views=views,
        on_demand_feature_views=of(OnDemandFeatureView),
        stream_feature_views=of(StreamFeatureView),
        label_views=[],
        entities=[*of(Entity), DUMMY_ENTITY],
        feature_services=of(FeatureService),
        permissions=[],
    )
