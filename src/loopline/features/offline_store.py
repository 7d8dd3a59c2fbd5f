"""loopline's Feast offline store: Feast's DuckDB offline store with Polars point-in-time joins.

Configured in `feature_store.yaml` as

    offline_store:
      type: loopline.features.offline_store.LooplineOfflineStore

it answers `FeatureStore.get_historical_features` and the reads behind `materialize` for file
sources (Parquet files and Delta tables). Everything else (writes, logging, monitoring) is
Feast's DuckDB offline store, which this class extends.

Why: Feast's DuckDB store joins every entity row with every feature row of its entity, then
ranks them; at 1M entity rows against a 10M-row table that is hundreds of millions of pairs.
Here each view is one sorted as-of join on the join keys and the timestamp (Polars
`join_asof`, backward, with the view's ttl as tolerance), done on the keys alone; the feature
columns are then gathered by row index. The semantics are Feast's: per entity row and view, the
latest feature row with timestamp <= the entity row's timestamp and >= that timestamp minus the
ttl (no bound without a ttl); among rows with equal timestamps the newest created timestamp wins
(the source's `created_timestamp_column`, else the later row in the table); no match gives nulls.
Rows keep the order of the entity frame. Delta sources are read at their newest version and the
version read is reported in `job.source_versions`, so callers can record exactly what they saw.

On-demand feature views are not computed here: a request naming one is handed to the DuckDB
implementation unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pandas as pd
import polars as pl
import pyarrow as pa
from feast.data_format import DeltaFormat
from feast.data_source import DataSource
from feast.feature_view import FeatureView
from feast.infra.offline_stores.duckdb import DuckDBOfflineStore
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.registry.base_registry import BaseRegistry
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import FeastConfigBaseModel, RepoConfig
from pydantic import StrictStr

from loopline.features import delta_tables

TYPE_NAME = "loopline.features.offline_store.LooplineOfflineStore"
_ROW = "__loopline_pit_row"
_MATCH = "__loopline_pit_match"


class LooplineOfflineStoreConfig(FeastConfigBaseModel):
    """Offline store settings (those of Feast's DuckDB store)."""

    type: Literal["loopline.features.offline_store.LooplineOfflineStore"] = TYPE_NAME
    staging_location: StrictStr | None = None
    staging_location_endpoint_override: StrictStr | None = None


_PINNED: ContextVar[Mapping[str, int] | None] = ContextVar("loopline_pinned_sources", default=None)


@contextmanager
def pinned_sources(versions: Mapping[str, int | None]) -> Iterator[None]:
    """Read the named Delta sources at the given versions (not their newest) in this context.

    `loopline reproduce` rebuilds a training set exactly as a past run read it.
    """
    token = _PINNED.set({name: v for name, v in versions.items() if v is not None})
    try:
        yield
    finally:
        _PINNED.reset(token)


class SourceFrame:
    """A source read into Polars, with the Delta version it came from (None for Parquet)."""

    def __init__(self, frame: pl.DataFrame, version: int | None) -> None:
        self.frame = frame
        self.version = version


def read_source(source: DataSource, columns: Sequence[str]) -> SourceFrame:
    """Columns of a file source (Parquet file or Delta table), source names mapped to features.

    Raises:
        TypeError: the source is not a FileSource.
        FileNotFoundError: the table or file does not exist.
    """
    if not isinstance(source, FileSource):
        raise TypeError(f"source '{source.name}': only file sources are supported here")
    mapping = dict(source.field_mapping or {})
    reverse = {feature: column for column, feature in mapping.items()}
    wanted = list(dict.fromkeys(reverse.get(c, c) for c in columns))
    path = source.path
    version: int | None = None
    if isinstance(source.file_format, DeltaFormat):
        info = delta_tables.state(path)
        if info is None:
            raise FileNotFoundError(f"source '{source.name}': no Delta table at {path}")
        version = (_PINNED.get() or {}).get(source.name, info.version)
        frame = delta_tables.read(path, version=version, columns=wanted)
    else:
        frame = pl.read_parquet(path, columns=wanted)
    if mapping:
        frame = frame.rename({c: f for c, f in mapping.items() if c in frame.columns})
    return SourceFrame(frame, version)


class PolarsRetrievalJob(RetrievalJob):
    """A retrieval computed with Polars on first use, kept as an Arrow table."""

    def __init__(
        self,
        compute: Any,
        *,
        full_feature_names: bool = False,
        metadata: RetrievalMetadata | None = None,
    ) -> None:
        super().__init__()
        self._compute = compute
        self._table: pa.Table | None = None
        self._full_feature_names = full_feature_names
        self._metadata = metadata
        self.source_versions: dict[str, int | None] = {}

    def _result(self) -> pa.Table:
        if self._table is None:
            frame, versions = self._compute()
            self.source_versions = versions
            self._table = frame.to_arrow()
        return self._table

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        return self._result().to_pandas()

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        return self._result()

    @property
    def full_feature_names(self) -> bool:
        return self._full_feature_names

    @property
    def on_demand_feature_views(self) -> list[OnDemandFeatureView]:
        return []

    @property
    def metadata(self) -> RetrievalMetadata | None:
        return self._metadata

    def persist(self, storage: Any, allow_overwrite: bool = False, timeout: int | None = None):
        """Write the result as Parquet to a saved-dataset file storage."""
        path = storage.to_data_source().path
        pl.from_arrow(self._result()).write_parquet(path)  # type: ignore[union-attr]


class LooplineOfflineStore(DuckDBOfflineStore):
    """Feast's DuckDB offline store with Polars as-of joins for file sources."""

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: pd.DataFrame | str,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
    ) -> RetrievalJob:
        odfvs = OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry)
        if odfvs or isinstance(entity_df, str) or filter_by_created_timestamp:
            return DuckDBOfflineStore.get_historical_features(
                config, feature_views, feature_refs, entity_df, registry, project,
                full_feature_names, filter_by_created_timestamp,
            )  # fmt: skip
        assert isinstance(entity_df, pd.DataFrame)
        entity = pl.from_pandas(entity_df)
        timestamp = _entity_timestamp(entity)
        entity = entity.with_columns(_utc(entity, timestamp))
        low, high = entity[timestamp].min(), entity[timestamp].max()
        metadata = RetrievalMetadata(
            features=feature_refs,
            keys=[c for c in entity.columns if c != timestamp],
            min_event_timestamp=low,  # type: ignore[arg-type]
            max_event_timestamp=high,  # type: ignore[arg-type]
        )

        def compute() -> tuple[pl.DataFrame, dict[str, int | None]]:
            return point_in_time_join(
                entity, feature_views, feature_refs, timestamp=timestamp,
                full_feature_names=full_feature_names,
            )  # fmt: skip

        return PolarsRetrievalJob(compute, full_feature_names=full_feature_names, metadata=metadata)

    @staticmethod
    def pull_latest_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None,
        start_date: datetime,
        end_date: datetime,
    ) -> RetrievalJob:
        if not isinstance(data_source, FileSource):
            return DuckDBOfflineStore.pull_latest_from_table_or_query(
                config, data_source, join_key_columns, feature_name_columns, timestamp_field,
                created_timestamp_column, start_date, end_date,
            )  # fmt: skip
        extra = [created_timestamp_column] if created_timestamp_column else []

        def compute() -> tuple[pl.DataFrame, dict[str, int | None]]:
            columns = [*join_key_columns, *feature_name_columns, timestamp_field, *extra]
            read = read_source(data_source, columns)
            rows = _in_range(read.frame, timestamp_field, start_date, end_date)
            order = [*join_key_columns, timestamp_field, *extra]
            latest = (
                rows.sort(order, maintain_order=True)
                .group_by(join_key_columns, maintain_order=True)
                .last()
            )
            return latest.select(columns), {data_source.name: read.version}

        return PolarsRetrievalJob(compute)

    @staticmethod
    def pull_all_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None = None,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
    ) -> RetrievalJob:
        if not isinstance(data_source, FileSource):
            return DuckDBOfflineStore.pull_all_from_table_or_query(
                config, data_source, join_key_columns, feature_name_columns, timestamp_field,
                created_timestamp_column, start_date, end_date,
            )  # fmt: skip
        extra = [created_timestamp_column] if created_timestamp_column else []

        def compute() -> tuple[pl.DataFrame, dict[str, int | None]]:
            columns = [*join_key_columns, *feature_name_columns, timestamp_field, *extra]
            read = read_source(data_source, columns)
            rows = _in_range(read.frame, timestamp_field, start_date, end_date)
            return rows.select(columns), {data_source.name: read.version}

        return PolarsRetrievalJob(compute)


