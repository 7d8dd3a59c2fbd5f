"""Models: versions, one version's lineage, gates with their evidence and package check, the
champion against its shadow or canary on live traffic, the registry's actions (promote,
request and approve, roll back), and the alias history.

Every action goes through `loopline.registry.policy`, the API the CLI uses: the page writes no
table itself. Who acts is the sidebar's actor (default LOOPLINE_ACTOR, else the OS user) in its
role (LOOPLINE_ROLE); the use case's `promotion:` policy decides what they may do, and a refusal
is shown as the API's one-line message. After every action the cached queries are cleared and
the page runs again, so it shows the state the action left.
"""

import os
from collections.abc import Callable
from datetime import UTC, datetime

import polars as pl
import streamlit as st

from loopline.lake.artifacts import ArtifactError, ArtifactStore
from loopline.registry import policy
from loopline.registry.models import CHALLENGER, CHAMPION, get_version
from loopline.registry.names import RegistryError, normalise_model_name
from loopline.registry.package import PackageRefused, load_version
from loopline.spec import SpecError, UseCaseSpec, load_spec
from loopline.ui import charts
from loopline.ui import predictions as pq
from loopline.ui import queries as q
from loopline.ui.panel import Panel, current_panel, nothing_yet, table, when

CUSTOM = "custom…"
FLASH = "models.flash"
SECOND = "%Y-%m-%d %H:%M:%S"


