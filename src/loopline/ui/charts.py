"""Altair charts of the control panel, built from the frames `loopline.ui.queries` returns."""

from __future__ import annotations

from datetime import datetime

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


WORST_COLOR = CHAMPION_COLOR
REFERENCE_COLOR = "#999999"


def _bar_height(rows: int) -> int:
    # Streamlit fits axes and legends inside the chart's height: leave room for them.
    return max(180, 26 * rows + 90)


def feature_importance(importance: pl.DataFrame, *, top: int = 20) -> alt.LayerChart:
    """Total gain per feature (largest first), labelled with its share of all gain.

    Args:
        importance: A `RunEvaluation.importance` frame.
        top: Features shown at most.
    """
    data = importance.sort("gain", descending=True).head(top).to_pandas()
    base = alt.Chart(data).encode(
        y=alt.Y("feature:N", sort="-x", title=None),
        x=alt.X("gain:Q", title="total gain"),
        tooltip=[
            "feature",
            alt.Tooltip("gain:Q", format=",.1f"),
            alt.Tooltip("gain_share:Q", title="share of gain", format=".1%"),
            alt.Tooltip("split:Q", title="splits"),
        ],
    )
    bars = base.mark_bar(color=OTHER_COLOR)
    shares = base.mark_text(align="left", dx=4).encode(text=alt.Text("gain_share:Q", format=".0%"))
    return alt.layer(bars, shares).properties(
        description="Feature importance (gain)", height=_bar_height(len(data))
    )


def shap_importance(shap: pl.DataFrame, *, top: int = 20) -> alt.Chart:
    """Mean |SHAP contribution| per feature, colored by the sign of its mean contribution (red:
    raises the score on average, blue: lowers it; no legend, which would take the bars' room).

    Args:
        shap: A `RunEvaluation.shap` frame.
        top: Features shown at most.
    """
    data = (
        shap.sort("mean_abs", descending=True)
        .head(top)
        .with_columns(
            direction=pl.when(pl.col("mean") >= 0)
            .then(pl.lit("raises the score on average"))
            .otherwise(pl.lit("lowers the score on average"))
        )
        .to_pandas()
    )
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            y=alt.Y("feature:N", sort="-x", title=None),
            x=alt.X("mean_abs:Q", title="mean |SHAP contribution|"),
            color=alt.Color(
                "direction:N",
                title=None,
                scale=alt.Scale(
                    domain=["raises the score on average", "lowers the score on average"],
                    range=[CHAMPION_COLOR, OTHER_COLOR],
                ),
                legend=None,
            ),
            tooltip=[
                "feature",
                "direction",
                alt.Tooltip("mean_abs:Q", title="mean |contribution|", format=".4f"),
                alt.Tooltip("mean:Q", title="mean contribution", format="+.4f"),
            ],
        )
        .properties(description="SHAP: mean |contribution|", height=_bar_height(len(data)))
    )


def _diagonal() -> alt.Chart:
    line = alt.Chart(alt.Data(values=[{"x": 0.0, "y": 0.0}, {"x": 1.0, "y": 1.0}]))
    return line.mark_line(strokeDash=[4, 4], color=REFERENCE_COLOR).encode(x="x:Q", y="y:Q")


def _unit() -> alt.Scale:
    return alt.Scale(domain=[0, 1])


def calibration(calibration: pl.DataFrame) -> alt.LayerChart:
    """Reliability diagram: observed positive rate against mean predicted probability per
    bin (point size: rows in the bin), with the perfectly calibrated diagonal.

    Args:
        calibration: A `RunEvaluation.calibration` frame.
    """
    data = calibration.filter(pl.col("count") > 0).to_pandas()
    base = alt.Chart(data).encode(
        x=alt.X("mean_predicted:Q", title="mean predicted probability", scale=_unit()),
        y=alt.Y("observed_rate:Q", title="observed positive rate", scale=_unit()),
    )
    line = base.mark_line(color=OTHER_COLOR)
    points = base.mark_circle(color=OTHER_COLOR, opacity=1).encode(
        size=alt.Size("count:Q", title="rows", legend=None),
        tooltip=[
            alt.Tooltip("bin_lower:Q", title="bin from", format=".2f"),
            alt.Tooltip("bin_upper:Q", title="bin to", format=".2f"),
            "count",
            alt.Tooltip("mean_predicted:Q", format=".3f"),
            alt.Tooltip("observed_rate:Q", format=".3f"),
        ],
    )
    return alt.layer(_diagonal(), line, points).properties(description="Calibration", height=300)


