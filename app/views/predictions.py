"""Predictions: look one prediction up by request id and walk its lineage, from the served
feature values and model inputs to the model version, the run that trained it and the table
versions behind it; below, the latest predictions to pick from.

The request id is bound to the URL (`?request_id=...`), so a prediction can be shared by link.
"""

import streamlit as st

from loopline.ui import predictions as pq
from loopline.ui import queries as q
from loopline.ui.panel import column_config, current_panel, nothing_yet, table, when

LATEST = "predictions.latest"


def pick_latest() -> None:
    """Look up the prediction picked in the latest-predictions table (runs before the page)."""
    picked = st.session_state[LATEST].selection.rows
    shown = st.session_state.get("predictions.shown")
    if picked and shown is not None and picked[0] < len(shown):
        st.session_state["request_id"] = shown[picked[0]]


def show_row(row: pq.ScoredBy) -> None:
    """One model's row of the request: its answer, lineage, features and inputs."""
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Score", f"{row.score:.4f}" if row.score is not None else "—")
    c2.metric("Role", row.role)
    c3.metric("Model", f"v{row.model_version}")
    c4.metric("Latency", f"{row.latency_ms:.1f} ms" if row.latency_ms is not None else "—")
    lineage = (
        panel.query(q.version_lineage, model_version_id=row.model_version_id)
        if row.model_version_id
        else None
    )
    facts = [
        f"- model **{row.model_name}** version **{row.model_version}**"
        + (f" (`{row.model_version_id}`)" if row.model_version_id else ""),
        f"- served as **{row.role}**" + (f" under alias `{row.alias}`" if row.alias else ""),
        f"- feature service `{row.feature_service or '—'}`",
        f"- event time {when(row.ts)} · received {when(row.received_at)}",
    ]
    if lineage is not None:
        facts.append(f"- commit `{(lineage.git_commit or '—')[:12]}`")
    st.markdown("\n".join(facts))
    if lineage is None:
        st.caption("The registry has no record of this model version: no run or data lineage.")
    else:
        st.page_link(
            "views/runs.py",
            label=f"Trained by run {lineage.run_name or lineage.run_id} (`{lineage.run_id}`)",
            icon=":material/play_circle:",
            query_params={"query": f"id = '{lineage.run_id}'"},
        )
        st.markdown("**Table versions behind this model version**")
        if lineage.datasets.is_empty():
            st.caption("No dataset versions recorded.")
        else:
            table(lineage.datasets.select("role", "dataset", "table_version", "row_count", "uri"))
    features_col, inputs_col = st.columns(2)
    with features_col:
        st.markdown(f"**Served features** ({row.features.height})")
        if row.features.height:
            table(row.features)
        else:
            st.caption("None logged.")
        st.markdown("**Feature rows used** (row time per view, age at the event)")
        if row.feature_rows.height:
            table(row.feature_rows)
        else:
            st.caption("None logged.")
        if row.unknown_entities:
            st.warning(f"Unknown entities: {', '.join(row.unknown_entities)}")
    with inputs_col:
        st.markdown(f"**Model inputs** ({row.inputs.height})")
        if row.inputs.height:
            table(row.inputs)
        else:
            st.caption("None logged.")


panel = current_panel()
st.title("Predictions")

latest = panel.read(pq.latest_predictions, limit=50)
request_id = st.text_input(
    "Request id",
    key="request_id",
    bind="query-params",
    placeholder="e.g. req-0042, or pick one of the latest predictions below",
).strip()

if request_id:
    detail = panel.read(pq.prediction_detail, request_id=request_id)
    if detail is None:
        st.warning(f"No prediction with request id `{request_id}` is logged.")
    else:
        st.caption(
            f"Request `{detail.request_id}` · event `{detail.event_id or '—'}` · entities "
            + (", ".join(f"{k}={v}" for k, v in detail.entities.items()) or "—")
        )
        tabs = st.tabs([f"{r.role} · v{r.model_version}" for r in detail.rows])
        for tab, row in zip(tabs, detail.rows, strict=True):
            with tab:
                show_row(row)
        with st.expander("The request as received"):
            st.json(detail.request)

st.subheader("Latest predictions")
if latest.is_empty():
    nothing_yet("no prediction is logged in the last week")
    st.stop()
st.session_state["predictions.shown"] = latest["request_id"].to_list()
st.dataframe(
    latest,
    key=LATEST,
    on_select=pick_latest,
    selection_mode="single-row",
    hide_index=True,
    column_config=column_config(latest)
    | {"latency_ms": st.column_config.NumberColumn("latency", format="%.1f ms")},
)
st.caption("Pick a row to look its prediction up; the link of the page then names it.")
