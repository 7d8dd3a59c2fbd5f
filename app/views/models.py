"""Models: versions with metrics, one version's lineage and gates, aliases and their history."""

import polars as pl
import streamlit as st

from loopline.ui import charts
from loopline.ui import queries as q
from loopline.ui.panel import current_panel, nothing_yet, table, when

panel = current_panel()
st.title("Models")

models = panel.query(q.models)
if models.is_empty():
    nothing_yet("no models are registered")
    st.stop()

name = st.selectbox("Model", models["name"].to_list())
versions = panel.query(q.model_versions, model_name=name)
if versions.is_empty():
    nothing_yet(f"model {name} has no versions")
    st.stop()

champion = versions.filter(pl.col("is_champion"))
st.metric("Champion", f"v{champion['version'][0]}" if champion.height else "none yet")
table(
    versions.with_columns(gates=pl.format("{}/{}", "gates_passed", "gates_total")),
    column_order=[
        *("version", "aliases", "status", "created_at", "gates"),
        *q.metric_columns(versions),
        *("run_id", "feature_service"),
    ],
)

numbers = versions["version"].to_list()
start = numbers.index(champion["version"][0]) if champion.height else 0
number = st.selectbox("Version", numbers, index=start, format_func=lambda v: f"v{v}")
chosen = versions.row(numbers.index(number), named=True)
lineage = panel.query(q.version_lineage, model_version_id=chosen["id"])

lineage_col, gates_col = st.columns(2)
with lineage_col:
    st.subheader(f"Lineage of v{number}")
    if lineage is not None:
        st.markdown(
            f"- run `{lineage.run_id}` {lineage.run_name or ''}\n"
            f"- commit `{(lineage.git_commit or '—')[:12]}`\n"
            f"- feature service `{lineage.feature_service}`"
            f" ({len(lineage.feature_names)} inputs)\n"
            f"- model artifact `{lineage.artifact_id[:19]}…`"
        )
        if lineage.datasets.is_empty():
            st.caption("No dataset versions recorded.")
        else:
            table(lineage.datasets.select("role", "dataset", "table_version", "row_count"))
with gates_col:
    st.subheader(f"Gates of v{number}")
    gates = panel.query(q.gate_results, model_name=name).filter(pl.col("version") == number)
    if gates.is_empty():
        st.caption("No gate was evaluated on this version.")
    else:
        verdict = pl.when("passed").then(pl.lit("passed")).otherwise(pl.lit("FAILED"))
        table(gates.select("gate", verdict.alias("verdict"), "observed", "threshold", "detail"))

st.subheader("Aliases")
current = panel.query(q.aliases, model_name=name)
events = panel.query(q.alias_events, model_name=name)
if current.is_empty():
    st.caption("No alias is set.")
else:
    table(current)
if not events.is_empty():
    st.markdown("**History**")
    st.altair_chart(charts.alias_timeline(events), width="stretch")
    table(events.sort("at", descending=True))
st.caption(f"Newest alias move: {when(events['at'].max()) if events.height else '—'}")
