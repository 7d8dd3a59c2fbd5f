"""Data: every ingest batch with its contract results, and how fresh each feature view is.

Batches come from the metadata store; freshness from the feature store itself (opening it
imports Feast, which takes seconds the first time, so it is drawn last, under a spinner).
"""

import polars as pl
import streamlit as st

from loopline.ui import charts
from loopline.ui import data_queries as dq
from loopline.ui.panel import current_panel, nothing_yet, table, when

panel = current_panel()
st.title("Data")

names = panel.query(dq.batch_datasets)
if not names:
    nothing_yet("no data has been ingested")
    st.stop()

st.subheader("Ingest batches")
dataset_col, status_col = st.columns(2)
datasets = dataset_col.multiselect(
    "Dataset", names, placeholder="all datasets", key="dataset", bind="query-params"
)
statuses = status_col.multiselect(
    "Status", dq.BATCH_STATUSES, placeholder="all", key="batch_status", bind="query-params"
)
found = panel.query(dq.batches, datasets=datasets, statuses=statuses)
if found.is_empty():
    st.info("No batch matches these filters.")
else:
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Batches", found.height)
    c2.metric("Rows accepted", f"{found['rows_accepted'].sum():,}")
    c3.metric("Rows quarantined", f"{found['rows_quarantined'].sum():,}")
    c4.metric("Batches rejected", found.filter(pl.col("status") == "rejected").height)
    st.altair_chart(charts.batch_volumes(dq.batch_volumes(found)), width="stretch")
    table(found, column_order=[c for c in found.columns if c not in ("id", "run_id")])

    labels = {
        r["id"]: f"{when(r['created_at'])} · {r['dataset']} · {r['status']} · {r['rows_in']:,} rows"
        for r in found.iter_rows(named=True)
    }
    batch_id = st.selectbox("Batch", list(labels), format_func=labels.__getitem__)
    detail = panel.query(dq.batch_detail, batch_id=batch_id)
    if detail is None:
        st.warning("This batch is gone from the store; refresh the page.")
    else:
        st.markdown(f"**Batch `{detail.id}`** of `{detail.dataset}`: {detail.status}")
        if detail.message:
            (st.error if detail.status == "rejected" else st.caption)(detail.message)
        if detail.rules.is_empty():
            st.caption("Every contract rule passed.")
        else:
            st.markdown("Broken rules")
            table(detail.rules)
        st.markdown("Source files")
        table(detail.sources)
        if detail.schema_changes:
            with st.expander("Schema changes"):
                st.json(detail.schema_changes)
        if detail.report_id:
            report = panel.query(
                dq.batch_report,
                report_id=detail.report_id,
                artifacts_dir=str(panel.settings.artifacts_dir),
            )
            if report is not None:
                st.download_button(
                    "Download the batch report (JSON)",
                    report,
                    file_name=f"batch-{detail.id}.json",
                    mime="application/json",
                    icon=":material/download:",
                )

st.subheader("Feature freshness")
try:
    with st.spinner("Reading the feature store"):
        freshness = panel.read(dq.feature_freshness)
except Exception as exc:  # a broken repo or registry must not take the batches down with it
    st.warning(f"Cannot read the feature store: {exc}")
    st.stop()
registered = freshness.filter("registered")
if registered.is_empty():
    st.caption("No feature view is registered yet: run `loopline features build`.")
    table(freshness.select("view", "table_version", "table_rows", "table_watermark"))
    st.stop()
stale = registered.filter(pl.col("online_watermark").is_null())
c1, c2, c3 = st.columns(3)
c1.metric("Views served", registered.filter("online").height)
lag = registered["lag_h"].max()
c2.metric("Most behind", f"{lag:.1f} h" if lag is not None else "—")
c3.metric("Not yet materialized", stale.height)
if registered["lag_h"].is_not_null().any():
    st.altair_chart(charts.feature_lag(registered), width="stretch")
    st.caption(
        "Blue: the offline table has nothing newer. Red: rows built but not yet materialized "
        "online (`loopline features materialize`)."
    )
table(freshness)
