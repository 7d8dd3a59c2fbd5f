"""The score stage: a file or a lake table of events scored by a registered model version.

Features come point in time from the offline store through Feast, exactly as training builds
its set (`feast_ops.training_set` over the version's own feature service), then through the one
shared transform (`transform.model_inputs` / `to_numpy`), then through the booster loaded by
the registry's verified path (`registry.package.load_version`). The scores land as one new
version of a versioned Delta predictions table (default `<use case>_scores`, under
`<lake>/scores/`), one row per input row, with lineage columns: model name, version and version
id, feature service, the input table and its version or the input file's sha256, the scoring
run. The run (kind `score`) and the output's dataset version are committed together; a run
that fails after its Delta commit restores the table's previous content (as a restore version
of its own), so readers never see scores without their record.

Everything that can be wrong with the input (a missing or unreadable file, an unknown table or
version, an unknown model, alias or version, events lacking a contract column or an entity key,
a wrong type, a null key) is found before the run opens: it raises `StageError` with one line
naming the field, and nothing is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from loopline.data.versions import get_version, latest_version
from loopline.lake import tables
from loopline.registry import models as registry
from loopline.settings import Settings
from loopline.spec import UseCaseSpec
from loopline.stages.common import Context, StageError, open_context
from loopline.store.tables import DatasetVersion, new_id

Progress = Callable[[str, int, int], None]
"""Progress callback: (phase, done, total); phases read, features, score, write."""

SCORES_DIR = "scores"
"""Folder under the lake holding predictions tables (apart from the curated tables)."""

CHUNK_ROWS = 250_000
"""Rows scored per chunk: each chunk's Parquet file is written while the next is scored."""

_SOURCE = re.compile(r"^(?P<name>[a-z][a-z0-9_]{0,62})(?:@(?P<version>\d+))?$")
LINEAGE_COLUMNS = (
    "model_name",
    "model_version",
    "model_version_id",
    "feature_service",
    "input_table",
    "input_version",
    "input_sha256",
    "score_run_id",
)


@dataclass(frozen=True)
class ScoreInput:
    """The events to score and where they came from.

    Attributes:
        events: The rows, in the contract's columns and types.
        table: Input dataset name (None for a file).
        version: Input table version (None for a file).
        path: Input file (None for a table).
        sha256: Hex sha256 of the input file's bytes (None for a table).
    """

    events: pl.DataFrame
    table: str | None = None
    version: int | None = None
    path: str | None = None
    sha256: str | None = None

    def describe(self) -> dict[str, Any]:
        """JSON-able description for the run record."""
        if self.table is not None:
            return {"table": self.table, "version": self.version, "rows": self.events.height}
        return {"file": self.path, "sha256": self.sha256, "rows": self.events.height}


@dataclass(frozen=True)
class ScoreResult:
    """What a scoring run wrote.

    Attributes:
        run_id: The `score` run.
        table: Predictions table name; table_version: the version written; uri: its location.
        rows: Rows scored (one per input row).
        model_name, model_version, model_version_id: The version that scored.
        feature_service: The feature service its features came from.
        source: The input (table and version, or file and sha256).
        dataset_version_id: The output's dataset version row.
        feature_views: Per view its definition hash, source and source version read.
        seconds: Wall time per phase (read, features, score_write) and in total.
    """

    run_id: str
    table: str
    table_version: int
    uri: str
    rows: int
    model_name: str
    model_version: int
    model_version_id: str
    feature_service: str
    source: dict[str, Any]
    dataset_version_id: str
    feature_views: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (the CLI's `--json`, the flow's result)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ScoringModel:
    """A registered version ready to score: its booster and the lineage it stamps on rows."""

    booster: Any
    name: str
    version: int
    version_id: str
    feature_service: str
    inputs: tuple[str, ...]
    spec: UseCaseSpec


# --- resolving the inputs --------------------------------------------------------------------


def model_reference(spec: UseCaseSpec, model_ref: str | int | None) -> str:
    """`NAME@ALIAS` / `NAME@VERSION` for what the user named (default: the spec's champion).

    A bare number is a version and a bare word an alias of the spec's model.
    """
    if model_ref is None:
        return f"{spec.model_name}@{registry.CHAMPION}"
    if isinstance(model_ref, int) and not isinstance(model_ref, bool):
        return f"{spec.model_name}@{model_ref}"
    text = str(model_ref).strip()
    if not text:
        raise StageError("model: must be NAME@ALIAS, NAME@VERSION or a version number, got ''")
    return text if "@" in text else f"{spec.model_name}@{text}"