def point_in_time_join(
    entity: pl.DataFrame,
    feature_views: Sequence[FeatureView],
    feature_refs: Sequence[str],
    *,
    timestamp: str,
    full_feature_names: bool = False,
) -> tuple[pl.DataFrame, dict[str, int | None]]:
    """The entity frame with each requested feature, point-in-time correct (see module doc).

    Args:
        entity: Entity rows: join keys and a timezone-aware `timestamp`, other columns pass.
        feature_views: The views the refs name.
        feature_refs: "view:feature" references, in output order.
        timestamp: The entity frame's event timestamp column.
        full_feature_names: Name outputs "view__feature" instead of "feature".

    Returns:
        (entity columns + features, rows in entity order; source name -> version read).

    Raises:
        ValueError: a join key is missing from the entity frame or a feature name collides.
    """
    rows = entity.with_row_index(_ROW)
    versions: dict[str, int | None] = {}
    outputs: list[pl.Series] = []
    for view in feature_views:
        prefix = view.projection.name_to_use()
        wanted = [ref.split(":", 1)[1] for ref in feature_refs if ref.split(":", 1)[0] == prefix]
        if not wanted:
            continue
        keys = view.projection.join_key_map or {c.name: c.name for c in view.entity_columns}
        missing = [v for v in keys.values() if v not in entity.columns]
        if missing:
            raise ValueError(
                f"entity_df: missing join key(s) {', '.join(missing)} of view '{view.name}'"
            )
        source = view.batch_source
        assert source is not None
        created = source.created_timestamp_column or None
        ts = source.timestamp_field
        read = read_source(source, [*keys, ts, *([created] if created else []), *wanted])
        versions[source.name] = read.version
        table = read.frame
        for column in (ts, *([created] if created else [])):
            table = table.with_columns(_utc(table, column))
        if table.is_empty():
            found = pl.DataFrame({n: pl.Series([None] * rows.height, dtype=table.schema[n])
                                  for n in wanted})  # fmt: skip
            index = pl.Series([None] * rows.height, dtype=pl.UInt32)
        else:
            index = _match(rows, table, keys, ts, created, timestamp, view.ttl)
            found = table.select(wanted)[index.fill_null(0)]
        for name in wanted:
            column = found[name]
            column = pl.select(pl.when(index.is_not_null()).then(column)).to_series()
            out = (
                f"{view.projection.name_alias or view.name}__{name}" if full_feature_names else name
            )
            outputs.append(column.alias(out))
    names = [s.name for s in outputs]
    clash = sorted({n for n in names if names.count(n) > 1} | (set(names) & set(entity.columns)))
    if clash:
        raise ValueError(f"feature name(s) {', '.join(clash)} collide (use full feature names)")
    return entity.hstack(outputs), versions


