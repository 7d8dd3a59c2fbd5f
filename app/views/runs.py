"""Runs: search every stage execution with the run query language; one run's record.

The query box takes `loopline.runs_query` syntax (`metrics.roc_auc > 0.9 and params.num_leaves
= 63`); the kind and status filters are added to it. Pages follow the search's keyset page
tokens. The query, filters and sort are bound to the URL, so a search can be shared.
"""

import streamlit as st
from views._evaluation import show_evaluation

from loopline.runs_query import MAX_PAGE, QueryError, parse_order_by
from loopline.ui import charts
from loopline.ui import queries as q
from loopline.ui.panel import current_panel, nothing_yet, table, when

QUERY_HELP = (
    "Conditions on `metrics.KEY`, `params.KEY`, `tags.KEY` and run fields (`kind`, `status`, "
    "`name`, `started_at`, `duration_s`, ...) joined by `and`, `or`, `not` and parentheses. "
    "Operators: `= != < <= > >=`, `in (...)`, `like '%x%'`, `ilike`, `is null`. Text is "
    "quoted: `kind = 'train'`; times take ISO dates or ages: `started_at >= '-7d'`."
)


def show_query_error(exc: QueryError, text: str, what: str) -> None:
    """The error as the page shows it: the message, then the text with a caret under the spot."""
    st.error(f"{what}: {exc}", icon=":material/error:")
    pointer = q.query_pointer(text, exc.position)
    if pointer:
        st.code(pointer, language=None)


panel = current_panel()
st.title("Runs")

counts = panel.query(q.run_counts)
if counts.is_empty():
    nothing_yet("no runs are recorded")
    st.stop()

query = st.text_input(
    "Query",
    key="query",
    bind="query-params",
    placeholder="metrics.roc_auc > 0.9 and params.lightgbm.num_leaves = 63",
    help=QUERY_HELP,
)
kind_col, status_col, sort_col, order_col, size_col = st.columns([3, 3, 3, 1, 1])
kinds = kind_col.multiselect(
    "Kind",
    sorted(counts["kind"].unique()),
    placeholder="all kinds",
    key="kind",
    bind="query-params",
)
statuses = status_col.multiselect(
    "Status",
    sorted(counts["status"].unique()),
    placeholder="all",
    key="status",
    bind="query-params",
)
sort_field = sort_col.selectbox(
    "Sort by",
    panel.query(q.sort_fields),
    key="sort",
    bind="query-params",
    accept_new_options=True,
    help="A run field or metrics.KEY / params.KEY (type any); runs without a value come last.",
)
order = order_col.selectbox("Order", ["desc", "asc"], key="order", bind="query-params")
limit = int(
    size_col.number_input("Page size", min_value=1, max_value=MAX_PAGE, value=50, key="page_size")
)
order_by = f"{sort_field or 'started_at'} {order}"

# Page tokens of the pages seen so far; a new search starts again at page 1.
search_key = (query, tuple(kinds), tuple(statuses), order_by, limit)
pages = st.session_state.get("runs.pages")
if pages is None or pages["search"] != search_key:
    pages = st.session_state["runs.pages"] = {"search": search_key, "tokens": [None]}
tokens: list[str | None] = pages["tokens"]

try:
    parse_order_by(order_by)
except QueryError as exc:
    show_query_error(exc, order_by, "Sort by")
    st.stop()
try:
    found = panel.query(
        q.search,
        text=query,
        kinds=kinds,
        statuses=statuses,
        order_by=order_by,
        page_token=tokens[-1],
        limit=limit,
    )
except QueryError as exc:
    show_query_error(exc, query, "Query")
    st.stop()

first = (len(tokens) - 1) * limit + 1
shown = found.runs.height
st.caption(
    f"{found.total} matching run(s) · page {len(tokens)}"
    + (f" · runs {first}-{first + shown - 1}" if shown else "")
    + (f" · query `{found.query}`" if found.query else "")
)
if found.runs.is_empty():
    st.info("No run matches this search.")
    st.stop()
table(
    found.runs,
    column_order=[
        c for c in found.runs.columns if c not in ("id", "ended_at", "use_case", "parent_run_id")
    ],
)

prev_col, next_col, compare_col = st.columns([1, 1, 4])
if prev_col.button("Previous page", disabled=len(tokens) == 1, icon=":material/chevron_left:"):
    tokens.pop()
    st.rerun()
if next_col.button(
    "Next page", disabled=found.next_page_token is None, icon=":material/chevron_right:"
):
    tokens.append(found.next_page_token)
    st.rerun()
compare_col.page_link(
    "views/compare.py",
    label="Compare runs side by side",
    icon=":material/compare_arrows:",
    query_params={"query": query} if query else None,
)

labels = {
    r["id"]: f"{when(r['started_at'])} · {r['kind']} · {r['name'] or r['id'][:8]} · {r['status']}"
    for r in found.runs.iter_rows(named=True)
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
evaluation = panel.query(
    q.run_evaluation, run_id=run_id, artifacts_dir=str(panel.settings.artifacts_dir)
)
names = ["Metrics", *(["Evaluation"] if evaluation else []), "Params", "Summary & environment"]
tabs = dict(zip(names, st.tabs(names), strict=True))
with tabs["Metrics"]:
    finals = q.final_metrics(metrics)
    if finals.is_empty():
        st.caption("This run logged no metrics.")
    else:
        table(finals)
    history = q.metric_history(metrics)
    if not history.is_empty():
        st.altair_chart(charts.metric_history(history), width="stretch")
if evaluation is not None:
    with tabs["Evaluation"]:
        show_evaluation(evaluation, primary_metric=panel.primary_metric)
with tabs["Params"]:
    if detail.params:
        st.json(detail.params)
    else:
        st.caption("No params.")
with tabs["Summary & environment"]:
    st.json({"summary": detail.summary, "tags": detail.tags, "artifacts": detail.artifacts})
    st.json(detail.environment, expanded=False)