def _threshold_point(x: float | None, y: float | None, label: str) -> alt.LayerChart:
    data = alt.Data(values=[{"x": x, "y": y, "label": label}] if x is not None else [])
    base = alt.Chart(data).encode(x="x:Q", y="y:Q")
    point = base.mark_point(shape="diamond", size=160, filled=True, color=WORST_COLOR).encode(
        tooltip=[alt.Tooltip("label:N", title="decision threshold")]
    )
    text = base.mark_text(align="left", dx=9, dy=-9, color=WORST_COLOR, fontWeight="bold").encode(
        text="label:N"
    )
    return alt.layer(point, text)


def _threshold_label(threshold: dict) -> str:
    value = threshold.get("threshold")
    return f"threshold {value:.3f}" if value is not None else ""


def roc(roc: pl.DataFrame, threshold: dict) -> alt.LayerChart:
    """ROC curve with the chance diagonal and the report's decision threshold marked.

    Args:
        roc: A `RunEvaluation.roc` frame.
        threshold: `RunEvaluation.threshold` (its fpr and recall place the mark).
    """
    curve = (
        alt.Chart(roc.to_pandas())
        .mark_line(color=OTHER_COLOR)
        .encode(
            x=alt.X("fpr:Q", title="false positive rate", scale=_unit()),
            y=alt.Y("tpr:Q", title="true positive rate", scale=_unit()),
            tooltip=[
                alt.Tooltip("threshold:Q", format=".3f"),
                alt.Tooltip("fpr:Q", format=".3f"),
                alt.Tooltip("tpr:Q", format=".3f"),
            ],
        )
    )
    mark = _threshold_point(
        threshold.get("fpr"), threshold.get("recall"), _threshold_label(threshold)
    )
    return alt.layer(_diagonal(), curve, mark).properties(description="ROC curve", height=300)


def precision_recall(pr: pl.DataFrame, threshold: dict) -> alt.LayerChart:
    """Precision-recall curve with the positive rate (a random model's precision) dashed and
    the report's decision threshold marked.

    Args:
        pr: A `RunEvaluation.pr` frame.
        threshold: `RunEvaluation.threshold` (its recall and precision place the mark).
    """
    curve = (
        alt.Chart(pr.to_pandas())
        .mark_line(color=OTHER_COLOR)
        .encode(
            x=alt.X("recall:Q", title="recall", scale=_unit()),
            y=alt.Y("precision:Q", title="precision", scale=_unit()),
            tooltip=[
                alt.Tooltip("threshold:Q", format=".3f"),
                alt.Tooltip("recall:Q", format=".3f"),
                alt.Tooltip("precision:Q", format=".3f"),
            ],
        )
    )
    layers: list[alt.Chart | alt.LayerChart] = [curve]
    counts = [threshold.get(k) for k in ("tp", "fp", "fn", "tn")]
    if all(isinstance(c, int) for c in counts) and sum(counts):
        tp, fp, fn, tn = counts
        base_rate = alt.Chart(alt.Data(values=[{"y": (tp + fn) / (tp + fp + fn + tn)}]))
        layers.insert(
            0, base_rate.mark_rule(strokeDash=[4, 4], color=REFERENCE_COLOR).encode(y="y:Q")
        )
    mark = _threshold_point(
        threshold.get("recall"), threshold.get("precision"), _threshold_label(threshold)
    )
    return alt.layer(*layers, mark).properties(description="Precision-recall curve", height=300)


