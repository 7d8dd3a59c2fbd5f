"""The Evaluation tab of a training run (not a page: the Runs page calls `show_evaluation`).

What a model-risk reviewer reads, as charts: what drives the model (gain, SHAP), how well its
scores are calibrated and where its decision threshold sits, how it does per slice, and how its
decisions differ between the groups of each sensitive attribute.
"""

from __future__ import annotations

from typing import Any

import polars as pl
import streamlit as st

from loopline.ui import charts
from loopline.ui import queries as q
from loopline.ui.panel import table

FOUR_FIFTHS = 0.8
"""Below this ratio to the best group a fairness measure is flagged (the four-fifths rule)."""


def _number(value: float | None, fmt: str = ".4f") -> str:
    return "—" if value is None else format(value, fmt)


def _chart(title: str, chart: Any) -> None:
    """A chart under its bold title (a Vega title would take from the chart's height)."""
    st.markdown(f"**{title}**")
    st.altair_chart(chart, width="stretch")


def _headline(ev: q.RunEvaluation) -> None:
    cells: list[tuple[str, str, str | None]] = [
        ("Holdout rows", f"{ev.overall.get('rows', 0):,}", None),
        *((name, _number(ev.overall.get(name)), None) for name in ev.metric_names),
    ]
    if ev.threshold:
        source = ev.threshold.get("source", "?")
        cells.append(
            (
                "Decision threshold",
                _number(ev.threshold.get("threshold"), ".3f"),
                f"Chosen by {source} (marked on the ROC and precision-recall curves).",
            )
        )
    if ev.calibration_error["ece"] is not None:
        cells.append(
            (
                "Calibration error (ECE)",
                _number(ev.calibration_error["ece"]),
                "Expected calibration error: row-weighted mean |observed - predicted| per bin.",
            )
        )
    for column, (label, value, help_text) in zip(st.columns(len(cells)), cells, strict=True):
        column.metric(label, value, help=help_text)
    for note in ev.notes:
        st.caption(note)


def _drivers(ev: q.RunEvaluation) -> None:
    st.markdown("#### What drives the model")
    left, right = st.columns(2)
    with left:
        if ev.importance.is_empty():
            st.caption("No feature importance recorded.")
        else:
            _chart("Feature importance (gain)", charts.feature_importance(ev.importance))
    with right:
        if ev.shap.is_empty():
            st.caption("No SHAP summary recorded.")
        else:
            _chart(
                "SHAP: mean |contribution| (red: raises the score on average, blue: lowers it)",
                charts.shap_importance(ev.shap),
            )
            if ev.shap_rows:
                st.caption(f"SHAP from LightGBM `pred_contrib` on {ev.shap_rows:,} holdout rows.")


def _binary(ev: q.RunEvaluation) -> None:
    st.markdown("#### Calibration and decision threshold")
    cal, roc, pr = st.columns(3)
    with cal:
        if ev.calibration.is_empty():
            st.caption("No calibration data.")
        else:
            _chart("Calibration", charts.calibration(ev.calibration))
            st.caption(
                f"ECE {_number(ev.calibration_error['ece'])} · "
                f"worst bin gap (MCE) {_number(ev.calibration_error['mce'])}"
            )
    with roc:
        if ev.roc.is_empty():
            st.caption("No ROC curve: the holdout has a single class.")
        else:
            _chart("ROC curve", charts.roc(ev.roc, ev.threshold))
    with pr:
        if ev.pr.is_empty():
            st.caption("No precision-recall curve: the holdout has a single class.")
        else:
            _chart("Precision-recall curve", charts.precision_recall(ev.pr, ev.threshold))
    t = ev.threshold
    if t:
        cost = (
            f" · cost {_number(t['cost'], ',.1f')} ({_number(t.get('mean_cost'))} per row)"
            if "cost" in t
            else ""
        )
        st.caption(
            f"At threshold {_number(t.get('threshold'), '.4f')} (chosen by {t.get('source')}): "
            f"precision {_number(t.get('precision'), '.3f')} · recall "
            f"{_number(t.get('recall'), '.3f')} · false positive rate "
            f"{_number(t.get('fpr'), '.3f')} · selection rate "
            f"{_number(t.get('selection_rate'), '.3f')} · TP {t.get('tp')} · FP {t.get('fp')} · "
            f"FN {t.get('fn')} · TN {t.get('tn')}{cost}"
        )


