"""Overview: each model's champion, how its versions compare, what ran, and the latest drift."""

import polars as pl
import streamlit as st

from loopline.ui import charts
from loopline.ui import queries as q
from loopline.ui.panel import current_panel, nothing_yet, table, when

panel = current_panel()
st.title("Overview")

champions = panel.query(q.champions)
versions = panel.query(q.model_versions)
counts = panel.query(q.run_counts)
if versions.is_empty() and counts.is_empty():
    nothing_yet("no runs and no models are recorded")
    st.stop()

metrics = q.metric_columns(champions)
for row in champions.iter_rows(named=True):
    st.subheader(row["model_name"])
    shown = [m for m in metrics if row[m] is not None][:5]
    columns = st.columns(1 + len(shown))
    columns[0].metric("Champion", f"v{row['version']}")
    for column, metric in zip(columns[1:], shown, strict=True):
        column.metric(metric, f"{row[metric]:.4f}")
    by = f" by {row['promoted_by']}" if row["promoted_by"] else ""
    why = f": {row['reason']}" if row["reason"] else ""
    st.caption(f"Promoted {when(row['promoted_at'])}{by}{why}")

without = versions.filter(~pl.col("model_name").is_in(champions["model_name"].implode()))
for name in without["model_name"].unique(maintain_order=True):
    st.subheader(name)
    st.info("No champion yet: promote a version that passes its gates.")

version_metrics = q.metric_columns(versions)
if version_metrics:
    st.subheader("Model versions")
    primary = panel.primary_metric
    metric = st.selectbox(
        "Metric",
        version_metrics,
        index=version_metrics.index(primary) if primary in version_metrics else 0,
    )
    st.altair_chart(charts.version_metric(versions, metric), width="stretch")

left, right = st.columns(2)
with left:
    st.subheader("Runs")
    if counts.is_empty():
        st.caption("No runs yet.")
    else:
        table(counts.pivot(on="status", index="kind", values="runs").fill_null(0))
with right:
    st.subheader("Drift, latest window")
    drift = q.latest_drift(panel.query(q.drift_results))
    if drift.is_empty():
        st.caption("No drift checks yet.")
    else:
        table(
            drift.select(
                "model_name", "version", "drifted", "features", "worst_feature", "worst_statistic"
            )
        )
    open_alerts = panel.query(q.alerts)
    if not open_alerts.is_empty():
        st.warning(f"{open_alerts.height} open alert(s): see Monitoring.")