def load_scoring_model(ctx: Context, model_ref: str | int | None) -> ScoringModel:
    """The version a reference names, loaded through the registry's verified path.

    Raises:
        StageError: no such model, version or alias; a refused package; inputs that differ
            from the feature service's.
    """
    from loopline.features import transform
    from loopline.registry.package import load_version
    from loopline.stages.evaluate import _spec_for_service

    ref = model_reference(ctx.spec, model_ref)
    try:
        with ctx.store.reader() as session:
            version = registry.resolve_ref(session, ref)
            session.expunge(version)
        verified = load_version(ctx.store, ctx.artifacts, version, actor="score")
    except registry.RegistryError as exc:
        raise StageError(f"model: {exc}") from exc
    served = _spec_for_service(ctx.spec, version.feature_service)
    inputs = tuple((version.feature_names or {}).get("inputs", []))
    try:
        expected = tuple(transform.feature_names(served, version.feature_service))
    except ValueError as exc:
        raise StageError(f"model: {exc}") from exc
    if inputs and inputs != expected:
        raise StageError(
            f"model: {version.model_name}@{version.version} takes inputs {list(inputs)}, "
            f"its feature service '{version.feature_service}' gives {list(expected)}"
        )
    return ScoringModel(
        booster=verified.booster,
        name=version.model_name,
        version=version.version,
        version_id=version.id,
        feature_service=version.feature_service,
        inputs=expected,
        spec=served,
    )


def _is_file(source: str | Path) -> bool:
    from loopline.data.contracts import READERS

    text = str(source)
    if isinstance(source, Path) or "/" in text or Path(text).is_file():
        return True
    return Path(text).suffix.lower() in READERS


def read_source(ctx: Context, source: str | Path | None) -> ScoreInput:
    """The events a source names: a file (CSV/Parquet/JSON, read through the contract), a
    recorded lake table `TABLE` (newest version) or `TABLE@VERSION`; default the spec's
    events table.

    Raises:
        StageError: a missing or unreadable file, values that break the contract's types,
            an unknown table or version, or a table lacking a contract column.
    """
    from loopline.data.sources import SourceError, read_file

    spec = ctx.spec
    if source is None:
        source = spec.events.table
    if _is_file(source):
        path = Path(source)
        try:
            read = read_file(path, spec.events)
        except SourceError as exc:
            raise StageError(f"source: {exc}") from exc
        if read.problems:
            total = sum(r.failures for r in read.problems)
            more = f" (+{total - 1} more)" if total > 1 else ""
            raise StageError(f"source: {read.violations[0]}{more}")
        return ScoreInput(read.frame, path=str(path), sha256=read.sha256)
    match = _SOURCE.match(str(source).strip())
    if match is None:
        raise StageError(
            f"source: {str(source)!r} is neither a file (CSV, Parquet, JSON) nor a lake "
            "table name (TABLE or TABLE@VERSION)"
        )
    name, number = match["name"], match["version"]
    with ctx.store.reader() as session:
        if number is None:
            row = latest_version(session, name)
        else:
            row = get_version(session, name, int(number))
    if row is None:
        what = f"version {number} of table '{name}'" if number else f"table '{name}'"
        raise StageError(f"source: no recorded {what} (and no file of that name)")
    wanted = [c for c in spec.events.columns if c in tables.schema(row.uri)]
    events = tables.read(row.uri, row.table_version).select(wanted) if wanted else pl.DataFrame()
    return ScoreInput(events, table=name, version=row.table_version)


def _entity_keys(spec: UseCaseSpec) -> list[str]:
    """Join keys of the entities behind the spec's feature service (all entities if unknown)."""
    from loopline.features.feast_ops import service_layout

    views = service_layout(spec.features.service, spec).views
    keys = [t.entity for t in spec.features.tables if t.name in views]
    keys = keys or [e.join_key for e in spec.entities]
    return list(dict.fromkeys(keys))


