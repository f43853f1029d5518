"""Home: what is in the store, or a first-run panel that loads the sample data."""
from __future__ import annotations

import plotly.express as px
import streamlit as st

from core import ui

st.set_page_config(page_title="Synthetic trial workbench", page_icon=":material/science:", layout="wide")
ui.sidebar_store()

st.title("Synthetic clinical trial workbench")
st.caption("Real labelled clinical trials (ClinicalTrials.gov, TOP, IQVIA labels, DrugBank) and the synthetic "
           "trials generated from them.")

# The importer's progress stages, as a person reads them.
STAGES = {
    "xml": "Reading ClinicalTrials.gov XML records",
    "json": "Reading ClinicalTrials.gov API v2 JSON records",
    "top": "Reading the TOP benchmark files",
    "iqvia": "Mapping the IQVIA outcome labels",
    "drugbank": "Reading the DrugBank vocabulary",
    "store": "Writing the store and matching interventions to DrugBank",
}
LABEL_COLORS = {"success": "#2e7d32", "failure": "#c62828", "unlabelled": "#9e9e9e"}


def first_run(state: str, message: str) -> None:
    """Empty or missing store: offer to load the sample data (the whole mirror)."""
    db = ui.db_path()
    with st.container(border=True, key="first_run"):
        st.subheader("First run: load the sample data")
        st.write(message)
        st.write(
            "This imports the real public data the project ships a configuration for (ClinicalTrials.gov "
            "records, the TOP benchmark, IQVIA outcome labels and the DrugBank vocabulary) into "
            f"`{db}`. It takes about a minute; the pages show the store again once it is done."
        )
        st.caption("From a terminal: `python -m core sample-data --db " + str(db) + "`")
        if not st.button("Load sample data", type="primary", icon=":material/download:"):
            return
        from core.ingest import sample_data

        with st.status("Loading the sample data…", expanded=True) as status:
            bar = st.progress(0.0, text="starting")
            last: dict = {"stage": None, "pct": -1}

            def progress(stage: str, done: int, total: int) -> None:
                name = STAGES.get(stage, stage)
                pct = int(100 * min(done / total, 1.0)) if total else 0
                if stage != last["stage"]:
                    last["stage"] = stage
                    st.write(f"{name}…")
                elif pct == last["pct"]:
                    return  # one update per percent: the importer reports every record
                last["pct"] = pct
                bar.progress(pct / 100, text=f"{name}: {done:,} of {total:,}" if total > 1 else name)

            try:
                sample_data(db, progress=progress)
            except Exception as exc:  # show what went wrong; the import is transactional
                status.update(label="Loading the sample data failed", state="error")
                st.error(f"{type(exc).__name__}: {exc}")
                return
            status.update(label="Sample data loaded", state="complete", expanded=False)
        ui.clear_cache()
        st.rerun()


def overview() -> None:
    o = ui.query("overview")
    cols = st.columns(5)
    cols[0].metric("Trials", f"{o['trials']:,}")
    cols[1].metric("Labelled", f"{o['labeled']:,}", help="Trials with a binary label from any source")
    cols[2].metric("Success", f"{o['positive']:,}")
    cols[3].metric("Failure", f"{o['negative']:,}")
    cols[4].metric("Eligible interventions", f"{o['eligible_interventions']:,}",
                   help="DrugBank drugs with at least 3 successful and 3 failed labelled trials: "
                        "the interventions generation can use")
    if o["conflicts"]:
        st.caption(f"{o['conflicts']:,} trials have labels that disagree between sources; the effective label "
                   f"follows the preference {' > '.join(ui.config.label_preference())}.")

    left, right = st.columns(2)
    with left:
        st.subheader("Trials by phase")
        phases = ui.query("phase_counts")
        fig = px.bar(phases, x="phase", y="trials", color="label", color_discrete_map=LABEL_COLORS,
                     category_orders={"label": list(LABEL_COLORS)})
        fig.update_layout(margin=dict(t=10, b=10), legend_title_text="", xaxis_title="", height=380)
        st.plotly_chart(fig, key="chart_phases")
    with right:
        st.subheader("Labels")
        labels = {"success": o["positive"], "failure": o["negative"], "unlabelled": o["unlabeled"]}
        fig = px.pie(names=list(labels), values=list(labels.values()), color=list(labels),
                     color_discrete_map=LABEL_COLORS, hole=0.4)
        fig.update_layout(margin=dict(t=10, b=10), height=380)
        st.plotly_chart(fig, key="chart_labels")

    left, right = st.columns(2)
    with left:
        st.subheader("Top conditions")
        cond = ui.query("top_conditions", 15)
        fig = px.bar(cond, x="trials", y="condition", orientation="h")
        fig.update_layout(margin=dict(t=10, b=10), yaxis=dict(autorange="reversed", title=""), height=450)
        st.plotly_chart(fig, key="chart_conditions")
    with right:
        st.subheader("Top interventions")
        iv = ui.query("top_interventions", 15)
        fig = px.bar(iv, x="trials", y="intervention", orientation="h", hover_data=["drugbank"])
        fig.update_layout(margin=dict(t=10, b=10), yaxis=dict(autorange="reversed", title=""), height=450)
        st.plotly_chart(fig, key="chart_interventions")

    st.subheader("DrugBank matches")
    c = st.columns(4)
    c[0].metric("DrugBank drugs", f"{o['drugbank_drugs']:,}", help="Size of the DrugBank vocabulary")
    c[1].metric("Trials with a matched intervention", f"{o['matched_trials']:,}")
    c[2].metric("Matched interventions", f"{o['matched_interventions']:,}")
    c[3].metric("Distinct drugs matched", f"{o['matched_drugs']:,}")
    left, right = st.columns([1, 2])
    with left:
        st.caption("Matches by rule")
        st.dataframe(ui.query("match_rules"), hide_index=True)
    with right:
        eligible = ui.query("eligible_interventions")
        st.caption(f"Eligible interventions for generation ({len(eligible):,}): at least 3 successful "
                   "and 3 failed labelled trials")
        st.dataframe(eligible, hide_index=True, height=300)

    st.subheader("Data sources")
    left, right = st.columns(2)
    with left:
        st.caption("Trials per source (a trial found in two sources counts in both)")
        st.dataframe(ui.query("source_counts"), hide_index=True)
        st.caption("Labels per label source")
        st.dataframe(ui.query("label_source_counts"), hide_index=True)
    with right:
        st.caption("Recent imports")
        hist = ui.query("ingest_history")
        if len(hist):
            st.dataframe(hist, hide_index=True)
        else:
            st.write("No import log in this store.")
    st.page_link(ui.PAGES["Trials"], label="Browse the trials", icon=":material/table_view:")


state, message = ui.store_state()
if state == "ready":
    overview()
elif state in ("missing", "empty"):
    first_run(state, message)
elif state == "outdated":
    st.warning(message)
    if st.button("Upgrade the store now", type="primary", icon=":material/upgrade:"):
        ui.upgrade_store()
        st.rerun()
elif state == "busy":
    st.warning(message)
    st.button("Try again", icon=":material/refresh:")
else:
    st.error(message)