def residuals(residuals: pl.DataFrame) -> alt.LayerChart:
    """Residual (actual - predicted) against prediction, with the zero line.

    Args:
        residuals: A `RunEvaluation.residuals` frame.
    """
    points = (
        alt.Chart(residuals.to_pandas())
        .mark_circle(size=18, opacity=0.45, color=OTHER_COLOR)
        .encode(
            x=alt.X("prediction:Q", title="prediction", scale=alt.Scale(zero=False)),
            y=alt.Y("residual:Q", title="residual (actual - predicted)"),
            tooltip=[
                alt.Tooltip("prediction:Q", format=".3f"),
                alt.Tooltip("residual:Q", format=".3f"),
            ],
        )
    )
    zero = alt.Chart(alt.Data(values=[{"y": 0.0}])).mark_rule(color=WORST_COLOR).encode(y="y:Q")
    return alt.layer(points, zero).properties(description="Residuals", height=320)


def confusion(confusion: pl.DataFrame) -> alt.LayerChart:
    """Confusion matrix heatmap: color is the share of each actual class, text the count.

    Args:
        confusion: A `RunEvaluation.confusion` frame.
    """
    data = confusion.to_pandas()
    classes = list(dict.fromkeys(data["actual"]))
    base = alt.Chart(data).encode(
        x=alt.X("predicted:N", sort=classes, title="predicted class"),
        y=alt.Y("actual:N", sort=classes, title="actual class"),
    )
    cells = base.mark_rect().encode(
        color=alt.Color(
            "share:Q", title="share of actual", scale=alt.Scale(scheme="blues", domain=[0, 1])
        ),
        tooltip=["actual", "predicted", "count", alt.Tooltip("share:Q", format=".1%")],
    )
    counts = base.mark_text(fontWeight="bold").encode(
        text="count:Q",
        color=alt.condition("datum.share > 0.5", alt.value("white"), alt.value("black")),
    )
    size = max(220, 60 * len(classes))
    return alt.layer(cells, counts).properties(description="Confusion matrix", height=size)


def slice_metric(slices: pl.DataFrame, metric: str, overall: float | None) -> alt.LayerChart:
    """A metric per slice (one bar per segment value, colored by segment), the overall value
    dashed; slices flagged small are faded.

    Args:
        slices: A `RunEvaluation.slices` frame.
        metric: One of its metric columns.
        overall: The metric on the whole holdout.
    """
    data = (
        slices.filter(pl.col(metric).is_not_null())
        .with_columns(slice=pl.format("{} = {}", "segment", "value"))
        .select("slice", "segment", "value", "rows", "small", pl.col(metric).alias("metric"))
        .to_pandas()
    )
    bars = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            y=alt.Y("slice:N", sort=None, title=None, axis=alt.Axis(labelLimit=260)),
            x=alt.X("metric:Q", title=metric),
            color=alt.Color("segment:N", title="segment", scale=alt.Scale(scheme="tableau10")),
            opacity=alt.condition("datum.small", alt.value(0.35), alt.value(1.0)),
            tooltip=[
                "segment",
                "value",
                "rows",
                "small",
                alt.Tooltip("metric:Q", title=metric, format=".4f"),
            ],
        )
    )
    layers: list[alt.Chart] = [bars]
    if overall is not None:
        rule = alt.Chart(alt.Data(values=[{"x": overall}])).mark_rule(
            strokeDash=[4, 4], color="black"
        )
        layers.append(
            rule.encode(
                x="x:Q", tooltip=[alt.Tooltip("x:Q", title=f"overall {metric}", format=".4f")]
            )
        )
    return alt.layer(*layers).properties(
        description=f"{metric} per slice", height=_bar_height(len(data))
    )