def check_events(events: pl.DataFrame, spec: UseCaseSpec) -> None:
    """Refuse events the model cannot be fed: a missing contract column or entity key, a
    wrong type, a null id, timestamp or key, no rows.

    Raises:
        StageError: naming the first column at fault.
    """
    from loopline.data.contracts import polars_schema

    schema = polars_schema(spec.events)
    keys = _entity_keys(spec)
    for name in [*keys, *schema]:
        if name not in events.columns:
            kind = "entity key" if name in keys else "contract column"
            raise StageError(f"{name}: missing from the events ({kind})")
    for name, dtype in schema.items():
        actual = events.schema[name]
        if isinstance(dtype, pl.Datetime):
            if not isinstance(actual, pl.Datetime) or actual.time_zone is None:
                raise StageError(f"{name}: must be a timezone-aware datetime, got {actual}")
        elif actual != dtype and not (actual == pl.Null and events.height == 0):
            raise StageError(f"{name}: must be {dtype}, got {actual}")
    for name in dict.fromkeys([spec.events.id, spec.events.timestamp, *keys]):
        if name is not None and (nulls := events.get_column(name).null_count()):
            raise StageError(f"{name}: must not be null ({nulls} null value(s))")
    if events.is_empty():
        raise StageError("source: no events to score (0 rows)")


def output_table(spec: UseCaseSpec, out: str | None) -> str:
    """The predictions table's name: `out`, default `<use case>_scores`.

    Raises:
        StageError: not a lowercase identifier, or the name of a curated or feature table.
    """
    name = out if out is not None else f"{spec.name}_scores"
    try:
        tables.table_uri(Path("."), name)
    except tables.LakeError as exc:
        raise StageError(f"out: {exc}") from exc
    taken = {spec.events.table, spec.labels.table, *(t.name for t in spec.features.tables)}
    if name in taken:
        raise StageError(f"out: '{name}' is a curated or feature table; choose another name")
    return name


# --- scoring ---------------------------------------------------------------------------------


def point_in_time(ctx: Context, model: ScoringModel, events: pl.DataFrame) -> tuple[Any, Any]:
    """The events with their point-in-time features through Feast, as training reads them.

    Returns:
        (the frame, the `TrainingSet` with its lineage).
    """
    from loopline.features import feast_ops

    entity_df = events
    if model.spec.events.timestamp != feast_ops.TIMESTAMP:
        entity_df = events.with_columns(
            pl.col(model.spec.events.timestamp).alias(feast_ops.TIMESTAMP)
        )
    store = feast_ops.open_store(ctx.settings)
    try:
        pit = feast_ops.training_set(store, entity_df, model.feature_service)
    except ValueError as exc:
        raise StageError(f"features: {exc}") from exc
    return pit.frame, pit


def predict(booster: Any, matrix: np.ndarray) -> np.ndarray:
    """The booster's raw predictions of a model-input matrix (the bench's peer does the same)."""
    return booster.predict(matrix)


def _score_columns(values: np.ndarray) -> dict[str, pl.Series]:
    """A prediction matrix as output columns: `score` (and, multiclass, the predicted class
    and every class's probability)."""
    if values.ndim == 1:
        return {"score": pl.Series("score", values, dtype=pl.Float64)}
    predicted = values.argmax(axis=1)
    return {
        "score": pl.Series("score", values[np.arange(len(values)), predicted], pl.Float64),
        "predicted_class": pl.Series("predicted_class", predicted, pl.Int64),
        "class_probabilities": pl.Series(
            "class_probabilities", values.tolist(), pl.List(pl.Float64)
        ),
    }


def scored_chunks(
    frame: pl.DataFrame,
    model: ScoringModel,
    lineage: dict[str, Any],
    *,
    chunk_rows: int = CHUNK_ROWS,
    progress: Progress | None = None,
) -> Iterator[pl.DataFrame]:
    """Score a point-in-time frame chunk by chunk: model inputs, booster, output rows.

    Each output row holds the event id, entity keys, event timestamp, score and the lineage
    columns. Row i of the output depends only on row i of `frame` (the transform and the
    booster are row-wise), so chunking changes no value.
    """
    from loopline.features import transform

    spec = model.spec
    ids = [spec.events.id] if spec.events.id else []
    keep = list(dict.fromkeys([*ids, *_entity_keys(spec), spec.events.timestamp]))
    constants = [
        pl.lit(model.name, pl.String).alias("model_name"),
        pl.lit(model.version, pl.Int64).alias("model_version"),
        pl.lit(model.version_id, pl.String).alias("model_version_id"),
        pl.lit(model.feature_service, pl.String).alias("feature_service"),
        pl.lit(lineage.get("table"), pl.String).alias("input_table"),
        pl.lit(lineage.get("version"), pl.Int64).alias("input_version"),
        pl.lit(lineage.get("sha256"), pl.String).alias("input_sha256"),
        pl.lit(lineage["run_id"], pl.String).alias("score_run_id"),
    ]

    def matrix(part: pl.DataFrame) -> np.ndarray:
        return transform.to_numpy(transform.model_inputs(part, spec, model.feature_service))

    parts = [frame.slice(start, chunk_rows) for start in range(0, frame.height, chunk_rows)]
    done = 0
    # The next chunk's inputs are built on another thread while LightGBM (GIL released)
    # scores this one.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="score-inputs") as pool:
        pending = pool.submit(matrix, parts[0]) if parts else None
        for index, part in enumerate(parts):
            assert pending is not None
            inputs = pending.result()
            if index + 1 < len(parts):
                pending = pool.submit(matrix, parts[index + 1])
            values = predict(model.booster, inputs)
            out = part.select(keep).with_columns(**_score_columns(values)).with_columns(constants)
            done += part.height
            if progress is not None:
                progress("score", done, frame.height)
            yield out