def _match(
    rows: pl.DataFrame,
    table: pl.DataFrame,
    keys: Mapping[str, str],
    ts: str,
    created: str | None,
    timestamp: str,
    ttl: timedelta | None,
) -> pl.Series:
    """Per entity row (in order), the index of its feature row in `table`, or null."""
    right_keys = list(keys)
    left_keys = list(keys.values())
    order = [*right_keys, ts, *([created] if created else [])]
    right = table.select(order).with_row_index(_MATCH)
    right = right.sort(order, maintain_order=True)  # cheap when the table is already sorted
    left = rows.select(_ROW, *left_keys, timestamp).sort([*left_keys, timestamp])
    right = right.rename({ts: "__loopline_ts"})
    casts = {r: left.schema[lft] for r, lft in keys.items() if right.schema[r] != left.schema[lft]}
    if casts:
        right = right.with_columns(pl.col(r).cast(t) for r, t in casts.items())
    matched = left.join_asof(
        right.select(_MATCH, *right_keys, "__loopline_ts"),
        left_on=timestamp,
        right_on="__loopline_ts",
        by_left=left_keys,
        by_right=right_keys,
        strategy="backward",
        tolerance=ttl if ttl else None,
        check_sortedness=False,  # sorted by (keys, time): sorted within every group
    )
    return matched.sort(_ROW)[_MATCH]


def _entity_timestamp(entity: pl.DataFrame) -> str:
    if "event_timestamp" in entity.columns:
        return "event_timestamp"
    found = [n for n, t in entity.schema.items() if isinstance(t, pl.Datetime)]
    if len(found) != 1:
        raise ValueError(
            "entity_df: needs an 'event_timestamp' column or exactly one datetime column, "
            f"found {found or 'none'}"
        )
    return found[0]


def _utc(frame: pl.DataFrame, column: str) -> pl.Expr:
    """A timestamp column as datetime[us, UTC] (naive values are taken as UTC, as Feast does)."""
    dtype = frame.schema[column]
    expr = pl.col(column)
    if not isinstance(dtype, pl.Datetime):
        raise ValueError(f"{column}: must be a datetime column, got {dtype}")
    if dtype.time_zone is None:
        expr = expr.dt.replace_time_zone("UTC")
    return expr.dt.convert_time_zone("UTC").dt.cast_time_unit("us")


def _in_range(
    frame: pl.DataFrame, ts: str, start: datetime | None, end: datetime | None
) -> pl.DataFrame:
    frame = frame.with_columns(_utc(frame, ts))
    keep = pl.lit(True)
    if start is not None:
        keep &= pl.col(ts) >= _aware(start)
    if end is not None:
        keep &= pl.col(ts) <= _aware(end)
    return frame.filter(keep)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