def fairness_measure(
    fairness: pl.DataFrame, attribute: str, measure: str, title: str
) -> alt.LayerChart:
    """One fairness measure per group of a sensitive attribute, the group with the worst
    ratio to the best group highlighted and every bar labelled with its ratio.

    Args:
        fairness: A `RunEvaluation.fairness` frame.
        attribute: The sensitive attribute.
        measure: selection_rate, tpr or fpr.
        title: The measure's display name.
    """
    data = (
        fairness.filter(pl.col("attribute") == attribute, pl.col("measure") == measure)
        .with_columns(
            role=pl.when("worst").then(pl.lit("worst ratio")).otherwise(pl.lit("other groups")),
            label=pl.when(pl.col("ratio").is_not_null())
            .then(pl.col("ratio").round(2).cast(pl.String))
            .otherwise(pl.lit("")),
        )
        .to_pandas()
    )
    base = alt.Chart(data).encode(
        x=alt.X("group:N", title=attribute, sort=None, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("rate:Q", title=title, scale=alt.Scale(domain=[0, 1])),
    )
    bars = base.mark_bar().encode(
        color=alt.Color(
            "role:N",
            title=None,
            scale=alt.Scale(
                domain=["worst ratio", "other groups"], range=[WORST_COLOR, OTHER_COLOR]
            ),
            legend=alt.Legend(orient="bottom"),
        ),
        opacity=alt.condition("datum.small", alt.value(0.35), alt.value(1.0)),
        tooltip=[
            "group",
            "rows",
            "small",
            alt.Tooltip("rate:Q", title=title, format=".3f"),
            alt.Tooltip("ratio:Q", title="ratio to best group", format=".3f"),
            alt.Tooltip("difference:Q", title="difference to best group", format="+.3f"),
        ],
    )
    labels = base.mark_text(dy=-8).encode(text="label:N")
    return alt.layer(bars, labels).properties(description=f"{title} per {attribute}", height=300)


def compare_curves(curves: pl.DataFrame, key: str) -> alt.Chart:
    """One metric's learning curves of several runs, overlaid (one color per run).

    Args:
        curves: A `queries.comparison_curves` frame.
        key: The metric key to draw.
    """
    data = curves.filter(pl.col("key") == key)
    return (
        alt.Chart(data.to_pandas())
        .mark_line(point=data.height <= 60)
        .encode(
            x=alt.X("step:Q", title="iteration"),
            y=alt.Y("value:Q", title=key, scale=alt.Scale(zero=False)),
            color=alt.Color(
                "run:N",
                title=None,
                scale=alt.Scale(scheme="tableau10"),
                legend=alt.Legend(orient="top"),
            ),
            tooltip=["run", "step", alt.Tooltip("value:Q", format=".5f")],
        )
        .properties(description=f"{key} per run", height=280)
    )


def alias_timeline_at(events: pl.DataFrame, at: datetime) -> alt.LayerChart:
    """`alias_timeline` with a moment marked: a dashed rule at `at`, labelled with its time.

    Args:
        events: a `queries.alias_events` frame.
        at: the moment asked about (aware, UTC).
    """
    moment = alt.Data(values=[{"at": at.isoformat(), "label": at.strftime("%Y-%m-%d %H:%M:%S")}])
    base = alt.Chart(moment).encode(x=alt.X("at:T"))
    rule = base.mark_rule(strokeDash=[4, 4], color=CHAMPION_COLOR).encode(
        tooltip=[alt.Tooltip("label:N", title="asked about (UTC)")]
    )
    label = base.mark_text(align="left", dx=4, dy=-6, color=CHAMPION_COLOR, baseline="top").encode(
        text="label:N", y=alt.value(0)
    )
    return alt.layer(alias_timeline(events), rule, label)


OUTCOME_COLORS = {"accepted": "#54a24b", "quarantined": "#eeca3b", "rejected": "#e45756"}


def batch_volumes(volumes: pl.DataFrame, *, newest: int = 60) -> alt.Chart:
    """Rows of each ingest batch by outcome (accepted, quarantined, rejected), stacked, one bar
    per batch in ingest order (batches of one run are seconds apart: a time axis would pile
    them up), labelled with its dataset, time and id.

    Args:
        volumes: a `data_queries.batch_volumes` frame.
        newest: draw at most this many of the newest batches.
    """
    keep = volumes.unique("id").sort("created_at", "id").tail(newest)["id"].implode()
    data = (
        volumes.filter(pl.col("id").is_in(keep))
        .sort("created_at", "id")
        .with_columns(
            batch=pl.format(
                "{} · {} · {}",
                pl.col("dataset"),
                pl.col("created_at").dt.strftime("%m-%d %H:%M:%S"),
                pl.col("id").str.head(6),
            )
        )
        .to_pandas()
    )
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X(
                "batch:O",
                title="batch (dataset · ingest time UTC · id)",
                sort=None,
                axis=alt.Axis(labelAngle=-30, labelLimit=320),
            ),
            y=alt.Y("sum(rows):Q", title="rows", stack="zero"),
            color=alt.Color(
                "outcome:N",
                title=None,
                scale=alt.Scale(domain=list(OUTCOME_COLORS), range=list(OUTCOME_COLORS.values())),
            ),
            tooltip=["dataset", "created_at", "status", "outcome", "rows", "id"],
        )
        .properties(height=300)
    )


