"""Feast helpers: open the store, publish feature tables, apply, materialize, read features.

The feature repository (`feature_repo/`) holds the declarations; this module is the only code that
talks to Feast. `SERVICES` lists, per feature service, which features its views carry and which
ratios are derived from them: `loopline.features.transform` reads it to build model inputs, so a
new use case adds a service here and declarations in the repo, not code in the transform.

Feast is imported inside the functions: importing it takes seconds, and `transform` (imported by
the API and by training) needs only the `SERVICES` data.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from loopline.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore

TIMESTAMP = "event_timestamp"
_ROW = "__loopline_row"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SERVICE_CACHE: weakref.WeakKeyDictionary[Any, dict[str, tuple]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Ratio:
    """A derived model input: numerator / denominator, NaN when either is missing or it is 0."""

    name: str
    numerator: str
    denominator: str


@dataclass(frozen=True)
class ServiceLayout:
    """The features a Feast feature service returns, in model-input order, plus derived ratios."""

    views: Mapping[str, tuple[str, ...]]
    derived: tuple[Ratio, ...] = field(default=())

    @property
    def features(self) -> list[str]:
        """Feast feature names in a fixed order: views in declaration order, then their fields."""
        return [name for names in self.views.values() for name in names]


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
}


def service_layout(service_name: str) -> ServiceLayout:
    """The declared layout of a feature service.

    Raises:
        ValueError: no layout is declared for that service.
    """
    try:
        return SERVICES[service_name]
    except KeyError:
        known = ", ".join(sorted(SERVICES))
        raise ValueError(
            f"features.service: no layout declared for '{service_name}' in "
            f"loopline.features.feast_ops.SERVICES (known: {known})"
        ) from None


def open_store(settings: Settings) -> FeatureStore:
    """Open the Feast store of `settings.feature_repo` with its paths under `settings.home`.

    Sets LOOPLINE_HOME in the process environment (the variable `Settings` itself reads), since
    Feast expands `${LOOPLINE_HOME}` in feature_store.yaml when it loads it and the declarations
    resolve their source paths from it; creates the folder of the registry and online store.

    Raises:
        FileNotFoundError: the feature repo has no feature_store.yaml.
    """
    yaml_path = settings.feature_repo / "feature_store.yaml"
    if not yaml_path.is_file():
        raise FileNotFoundError(f"feature_repo: no feature_store.yaml in {settings.feature_repo}")
    os.environ.update(settings.feast_env())
    settings.feast_dir.mkdir(parents=True, exist_ok=True)

    from feast import FeatureStore

    return FeatureStore(repo_path=str(settings.feature_repo))


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


def apply_repo(store: FeatureStore) -> None:
    """Register the repo's declarations and create their online tables; idempotent.

    The programmatic `feast apply`: loads every declaration file (honouring `.feastignore`) afresh,
    applies all objects, and deletes registry objects no longer declared. Unlike `feast apply`,
    it always passes every view to the online store, so tables dropped by a teardown or a deleted
    online store are recreated. When the SQLite online store file is missing, the registry's
    materialization watermarks are forgotten too, so the next `materialize` refills the store.
    """
    from feast.feature_view import DUMMY_ENTITY_NAME
    from feast.repo_operations import extract_objects_for_apply_delete

    repo = _load_declarations(Path(store.repo_path))
    project = store.project
    objects = [
        *repo.data_sources,
        *(e for e in repo.entities if e.name != DUMMY_ENTITY_NAME),
        *repo.feature_views,
        *repo.on_demand_feature_views,
        *repo.stream_feature_views,
        *repo.feature_services,
    ]
    if _online_store_is_new(store):
        # Watermarks describe what the online store holds, and a new store holds nothing. The
        # deletion is committed: an uncommitted change is dropped when Feast re-reads the file.
        for view in store.registry.list_feature_views(project, allow_cache=False):
            if view.materialization_intervals:
                store.registry.delete_feature_view(view.name, project, commit=True)
    _, to_delete, _, _ = extract_objects_for_apply_delete(project, store.registry, repo)
    store.apply(objects, objects_to_delete=list(to_delete), partial=False)


def materialize(store: FeatureStore, *, end: datetime) -> None:
    """Load feature rows up to `end` into the online store, from each view's watermark.

    A view never materialized starts at `end - ttl` (older rows are expired anyway). Feast
    advances a view's watermark only after its write finished, so a failed run is retried from
    the old watermark. A view whose watermark is already at or past `end` is left alone.

    Raises:
        ValueError: `end` is naive.
    """
    _require_aware(end, "end")
    for view in store.list_feature_views(allow_cache=False):
        if not view.online:
            continue
        watermark = view.most_recent_end_time
        if watermark is None:
            start = end - view.ttl if view.ttl else _EPOCH
            store.materialize(start_date=start, end_date=end, feature_views=[view.name])
        elif end > watermark:
            store.materialize_incremental(end_date=end, feature_views=[view.name])


def training_frame(store: FeatureStore, entity_df: pl.DataFrame, service_name: str) -> pl.DataFrame:
    """Point-in-time correct features of a feature service for each entity row.

    Each row gets, per feature view, the latest feature row with event_timestamp <= the row's
    event_timestamp and not older than the view's ttl; nulls where there is none. Only the join
    keys and timestamps go through Feast; other columns pass through untouched.

    Args:
        store: An open feature store.
        entity_df: Join keys of the service's entities, event_timestamp (timezone-aware), and
            any passthrough columns.
        service_name: Feast feature service, e.g. "fraud_v1".

    Returns:
        entity_df with the service's features appended, rows in their original order.

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
    return entity_df.hstack(result.select(features))