def output_columns(model: ScoringModel) -> list[str]:
    """The predictions table's columns for a model (in order)."""
    spec = model.spec
    ids = [spec.events.id] if spec.events.id else []
    keep = list(dict.fromkeys([*ids, *_entity_keys(spec), spec.events.timestamp]))
    scores = ["score"]
    if spec.task == "multiclass_classification":
        scores += ["predicted_class", "class_probabilities"]
    return [*keep, *scores, *LINEAGE_COLUMNS]


def check_output(uri: str, model: ScoringModel) -> None:
    """Refuse a predictions table whose columns are not the ones this model writes.

    Raises:
        StageError: naming the columns that differ.
    """
    if not tables.exists(uri):
        return
    have, want = list(tables.schema(uri)), output_columns(model)
    if have != want:
        missing = [c for c in want if c not in have]
        extra = [c for c in have if c not in want]
        raise StageError(
            f"out: table {uri} holds other columns (missing {missing}, extra {extra}): "
            "choose another --out"
        )


def write_scores(
    uri: str,
    frame: pl.DataFrame,
    model: ScoringModel,
    lineage: dict[str, Any],
    *,
    chunk_rows: int = CHUNK_ROWS,
    progress: Progress | None = None,
) -> tuple[int, int, str]:
    """Score `frame` (events with their point-in-time features) and append the scores as one
    new version of the Delta table at `uri`; each chunk's file is written while the next
    chunk is scored.

    Args:
        uri: The predictions table (created on first write).
        frame: Events with their point-in-time features.
        model: The version scoring.
        lineage: `run_id`, and `table`+`version` or `sha256` of the input.
        chunk_rows: Rows per chunk (and per Parquet file).
        progress: Called with ("score", rows done, rows in all).

    Returns:
        (version written, rows written, content hash of the rows written: sha256 over the
        Arrow IPC hashes of the lineage values and of each chunk's other columns, in order).

    Raises:
        StageError: the table exists with another schema.
    """
    import hashlib

    from loopline.data.sources import frame_sha256
    from loopline.features import delta_tables

    chunks = scored_chunks(frame, model, lineage, chunk_rows=chunk_rows, progress=progress)
    first = next(chunks)
    if tables.exists(uri):
        problems = tables.breaking_changes(uri, first)
        added = [c for c in first.columns if c not in tables.schema(uri)]
        if problems or added:
            details = "; ".join(problems + [f"column '{c}' is new" for c in added])
            raise StageError(f"out: table {uri} holds another schema: {details}")
    hashes: list[Future[str]] = []
    metadata = {
        "loopline.score_run_id": lineage["run_id"],
        "loopline.model": f"{model.name}@{model.version}",
    }
    # Each chunk is hashed off the scoring thread (Arrow IPC and sha256 release the GIL).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="score-hash") as pool:

        def hashed() -> Iterator[pl.DataFrame]:
            for chunk in itertools.chain([first], chunks):
                # The lineage columns are one value per run: hashed once, below.
                varying = chunk.select(c for c in chunk.columns if c not in LINEAGE_COLUMNS)
                hashes.append(pool.submit(frame_sha256, varying))
                yield chunk

        version, rows = delta_tables.write(uri, hashed(), mode="append", metadata=metadata)
        constants = first.select(LINEAGE_COLUMNS).head(1)
        digest = hashlib.sha256(frame_sha256(constants).encode())
        for done in hashes:
            digest.update(done.result().encode())
    return version, rows, "sha256:" + digest.hexdigest()


# --- the stage -------------------------------------------------------------------------------