def feature_lag(freshness: pl.DataFrame) -> alt.LayerChart:
    """Hours each feature view's online store is behind now, split into built and not built.

    The bar's first part is how far the offline table itself is behind (nothing newer to
    serve); the second is rows already built but not yet materialized online (`pending_h`).

    Args:
        freshness: a `data_queries.freshness_table` frame.
    """
    data = (
        freshness.filter(pl.col("lag_h").is_not_null())
        .with_columns(built_h=pl.col("lag_h") - pl.col("pending_h").fill_null(0.0))
        .unpivot(index="view", on=["built_h", "pending_h"], variable_name="part", value_name="h")
        .with_columns(
            part=pl.col("part").replace_strict(
                {"built_h": "no newer data", "pending_h": "built, not materialized"}
            ),
            order=(pl.col("part") == "pending_h").cast(pl.Int8),
        )
        .filter(pl.col("h").fill_null(0.0) > 0)
        .to_pandas()
    )
    bars = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            y=alt.Y("view:N", title=None, sort="-x"),
            x=alt.X("sum(h):Q", title="hours behind now"),
            color=alt.Color(
                "part:N",
                title=None,
                scale=alt.Scale(
                    domain=["no newer data", "built, not materialized"],
                    range=[OTHER_COLOR, WORST_COLOR],
                ),
            ),
            order=alt.Order("order:Q"),
            tooltip=["view", "part", alt.Tooltip("h", format=".1f", title="hours")],
        )
    )
    return alt.layer(bars).properties(height=_bar_height(freshness.height))


def live_scores(histogram: pl.DataFrame, challenger: str) -> alt.Chart:
    """Score distributions of the champion and its challenger on live traffic, overlaid: the
    share of each one's requests per score bin.

    Args:
        histogram: a `predictions.histogram_frame` frame.
        challenger: the challenger's role (shadow or canary), as labelled in the frame.
    """
    return (
        alt.Chart(histogram.to_pandas())
        .mark_bar(opacity=0.55, binSpacing=0)
        .encode(
            x=alt.X("low:Q", title="score", bin="binned"),
            x2="high:Q",
            y=alt.Y("share:Q", title="share of requests", stack=None, axis=alt.Axis(format="%")),
            color=alt.Color(
                "role:N",
                title=None,
                scale=alt.Scale(
                    domain=["champion", challenger], range=[CHAMPION_COLOR, OTHER_COLOR]
                ),
            ),
            tooltip=[
                "role",
                alt.Tooltip("low", format=".3f", title="from"),
                alt.Tooltip("high", format=".3f", title="to"),
                "rows",
                alt.Tooltip("share", format=".1%"),
            ],
        )
        .properties(height=280)
    )
