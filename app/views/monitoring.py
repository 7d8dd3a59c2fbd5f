"""Monitoring: drift of each feature per window against its threshold, and open alerts."""

import polars as pl
import streamlit as st

from loopline.ui import charts
from loopline.ui import queries as q
from loopline.ui.panel import current_panel, nothing_yet, table, when

panel = current_panel()
st.title("Monitoring")

drift = panel.query(q.drift_results)
open_alerts = panel.query(q.alerts)
if drift.is_empty() and open_alerts.is_empty():
    nothing_yet("no drift checks have run")
    st.stop()

if not open_alerts.is_empty():
    st.subheader(f"Open alerts ({open_alerts.height})")
    table(open_alerts)

if drift.is_empty():
    st.caption("No drift checks yet.")
    st.stop()

names = drift["model_name"].unique(maintain_order=True).to_list()
name = st.selectbox("Model", names) if len(names) > 1 else names[0]
drift = drift.filter(pl.col("model_name") == name)

latest = drift.filter(pl.col("window_end") == pl.col("window_end").max())
drifted = latest.filter("drifted")
window = f"{when(latest['window_start'].min())} → {when(latest['window_end'].max())}"
c1, c2, c3 = st.columns(3)
c1.metric("Features checked", latest["feature"].n_unique())
c2.metric("Drifted in latest window", drifted.height)
c3.metric("Windows", drift["window_end"].n_unique())
st.caption(f"Latest window {window}, model {name} v{latest['version'][0]}")

features = drift["feature"].unique(maintain_order=True).to_list()
worst = (
    drift.group_by("feature")
    .agg((pl.col("statistic") / pl.col("threshold")).max().alias("ratio"))
    .sort("ratio", descending=True)["feature"]
    .to_list()
)
chosen = st.multiselect("Features", features, default=worst[:6])
if chosen:
    st.altair_chart(charts.drift(drift.filter(pl.col("feature").is_in(chosen))), width="stretch")
    st.caption("Dashed: each feature's threshold. Filled points: windows that drifted.")

st.subheader("Latest window")
table(latest.select("feature", "method", "statistic", "threshold", "drifted", "sample_size"))
with st.expander("Every window"):
    table(drift.sort("window_end", "feature", descending=[True, False]))
