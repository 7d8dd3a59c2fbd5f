"""Compare: pick 2 to 50 runs from a search; their param differences, metrics and curves.

The query box takes the run query language (as on the Runs page) and narrows the runs offered;
the picked runs are kept in the URL (`?runs=<id>&runs=<id>`), so a comparison can be shared.
"""

import polars as pl
import streamlit as st

from loopline.runs_query import MAX_COMPARE, QueryError, RunNotFoundError
from loopline.ui import charts
from loopline.ui import queries as q
from loopline.ui.panel import current_panel, nothing_yet, table, when

OFFERED = 200  # runs offered to pick from at most (the newest matching, plus those picked)
MAX_CURVES = 8  # curves drawn before the person picks others

panel = current_panel()
st.title("Compare runs")

counts = panel.query(q.run_counts)
if counts.is_empty():
    nothing_yet("no runs are recorded")
    st.stop()

query = st.text_input(
    "Query",
    key="query",
    bind="query-params",
    placeholder="kind = 'train' and metrics.roc_auc > 0.8",
    help="Narrows the runs offered below (run query language, as on the Runs page).",
)
try:
    offered = panel.query(q.search, text=query, limit=OFFERED).runs
except QueryError as exc:
    st.error(f"Query: {exc}", icon=":material/error:")
    pointer = q.query_pointer(query, exc.position)
    if pointer:
        st.code(pointer, language=None)
    st.stop()

# Runs picked before (or named in the URL) stay offered when the query no longer matches them.
if "runs" not in st.session_state:
    st.session_state["runs"] = [r for r in st.query_params.get_all("runs") if r][:MAX_COMPARE]
picked = st.session_state["runs"]
missing = [r for r in picked if r not in set(offered["id"])]
if missing:
    kept = panel.query(
        q.search, text=f"id in ({', '.join(q.quote(r) for r in missing)})", limit=OFFERED
    ).runs
    offered = pl.concat([kept, offered], how="diagonal_relaxed")
    # A run named in the URL that does not exist is dropped rather than failing the widget.
    st.session_state["runs"] = [r for r in picked if r in set(offered["id"])]
labels = {
    r["id"]: f"{r['name'] or r['kind']} · {r['id'][:8]} · {r['kind']} · {r['status']} · "
    f"{when(r['started_at'])}"
    for r in offered.iter_rows(named=True)
}
run_ids = st.multiselect(
    "Runs",
    list(labels),
    format_func=labels.__getitem__,
    key="runs",
    max_selections=MAX_COMPARE,
    placeholder="pick 2 or more runs",
)
if run_ids:
    st.query_params["runs"] = run_ids  # ids, not labels: a link that stays valid
elif "runs" in st.query_params:
    del st.query_params["runs"]
if len(run_ids) < 2:
    st.info(f"Pick at least two runs to compare (up to {MAX_COMPARE}).")
    st.stop()

try:
    comparison = panel.query(q.compare, run_ids=run_ids)
except (QueryError, RunNotFoundError) as exc:
    st.error(str(exc))
    st.stop()

table(comparison.runs.drop("id"))

st.subheader("Params")
every_param = st.toggle("Show every param", key="compare.every_param")
params = q.param_diff(comparison, every_param=every_param)
differing = comparison.params["differs"].sum()
st.caption(
    f"{differing} of {comparison.params.height} params differ"
    + ("" if every_param else " (the equal ones are hidden)")
)
if params.is_empty():
    st.caption("Every param is the same in these runs.")
else:
    table(params)

st.subheader("Final metrics")
metrics = q.metric_table(comparison)
if metrics.is_empty():
    st.caption("None of these runs logged final metrics.")
else:
    table(metrics.drop("differs"))

st.subheader("Learning curves")
curves = q.comparison_curves(comparison)
keys = curves["key"].unique().sort().to_list()
if not keys:
    st.caption("None of these runs logged a learning curve.")
    st.stop()
chosen = st.multiselect("Curves", keys, default=keys[:MAX_CURVES], key="compare.curves")
columns = st.columns(2)
for i, key in enumerate(chosen):
    with columns[i % 2]:
        st.markdown(f"**{key}**")
        st.altair_chart(charts.compare_curves(curves, key), width="stretch")