def online_features(
    store: FeatureStore, rows: Sequence[Mapping[str, Any]], service_name: str
) -> list[dict[str, Any]]:
    """Latest online features of a feature service for each row's entity keys.

    Args:
        store: An open feature store.
        rows: One mapping per request holding the service's join keys (other keys are ignored).
        service_name: Feast feature service, e.g. "fraud_v1".

    Returns:
        One dict per row: the join keys and every feature of the service (None when unknown).

    Raises:
        ValueError: a row lacks a join key or has it null; the message names the key and row.
    """
    if not rows:
        return []
    service, keys = _cached_service(store, service_name)
    entity_rows = []
    for index, row in enumerate(rows):
        missing = [k for k in keys if row.get(k) is None]
        if missing:
            raise ValueError(f"row {index}: missing or null join key(s) {', '.join(missing)}")
        entity_rows.append({k: row[k] for k in keys})
    columns = store.get_online_features(features=service, entity_rows=entity_rows).to_dict()
    return [{name: values[i] for name, values in columns.items()} for i in range(len(rows))]


def _cached_service(store: FeatureStore, service_name: str) -> tuple[FeatureService, list[str]]:
    """The service and its join keys, reused until the store's registry cache is reloaded.

    Rebuilding them from the registry protos costs ~1.5 ms, several times the online read itself.
    """

    def token() -> tuple[int, Any]:
        registry = store.registry
        proto = getattr(registry, "cached_registry_proto", None)
        return id(proto), getattr(registry, "cached_registry_proto_created", None)

    per_store = _SERVICE_CACHE.setdefault(store, {})
    hit = per_store.get(service_name)
    if hit is not None and hit[0] == token() and hit[0][1] is not None:
        return hit[1], hit[2]
    service = store.get_feature_service(service_name, allow_cache=True)
    keys = _join_keys(store, service, allow_cache=True)
    per_store[service_name] = (token(), service, keys)
    return service, keys


def _join_keys(
    store: FeatureStore, service: FeatureService, allow_cache: bool = False
) -> list[str]:
    """Join keys of every view of a service, in order, without duplicates."""
    keys: list[str] = []
    for projection in service.feature_view_projections:
        if projection.join_key_map:
            names = list(projection.join_key_map.values())
        else:
            view = store.get_feature_view(projection.name, allow_registry_cache=allow_cache)
            names = [column.name for column in view.entity_columns]
        keys.extend(name for name in names if name not in keys)
    return keys


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