def first_line(exc: Exception) -> str:
    """An error as the CLI prints it: its first line."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def governing_spec(model_name: str, use_cases: list[str]) -> tuple[UseCaseSpec | None, str]:
    """The use-case spec whose model this is (its `promotion:` policy applies), or why none.

    Args:
        model_name: The registered model.
        use_cases: Names or paths to try in order (the app's use case, the model's own).
    """
    reasons = []
    key = normalise_model_name(model_name)[1]
    for use_case in dict.fromkeys(use_cases):
        try:
            spec = load_spec(use_case)
        except SpecError as exc:
            reasons.append(first_line(exc))
            continue
        if normalise_model_name(spec.model_name)[1] == key:
            return spec, ""
        reasons.append(f"use case '{spec.name}' governs '{spec.model_name}'")
    return None, "; ".join(reasons)


def act(action: Callable[[], str]) -> None:
    """Run one registry action, keep its outcome for the next run, refresh the data, rerun."""
    try:
        outcome = ("success", action())
    except (RegistryError, ArtifactError, SpecError) as exc:
        outcome = ("error", first_line(exc))
    st.session_state[FLASH] = outcome
    st.cache_data.clear()  # the panel's cached queries: show what the action left
    st.rerun()


def show_flash() -> None:
    """The outcome of the action of the previous run, once."""
    kind, message = st.session_state.pop(FLASH, (None, None))
    if kind == "success":
        st.success(message, icon=":material/check_circle:")
    elif kind == "error":
        st.error(message, icon=":material/block:")


def moved(change: policy.PolicyChange) -> str:
    """A committed promotion, approval or rollback in one line."""
    move = change.move
    source = f"v{move.from_version}" if move.from_version is not None else "unset"
    how = f" by override of {', '.join(change.failed_gates) or 'gates'}" if change.override else ""
    return (
        f"{move.alias} of {move.model_name}: {source} → v{move.to_version} "
        f"({move.action}, revision {move.revision}, by {change.actor}){how}"
    )


def rollback_preview(current: pl.DataFrame, events: pl.DataFrame) -> str:
    """Where a rollback takes each alias: from its holder to the source of its last move."""
    steps = []
    for alias, version in current.select("alias", "version").iter_rows():
        previous = q.previous_holder(events, alias)
        back = f"v{previous}" if previous is not None else "nothing earlier"
        steps.append(f"{alias}: v{version} → {back}")
    return " · ".join(steps)


def verify(panel: Panel, model_name: str, number: int, actor: str) -> None:
    """Load the version through the verified loader; show what it found or why it refused."""
    try:
        who = policy.identity(actor or None)
        with panel.store.reader() as session:
            version = get_version(session, model_name, number)
        artifacts = ArtifactStore(panel.settings.artifacts_dir)
        verified = load_version(panel.store, artifacts, version, actor=who.actor)
    except (RegistryError, ArtifactError) as exc:
        st.error(first_line(exc), icon=":material/gpp_bad:")
        if isinstance(exc, PackageRefused):
            st.caption("The refusal is recorded in the audit log (`package_refused`).")
        return
    what = "package" if verified.package is not None else "model file (no package)"
    st.success(
        f"Verified: the {what} matches its hash `{verified.source_id[:19]}…`, limits and "
        f"signature ({verified.booster.num_trees()} trees).",
        icon=":material/verified:",
    )


def ask_now() -> None:
    """Point the "who was champion at" inputs at this second (UTC)."""
    now = datetime.now(UTC).replace(microsecond=0)
    st.session_state["models.at_date"] = now.date()
    st.session_state["models.at_time"] = now.time()


def show_evidence(results: tuple[dict, ...]) -> None:
    """One expander per verdict with evidence beyond a metric bound, in three columns."""
    shown = [
        (result, evidence)
        for result in results
        if (evidence := q.gate_evidence(result)).kind not in ("min", "max")
        and not evidence.is_empty
    ]
    columns = st.columns(3) if shown else []
    for i, (result, evidence) in enumerate(shown):
        verdict = "passed" if result["passed"] else "FAILED"
        label = f"Evidence: {evidence.gate} ({evidence.kind or 'gate'}, {verdict})"
        with columns[i % 3].expander(label):
            if evidence.facts:
                st.markdown("\n".join(f"- {k}: `{v}`" for k, v in evidence.facts.items()))
            for heading, frame in evidence.tables.items():
                st.markdown(f"**{heading}**")
                table(frame)


def show_live_comparison(panel: Panel, model_name: str, use_cases: list[str]) -> None:
    """The champion against its shadow or canary on logged traffic (`compare_live`)."""
    st.subheader("Live comparison")
    use_case = next(
        (u for u in dict.fromkeys(use_cases) if governing_spec(model_name, [u])[0]), None
    )
    if use_case is None:
        st.caption(f"No use case governs {model_name}: nothing to compare it by.")
        return
    role_col, window_col = st.columns(2)
    role = role_col.selectbox(
        "Challenger", ["auto", "shadow", "canary"], key="models.live_role",
        help="auto: whichever of shadow or canary answered last in the window.",
    )  # fmt: skip
    window = window_col.selectbox("Window", list(pq.WINDOWS_H), index=1, key="models.live_window")
    with st.spinner("Comparing on the prediction log"):
        found = panel.read(
            pq.live_comparison, use_case=use_case, model_name=model_name, role=role,
            hours=pq.WINDOWS_H[window],
        )  # fmt: skip
    if found.reason:
        st.info(found.reason, icon=":material/info:")
    if found.champion is None or found.challenger is None:
        return
    challenger = found.challenger_role or "challenger"
    c1, c2, c3, c4 = st.columns(4)
    if found.agreement is not None:
        c1.metric("Paired requests", f"{found.agreement.pairs:,}")
        if found.agreement.decisions is not None:
            c2.metric("Same decision", f"{found.agreement.decisions:.1%}")
        elif found.agreement.within_share is not None:
            c2.metric("Within 5%", f"{found.agreement.within_share:.1%}")
    else:
        c1.metric("Requests", f"{found.champion.rows:,} / {found.challenger.rows:,}")
        c2.metric(
            "Canary share",
            f"{found.challenger.rows / (found.champion.rows + found.challenger.rows):.1%}",
        )
    if found.distance is not None:
        c3.metric("KS distance", f"{found.distance.ks:.3f}")
        c4.metric("PSI", f"{found.distance.psi:.3f}")
    st.altair_chart(charts.live_scores(pq.histogram_frame(found), challenger), width="stretch")
    table(pq.figure_table(found).rename({"challenger": challenger}))
    if found.metric is not None:
        better = "higher" if found.metric.higher_is_better else "lower"
        how = "the same requests" if found.metric.paired else "each model's own requests"
        st.caption(
            f"{found.metric.metric} on labelled requests ({how}); {better} is better. "
            f"Intervals: 95% bootstrap over {found.metric.resamples} resamples; the "
            "difference is the challenger's minus the champion's."
        )
    elif found.metric_reason:
        st.caption(f"No live metric: {found.metric_reason}.")
    for note in found.notes:
        st.caption(f"Note: {note}.")


panel = current_panel()
st.title("Models")

models = panel.query(q.models)
if models.is_empty():
    nothing_yet("no models are registered")
    st.stop()

name = st.selectbox("Model", models["name"].to_list())
model_row = models.row(models["name"].to_list().index(name), named=True)
versions = panel.query(q.model_versions, model_name=name)
if versions.is_empty():
    nothing_yet(f"model {name} has no versions")
    st.stop()

st.sidebar.subheader("Acting as")
actor = st.sidebar.text_input(
    "Actor",
    value=os.environ.get("LOOPLINE_ACTOR") or policy.identity().actor,
    key="models.actor",
    persist_state="session",
    help="Recorded with every action (default: LOOPLINE_ACTOR, else the OS user).",
)
role = st.sidebar.text_input(
    "Role",
    value=os.environ.get("LOOPLINE_ROLE", ""),
    key="models.role",
    persist_state="session",
    help="Overrides and approvals need an approver role (default: LOOPLINE_ROLE).",
)

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
number = st.selectbox(
    "Version", numbers, index=start, format_func=lambda v: f"v{v}", key="models.version"
)
chosen = versions.row(numbers.index(number), named=True)
lineage = panel.query(q.version_lineage, model_version_id=chosen["id"])
record = panel.query(q.version_record, model_version_id=chosen["id"])
gates = panel.query(q.version_gates, model_version_id=chosen["id"])

lineage_col, package_col = st.columns(2)
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
with package_col:
    st.subheader(f"Package of v{number}")
    if record is not None:
        st.markdown(
            f"- status **{record['status']}**\n"
            f"- package `{record['package_id'] or '— (registered without a package)'}`\n"
            f"- model `{record['model_artifact_id']}`"
        )
        if record["status"] == "archived":
            st.warning(
                f"v{number} is archived: it cannot take an alias until it is unarchived.",
                icon=":material/inventory_2:",
            )
    if st.button(
        "Verify package",
        key="models.verify",
        icon=":material/verified_user:",
        help="Load it as serving does: hash, size and tree limits, signature. A refusal is "
        "audited.",
    ):
        verify(panel, name, number, actor)
st.subheader(f"Gates of v{number}")
if gates is None or not gates.results:
    st.caption("No gate was evaluated on this version (it counts as failing).")
else:
    table(
        q.gate_table(gates.results).select(
            "gate", "verdict", "measures", "observed", "threshold", "note", "evaluated_at"
        )
    )
    st.caption(f"Promotion: {gates.explain()}.")
    show_evidence(gates.results)

spec, no_policy = governing_spec(name, [panel.settings.use_case, model_row["use_case"]])
show_live_comparison(panel, name, [panel.settings.use_case, model_row["use_case"]])

st.subheader(f"Actions on v{number}")
show_flash()
current = panel.query(q.aliases, model_name=name)
events = panel.query(q.alias_events, model_name=name)
gates_pass = gates is not None and gates.passed
promote_col, rollback_col = st.columns(2)

with promote_col:
    if spec is None:
        st.warning(f"No promotion policy applies to {name}: {no_policy}.", icon=":material/policy:")
    else:
        rules = spec.promotion
        roles = ", ".join(rules.approver_roles) or "none (no one may override)"
        others = [a for a in current["alias"].to_list() if a not in (CHAMPION, CHALLENGER)]
        with st.form("models.promote"):
            st.markdown(f"**Promote v{number}** (policy of use case `{spec.name}`)")
            alias_choice = st.selectbox(
                "Alias", [CHAMPION, CHALLENGER, *others, CUSTOM], key="models.alias"
            )
            custom = st.text_input(
                "Custom alias",
                key="models.custom_alias",
                help="Used when Alias is 'custom…': lower-case letters, digits, '_' and '-'.",
            )
            expect = st.number_input(
                "Expected current version",
                min_value=0,
                value=None,
                step=1,
                key="models.expect",
                placeholder="whatever holds the alias now",
                help="Refuse unless the alias is at this version when the move happens (0: "
                "unset), so you never replace a version you have not seen.",
            )
            reason = st.text_area("Reason", key="models.reason", height=80)
            override = False
            if not gates_pass:
                override = st.checkbox(
                    "Override failed gates",
                    key="models.override",
                    help=f"Needs a reason and an approver role ({roles}); recorded as an "
                    "override with the failed gates.",
                )
            buttons = st.columns(2)
            promote_now = buttons[0].form_submit_button(
                "Promote", key="models.promote_submit", type="primary"
            )
            request_now = rules.two_person_rule and buttons[1].form_submit_button(
                "Request promotion", key="models.request_submit"
            )
        if rules.two_person_rule:
            st.caption(
                f"The two-person rule is on: `{CHAMPION}` moves when someone requests it and "
                f"another approver ({roles}) approves it below."
            )
        alias = custom if alias_choice == CUSTOM else alias_choice
        if promote_now:

            def promote() -> str:
                change = policy.promote(
                    panel.store, rules, model_name=name, version=number, alias=alias,
                    actor=actor, role=role, override=override, reason=reason,
                    expect_version=expect, use_case=spec.name,
                )  # fmt: skip
                return moved(change)

            act(promote)
        if request_now:

            def request() -> str:
                made = policy.request_promotion(
                    panel.store, rules, model_name=name, version=number, reason=reason,
                    alias=alias, actor=actor, role=role, override=override, use_case=spec.name,
                )  # fmt: skip
                return (
                    f"Requested v{made['version']} as {made['alias']} (request "
                    f"{made['id'][:8]}, expires {made['expires_at'][:16]} UTC): another "
                    "approver must approve it."
                )

            act(request)

with rollback_col:
    if current.is_empty():
        st.caption("No alias is set: there is nothing to roll back.")
    else:
        held = current["alias"].to_list()
        holders = dict(zip(current["alias"], current["version"], strict=True))
        with st.form("models.rollback"):
            st.markdown("**Roll back**")
            back_alias = st.selectbox(
                "Alias",
                held,
                index=held.index(CHAMPION) if CHAMPION in held else 0,
                key="models.rollback_alias",
            )
            st.caption(rollback_preview(current, events))
            back_reason = st.text_area("Reason", key="models.rollback_reason", height=80)
            back_now = st.form_submit_button("Roll back", key="models.rollback_submit")
        if back_now:

            def roll_back() -> str:
                change = policy.rollback(
                    panel.store, model_name=name, alias=back_alias, actor=actor, role=role,
                    reason=back_reason, use_case=spec.name if spec else None,
                )  # fmt: skip
                return moved(change)

            act(roll_back)

requests = panel.query(q.promotion_requests, model_name=name)
if spec is not None and (spec.promotion.two_person_rule or not requests.is_empty()):
    st.subheader("Promotion requests")
    pending = requests.filter(pl.col("status") == policy.PENDING)
    if pending.is_empty():
        st.caption("No pending request.")
    else:
        table(
            pending.with_columns(pl.col("id").str.slice(0, 8)).select(
                *("id", "version", "from_version", "requested_by", "reason", "override"),
                *("created_at", "expires_at"),
            )
        )
        labels = {
            row["id"]: f"{row['id'][:8]} · v{row['version']} by {row['requested_by']}"
            for row in pending.iter_rows(named=True)
        }
        with st.form("models.decide"):
            request_id = st.selectbox(
                "Request", list(labels), format_func=labels.__getitem__, key="models.request"
            )
            note = st.text_input(
                "Note", key="models.decision_note", help="With an approval (optional), or why "
                "it is rejected (required)."
            )  # fmt: skip
            buttons = st.columns(2)
            approve_now = buttons[0].form_submit_button(
                "Approve", key="models.approve_submit", type="primary"
            )
            reject_now = buttons[1].form_submit_button("Reject", key="models.reject_submit")
        rules = spec.promotion
        if approve_now:

            def approve() -> str:
                change = policy.approve_request(
                    panel.store, rules, request_id, actor=actor, role=role, note=note,
                    model_name=name, use_case=spec.name,
                )  # fmt: skip
                return f"Approved request {request_id[:8]}: {moved(change)}"

            act(approve)
        if reject_now:

            def reject() -> str:
                done = policy.reject_request(
                    panel.store, rules, request_id, reason=note, actor=actor, role=role,
                    model_name=name, use_case=spec.name,
                )  # fmt: skip
                return f"Rejected request {done['id'][:8]} (v{done['version']}): {note}"

            act(reject)
    decided = requests.filter(pl.col("status") != policy.PENDING)
    if not decided.is_empty():
        with st.expander(f"Decided requests ({decided.height})"):
            table(
                decided.select(
                    *("id", "version", "status", "requested_by", "reason", "decided_by"),
                    *("decision_note", "decided_at"),
                )
            )

st.subheader("Aliases")
if current.is_empty():
    st.caption("No alias is set.")
else:
    table(current)
if not events.is_empty():
    st.markdown("**Who was champion at…**")
    if "models.at_date" not in st.session_state:
        ask_now()
    known = sorted(set(events["alias"]), key=lambda a: (a != CHAMPION, a))
    alias_col, date_col, time_col, now_col = st.columns([3, 3, 3, 1], vertical_alignment="bottom")
    at_alias = alias_col.selectbox("Alias", known, key="models.at_alias")
    day = date_col.date_input("Date (UTC)", key="models.at_date")
    clock = time_col.time_input("Time (UTC)", key="models.at_time", step=1)
    now_col.button("Now", key="models.at_now", on_click=ask_now, help="Ask about this moment.")
    moment = datetime.combine(day, clock, tzinfo=UTC)
    change = panel.query(q.alias_moment, model_name=name, alias=at_alias, at=moment)
    if change is None or change.to_version is None:
        st.info(f"At {moment.strftime(SECOND)} UTC, **{at_alias}** was not set.")
    else:
        source = f"v{change.from_version}" if change.from_version is not None else "unset"
        st.info(
            f"At {moment.strftime(SECOND)} UTC, **{at_alias}** was **v{change.to_version}**: "
            f"{change.action} by **{change.actor}** at {change.at.strftime(SECOND)} UTC "
            f"(from {source}, revision {change.revision})"
            + (f", because: {change.reason}" if change.reason else "."),
            icon=":material/history:",
        )
    st.markdown("**History**")
    st.altair_chart(charts.alias_timeline_at(events, moment), width="stretch")
    table(events.sort("at", descending=True))
st.caption(f"Newest alias move: {when(events['at'].max()) if events.height else '—'}")