def _regression(ev: q.RunEvaluation) -> None:
    st.markdown("#### Residuals")
    if ev.residuals.is_empty():
        st.caption("No residuals recorded.")
        return
    chart, stats = st.columns([3, 1])
    with chart:
        _chart("Residuals", charts.residuals(ev.residuals))
    s = ev.residual_stats
    with stats:
        st.metric("Mean residual", _number(s.get("mean")))
        st.metric("Residual std", _number(s.get("std")))
        quantiles = s.get("quantiles") or {}
        if quantiles:
            table(pl.DataFrame({"quantile": list(quantiles), "residual": list(quantiles.values())}))
        if s.get("sampled"):
            st.caption(f"{ev.residuals.height:,} of {s.get('rows', 0):,} rows drawn.")


def _multiclass(ev: q.RunEvaluation) -> None:
    st.markdown("#### Confusion matrix")
    if ev.confusion.is_empty():
        st.caption("No confusion matrix recorded.")
        return
    chart, per_class = st.columns([3, 2])
    with chart:
        _chart(
            "Confusion matrix (color: share of the actual class)", charts.confusion(ev.confusion)
        )
    with per_class:
        table(ev.per_class)


def _slices(ev: q.RunEvaluation, primary_metric: str | None) -> None:
    st.markdown("#### Slices")
    if ev.slices.is_empty():
        st.caption("The spec declares no segments.")
        return
    metrics = ev.metric_names
    start = metrics.index(primary_metric) if primary_metric in metrics else 0
    # One choice per task: it carries over between runs whose reports have the same metrics.
    key = f"evaluation.slice_metric.{ev.task}"
    metric = st.selectbox("Slice metric", metrics, index=start, key=key)
    _chart(
        f"{metric} per slice (dashed: overall; faded: small slices)",
        charts.slice_metric(ev.slices, metric, ev.overall.get(metric)),
    )
    small = ev.slices.filter(pl.col("small")).height
    if small:
        st.caption(f"{small} slice(s) have fewer rows than the spec's minimum (faded).")
    table(ev.slices.drop("column"))


def _fairness(ev: q.RunEvaluation) -> None:
    st.markdown("#### Fairness")
    if ev.fairness_groups.is_empty():
        st.caption("The spec declares no sensitive attribute.")
        return
    for attribute in ev.fairness_groups["attribute"].unique(maintain_order=True):
        st.markdown(f"**{attribute}**")
        summary = ev.fairness_summary.filter(pl.col("attribute") == attribute)
        if summary.is_empty():
            st.caption(ev.fairness_notes.get(attribute, "No group rates recorded."))
        else:
            row = summary.row(0, named=True)
            st.caption(
                f"Decisions at threshold {_number(row['threshold'], '.4f')}; best and worst "
                f"over {row['basis']}. Bar labels: each group's ratio to the best group; ratios "
                f"below {FOUR_FIFTHS} (the four-fifths rule) are flagged."
            )
            for cell, worst in zip(
                st.columns(len(summary)), summary.iter_rows(named=True), strict=True
            ):
                title = q.MEASURE_TITLES[worst["measure"]]
                ratio = worst["worst_ratio"]
                flagged = ratio is not None and ratio < FOUR_FIFTHS
                with cell:
                    st.metric(
                        f"Worst {title.lower()} ratio",
                        _number(ratio, ".3f"),
                        delta=(
                            f"{worst['worst_group']}: below {FOUR_FIFTHS}"
                            if flagged
                            else worst["worst_group"]
                        ),
                        delta_color="red" if flagged else "off",
                        delta_arrow="down" if flagged else "off",
                    )
                    _chart(
                        title,
                        charts.fairness_measure(ev.fairness, attribute, worst["measure"], title),
                    )
        groups = ev.fairness_groups.filter(pl.col("attribute") == attribute).drop("attribute")
        table(groups.drop("threshold"))


def show_evaluation(ev: q.RunEvaluation, *, primary_metric: str | None = None) -> None:
    """Render a training run's evaluation.

    Args:
        ev: `queries.run_evaluation` of the run.
        primary_metric: The metric the slice chart starts on (the spec's primary metric).
    """
    for problem in ev.problems:
        st.warning(problem)
    if ev.overall:
        _headline(ev)
    _drivers(ev)
    if ev.task == "binary_classification":
        _binary(ev)
    elif ev.task == "regression":
        _regression(ev)
    elif ev.task == "multiclass_classification":
        _multiclass(ev)
    if ev.task is None:
        st.caption("No evaluation report recorded for this run.")
        return
    _slices(ev, primary_metric)
    _fairness(ev)
