"""Altair charts of the control panel, built from the frames `loopline.ui.queries` returns."""

from __future__ import annotations

import altair as alt
import polars as pl

CHAMPION_COLOR = "#e4572e"
OTHER_COLOR = "#4c78a8"


def version_metric(versions: pl.DataFrame, metric: str) -> alt.LayerChart:
    """A metric of each model version over training time, the champion drawn in its own color.

    Args:
        versions: a `queries.model_versions` frame.
        metric: one of its metric columns.
    """
    data = (
        versions.filter(pl.col(metric).is_not_null())
        .with_columns(
            label=pl.format("v{}", pl.col("version")),
            role=pl.when(pl.col("is_champion")).then(pl.lit("champion")).otherwise(pl.lit("other")),
        )
        .select("model_name", "version", "label", "role", "created_at", "aliases", metric)
        .to_pandas()
    )
    base = alt.Chart(data).encode(
        x=alt.X("created_at:T", title="trained at (UTC)"),
        y=alt.Y(f"{metric}:Q", title=metric, scale=alt.Scale(zero=False)),
    )
    line = base.mark_line(color="#bbbbbb").encode(detail="model_name:N")
    points = base.mark_circle(size=140, opacity=1).encode(
        color=alt.Color(
            "role:N",
            title=None,
            scale=alt.Scale(domain=["champion", "other"], range=[CHAMPION_COLOR, OTHER_COLOR]),
        ),
        tooltip=["model_name", "label", "aliases", alt.Tooltip(metric, format=".4f"), "created_at"],
    )
    labels = base.mark_text(dy=-14, fontWeight="bold").encode(text="label:N")
    return alt.layer(line, points, labels).properties(height=280)


def metric_history(history: pl.DataFrame) -> alt.Chart:
    """Per-step values of a run's metrics (e.g. learning curves), one line per key.

    Args:
        history: a `queries.metric_history` frame.
    """
    return (
        alt.Chart(history.to_pandas())
        .mark_line(point=len(history) <= 60)
        .encode(
            x=alt.X("step:Q", title="step"),
            y=alt.Y("value:Q", scale=alt.Scale(zero=False)),
            color=alt.Color("key:N", title="metric"),
            tooltip=["key", "step", alt.Tooltip("value", format=".5f")],
        )
        .properties(height=260)
    )


def alias_timeline(events: pl.DataFrame) -> alt.LayerChart:
    """Alias moves over time: one row per alias, a labelled mark per move.

    Args:
        events: a `queries.alias_events` frame.
    """
    data = events.with_columns(
        label=pl.when(pl.col("to_version").is_not_null())
        .then(pl.format("v{}", pl.col("to_version")))
        .otherwise(pl.lit("—")),
    ).to_pandas()
    base = alt.Chart(data).encode(
        x=alt.X("at:T", title="when (UTC)"),
        y=alt.Y("alias:N", title=None),
    )
    points = base.mark_point(filled=True, size=160).encode(
        color=alt.Color("action:N"),
        tooltip=["at", "alias", "action", "from_version", "to_version", "actor", "reason"],
    )
    labels = base.mark_text(dy=-16).encode(text="label:N")
    height = 70 + 50 * max(1, data["alias"].nunique())
    return alt.layer(points, labels).properties(height=height)


def drift(drift: pl.DataFrame) -> alt.LayerChart:
    """Drift statistic per feature over windows, with each feature's threshold dashed.

    Drifted windows are drawn as filled points, the others hollow.

    Args:
        drift: a `queries.drift_results` frame.
    """
    data = drift.select(
        "feature", "window_end", "statistic", "threshold", "drifted", "sample_size", "version"
    ).to_pandas()
    base = alt.Chart(data).encode(
        x=alt.X("window_end:T", title="window end (UTC)"),
        color=alt.Color("feature:N"),
    )
    statistic = base.mark_line().encode(y=alt.Y("statistic:Q", title="drift statistic"))
    threshold = base.mark_line(strokeDash=[4, 4], opacity=0.6).encode(y="threshold:Q")
    points = base.mark_point(size=70).encode(
        y="statistic:Q",
        fill=alt.condition("datum.drifted", alt.Color("feature:N"), alt.value("white")),
        tooltip=[
            "feature",
            "window_end",
            alt.Tooltip("statistic", format=".4f"),
            alt.Tooltip("threshold", format=".4f"),
            "drifted",
            "sample_size",
            "version",
        ],
    )
    return alt.layer(threshold, statistic, points).properties(height=320)
