"""Runs: every stage execution, filterable; one run's params, metrics and learning curves."""

import streamlit as st

from loopline.ui import charts
from loopline.ui import queries as q
from loopline.ui.panel import current_panel, nothing_yet, table, when

panel = current_panel()
st.title("Runs")

counts = panel.query(q.run_counts)
if counts.is_empty():
    nothing_yet("no runs are recorded")
    st.stop()

left, right = st.columns(2)
kinds = left.multiselect("Kind", sorted(counts["kind"].unique()), placeholder="all kinds")
statuses = right.multiselect("Status", sorted(counts["status"].unique()), placeholder="all")
runs = panel.query(q.runs, kinds=kinds, statuses=statuses)
if runs.is_empty():
    st.info("No run matches these filters.")
    st.stop()
table(runs, column_order=[c for c in runs.columns if c not in ("id", "ended_at", "use_case")])

labels = {
    r["id"]: f"{when(r['started_at'])} · {r['kind']} · {r['name'] or r['id'][:8]} · {r['status']}"
    for r in runs.iter_rows(named=True)
}
run_id = st.selectbox("Run", list(labels), format_func=labels.__getitem__)
detail = panel.query(q.run_detail, run_id=run_id)
if detail is None:
    st.warning("This run is gone from the store; refresh the page.")
    st.stop()

st.subheader(f"{detail.kind} run {detail.name or detail.id}")
c1, c2, c3 = st.columns(3)
c1.metric("Status", detail.status)
c2.metric("Duration", f"{detail.duration_s:.1f} s" if detail.duration_s is not None else "—")
c3.metric("Peak memory", f"{detail.peak_memory_mb:.0f} MB" if detail.peak_memory_mb else "—")
st.caption(
    f"Started {when(detail.started_at)} · run `{detail.id}` · "
    f"Prefect flow run `{detail.prefect_flow_run_id or '—'}` · "
    f"commit `{(detail.git_commit or '—')[:12]}`"
)
if detail.error:
    st.error(detail.error)

metrics = panel.query(q.run_metrics, run_id=run_id)
tab_metrics, tab_params, tab_more = st.tabs(["Metrics", "Params", "Summary & environment"])
with tab_metrics:
    finals = q.final_metrics(metrics)
    if finals.is_empty():
        st.caption("This run logged no metrics.")
    else:
        table(finals)
    history = q.metric_history(metrics)
    if not history.is_empty():
        st.altair_chart(charts.metric_history(history), width="stretch")
with tab_params:
    if detail.params:
        st.json(detail.params)
    else:
        st.caption("No params.")
with tab_more:
    st.json({"summary": detail.summary, "tags": detail.tags, "artifacts": detail.artifacts})
    st.json(detail.environment, expanded=False)