@contextlib.contextmanager
def _undone_on_failure(uri: str) -> Iterator[list[int]]:
    """Restore the predictions table to what it held before if the block fails after writing
    (append the version written to the list yielded). Only while the newest version is still
    the one written: another writer's newer version stays."""
    from deltalake import DeltaTable

    previous = tables.current_version(uri)
    written: list[int] = []
    try:
        yield written
    except BaseException:
        if written and tables.current_version(uri) == written[0]:
            DeltaTable(uri).restore(previous if previous is not None else 0)
        raise


def run_score(
    settings: Settings,
    spec: UseCaseSpec,
    *,
    source: str | Path | None = None,
    model_ref: str | int | None = None,
    out: str | None = None,
    flow_run_id: str | None = None,
    progress: Progress | None = None,
) -> ScoreResult:
    """Score events with a registered model version into a new predictions table version.

    Args:
        settings: Where the stores are.
        spec: The use case.
        source: A CSV/Parquet/JSON file of events, or a recorded lake table `TABLE` or
            `TABLE@VERSION` (default: the spec's events table, newest version).
        model_ref: `NAME@ALIAS`, `NAME@VERSION`, a version number or an alias of the spec's
            model (default: the spec's model @ champion).
        out: Predictions table (default `<use case>_scores`).
        flow_run_id: The Prefect flow run executing this, if any.
        progress: Called with (phase, done, total) as the stage advances.

    Returns:
        What was written, with its lineage.

    Raises:
        StageError: bad input (see the module doc); nothing is written.
    """
    started = time.perf_counter()

    def report(phase: str, done: int, total: int) -> None:
        if progress is not None:
            progress(phase, done, total)

    name = output_table(spec, out)
    ctx = open_context(settings, spec)
    model = load_scoring_model(ctx, model_ref)
    report("read", 0, 1)
    scored = read_source(ctx, source)
    check_events(scored.events, model.spec)
    report("read", 1, 1)
    seconds = {"read": time.perf_counter() - started}
    report("features", 0, 1)
    frame, pit = point_in_time(ctx, model, scored.events)
    report("features", 1, 1)
    seconds["features"] = time.perf_counter() - started - seconds["read"]
    uri = tables.table_uri(settings.lake_dir / SCORES_DIR, name)
    check_output(uri, model)
    params = {
        "model": f"{model.name}@{model.version}",
        "model_ref": model_reference(spec, model_ref),
        "source": scored.describe(),
        "out": name,
        "feature_service": model.feature_service,
    }
    with (
        _undone_on_failure(uri) as written,
        ctx.run("score", flow_run_id=flow_run_id, params=params) as run,
    ):
        lineage = {
            "run_id": run.run_id,
            "table": scored.table,
            "version": scored.version,
            "sha256": scored.sha256,
        }
        mark = time.perf_counter()
        version, rows, content_hash = write_scores(uri, frame, model, lineage, progress=progress)
        written.append(version)
        seconds["score_write"] = time.perf_counter() - mark
        report("write", rows, rows)
        sources = {
            "input": scored.describe(),
            "model": {"name": model.name, "version": model.version, "id": model.version_id},
            "feature_service": model.feature_service,
            "feature_views": pit.lineage(),
        }
        seconds["total"] = time.perf_counter() - started
        result = ScoreResult(
            run_id=run.run_id,
            table=name,
            table_version=version,
            uri=uri,
            rows=rows,
            model_name=model.name,
            model_version=model.version,
            model_version_id=model.version_id,
            feature_service=model.feature_service,
            source=scored.describe(),
            dataset_version_id=new_id(),
            feature_views=pit.lineage(),
            seconds={k: round(v, 3) for k, v in seconds.items()},
        )

        def record(session: Any) -> None:
            # Committed with the run's success: a crash before leaves no dataset version.
            parent = latest_version(session, name)
            session.add(
                DatasetVersion(
                    id=result.dataset_version_id,
                    dataset=name,
                    use_case=spec.name,
                    table_version=version,
                    uri=uri,
                    content_hash=content_hash,
                    row_count=rows,
                    rows_in=scored.events.height,
                    rows_accepted=rows,
                    schema_={k: str(v) for k, v in tables.schema(uri).items()},
                    sources=sources,
                    parent_id=parent.id if parent else None,
                    run_id=run.run_id,
                )
            )

        run.on_success(record)
        run.set_summary(**{k: v for k, v in result.as_dict().items() if k != "run_id"})
        run.log_metrics({"rows": float(rows), "seconds": seconds["total"]})
    return result
