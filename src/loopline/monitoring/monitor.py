"""Drift of served model inputs (and scores) against the serving model's training reference.

The reference-profile contract (written by the training stage, read here):
`ModelVersion.reference_profile_id` names an artifact holding `serialize(profile_frame(frame))`
where `frame` has one Float64 column per model input, named as in
`ModelVersion.feature_names["inputs"]` and valued as the model saw them (the output of
`loopline.features.transform`), for the rows of the training set; and, optionally, a column
`prediction` with the model's scores on those rows. When `prediction` is present, the score
distribution is monitored as one more pseudo-feature named `prediction`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import polars as pl

from loopline.lake.artifacts import ArtifactStore
from loopline.monitoring.drift import FeatureDrift, feature_drift
from loopline.monitoring.profiles import MEDIA_TYPE, deserialize, profile_frame, serialize
from loopline.registry.models import CHAMPION, get_alias
from loopline.serving.prediction_log import read_prediction_log
from loopline.settings import Settings
from loopline.spec import UseCaseSpec
from loopline.store import Store
from loopline.store.tables import DriftResult, ModelVersion, RunArtifact, utcnow
from loopline.tracking import register_artifact

log = logging.getLogger(__name__)

PREDICTION = "prediction"
TARGET_PROFILE = "drift_target_profile"


class MonitorError(ValueError):
    """Monitoring cannot run: bad window, or the serving model has no reference profile."""


def pick_version(served: pl.DataFrame, champion_id: str | None) -> str | None:
    """The model version to monitor among served rows.

    The champion's if it served any row, else the version that served the latest row; None
    when there are no rows.
    """
    if served.is_empty():
        return None
    if champion_id is not None and (served["model_version_id"] == champion_id).any():
        return champion_id
    return served.sort("ts")["model_version_id"][-1]


def latest_rows(history: pl.DataFrame, min_rows: int) -> pl.DataFrame:
    """The rows of a too-thin window widened backwards to the latest `min_rows` predictions.

    `history` holds one version's predictions up to the window end, oldest first. If it holds
    fewer than `min_rows`, all of it comes back and `feature_drift` reports "not judged".
    """
    return history.tail(min_rows)


def monitor_predictions(
    store: Store,
    artifacts: ArtifactStore,
    settings: Settings,
    spec: UseCaseSpec,
    *,
    run_id: str,
    window_end: datetime | None = None,
    window: timedelta = timedelta(days=1),
) -> list[FeatureDrift]:
    """Compare one window of served predictions with the serving model's training reference.

    Steps: read the prediction log for `[window_end - window, window_end)`; pick the model
    version (the champion if it served in the window, else the one that served last); widen
    the window backwards to the version's latest `spec.drift.min_rows` predictions if it holds
    fewer (see `latest_rows`); profile the served model inputs and scores; compute PSI per
    input (and for `prediction` when the reference has it); store the window's profile as an
    artifact, then the DriftResult rows (one per feature, with the actual window bounds) and the
    run's link to the profile in one transaction.

    Args:
        store: Metadata store.
        artifacts: Artifact store holding the reference profiles.
        settings: Where the prediction log is.
        spec: The use case (model name, drift threshold and min_rows).
        run_id: The monitoring run the results belong to (must exist).
        window_end: End of the window (exclusive, UTC-aware); now when None.
        window: Length of the window.

    Returns:
        One FeatureDrift per model input (+ prediction), in input order; empty when nothing was
        ever served before window_end (then nothing is written).

    Raises:
        MonitorError: naive window_end, non-positive window, or a serving model version without
            a reference profile.
    """
    end = window_end if window_end is not None else utcnow()
    if end.tzinfo is None:
        raise MonitorError("window_end: must be timezone-aware (UTC)")
    if window <= timedelta(0):
        raise MonitorError(f"window: must be positive, got {window}")
    end = end.astimezone(UTC)
    start = end - window
    log_dir = settings.prediction_log_dir

    with store.reader() as session:
        champion = get_alias(session, spec.model_name, CHAMPION)
    champion_id = champion.model_version.id if champion else None
    in_window = read_prediction_log(log_dir, since=start, until=end)
    history: pl.DataFrame | None = None
    version_id = pick_version(in_window, champion_id)
    if version_id is None:
        history = read_prediction_log(log_dir, until=end)
        version_id = pick_version(history, champion_id)
    if version_id is None:
        log.info("no predictions logged before %s; nothing to monitor", end.isoformat())
        return []
    rows = in_window.filter(pl.col("model_version_id") == version_id)
    if rows.height < spec.drift.min_rows:
        # A quiet service is judged on its latest traffic, not skipped (see latest_rows).
        if history is None:
            history = read_prediction_log(log_dir, until=end)
        mine = history.filter(pl.col("model_version_id") == version_id)
        rows = latest_rows(mine, spec.drift.min_rows)

    with store.reader() as session:
        version = session.get_one(ModelVersion, version_id)
        inputs: list[str] = list(version.feature_names.get("inputs", []))
        reference_id = version.reference_profile_id
        label = f"{version.model_name} v{version.version}"
    if reference_id is None:
        raise MonitorError(f"model version {label} has no reference profile; cannot judge drift")
    reference = deserialize(artifacts.get_bytes(reference_id))

    served = rows.get_column("inputs").struct.unnest()
    target = pl.DataFrame(
        [served[name].cast(pl.Float64) for name in inputs if name in served.columns]
        + [rows["score"].cast(pl.Float64).alias(PREDICTION)]
    )
    features = inputs + ([PREDICTION] if PREDICTION in reference.get_columns() else [])
    target_view = profile_frame(target)
    results = feature_drift(
        reference,
        target_view,
        features,
        psi_threshold=spec.drift.psi_threshold,
        min_rows=spec.drift.min_rows,
    )

    blob = serialize(target_view)
    profile_id = artifacts.put_bytes(blob)
    first: datetime = rows["ts"].min()  # type: ignore[assignment]
    window_start = min(start, first)
    with store.session() as session:
        register_artifact(session, profile_id, len(blob), MEDIA_TYPE)
        session.merge(RunArtifact(run_id=run_id, name=TARGET_PROFILE, artifact_id=profile_id))
        session.add_all(
            DriftResult(
                run_id=run_id,
                model_version_id=version_id,
                window_start=window_start,
                window_end=end,
                feature=r.feature,
                method=r.method,
                statistic=r.statistic,
                threshold=r.threshold,
                drifted=r.drifted,
                sample_size=r.sample_size,
                reference_size=r.reference_size,
                profile_id=profile_id,
            )
            for r in results
        )
    drifted = [r.feature for r in results if r.drifted]
    log.info(
        "%s: %d rows from %s to %s, drifted: %s",
        label,
        rows.height,
        window_start.isoformat(),
        end.isoformat(),
        ", ".join(drifted) or "none",
    )
    return results
