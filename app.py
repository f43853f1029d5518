"""Home: what is in the store, or a first-run panel that loads the sample data; the offer to fetch full
records for labelled trials that are only TOP rows. Work is done by core.services.home."""
from __future__ import annotations

import plotly.express as px
import streamlit as st

from core import ui
from core.services import home
from core.services.wording import has_have, plural

st.set_page_config(page_title="Home · Synthetic trial workbench", page_icon=":material/science:", layout="wide")
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
        if st.button("Load sample data", type="primary", icon=":material/download:"):
            home.start_sample_data(db)
            st.rerun()


def sample_data_progress(job) -> None:
    """The sample-data import runs as a background job: show its progress, poll only while it runs."""
    db = ui.db_path()

    @st.fragment(run_every=1.0)
    def _poll() -> None:
        j = home.sample_data_status(db)
        if j is None or not j.active:
            ui.clear_cache()
            st.rerun()
        p = j.progress
        name = STAGES.get(p.get("stage"), p.get("stage") or "starting")
        total = p.get("total") or 0
        text = f"{name}: {p.get('done', 0):,} of {total:,}" if total > 1 else name
        with st.status("Loading the sample data…", expanded=True, state="running"):
            st.progress(j.fraction, text=text)
            st.caption("It runs in the background: you can leave this page and come back.")

    _poll()


METRIC_W = 190   # px: metrics keep their labels whole and wrap to a second row on a narrow window


@st.cache_data(ttl=60, show_spinner=False)
def _fetch_offer(db: str, missing: int) -> home.FetchOffer:
    return home.fetch_offer(db, missing)   # one short probe a minute at most


def full_records(o: dict) -> None:
    """How many labelled trials have a full record; the offer to fetch the rest, or why it cannot."""
    db = ui.db_path()
    job = home.fetch_status(db)
    if job and job["running"]:
        with st.status("Fetching full records from ClinicalTrials.gov…", expanded=True):
            st.code(job["log_tail"] or "starting", language=None)
            st.button("Refresh", icon=":material/refresh:", key="fetch_refresh")
        return
    offer = _fetch_offer(str(db), o["labelled_top_only"])
    if offer.missing == 0:
        return
    with st.container(border=True, key="fetch_offer"):
        st.write(f"{plural(offer.missing, 'labelled trial')} {has_have(offer.missing)} only a TOP row (no title, "
                 "summary, arms or outcomes). Their full records come from the ClinicalTrials.gov API v2.")
        if offer.reachable:
            if st.button(f"Fetch full records for {plural(offer.missing, 'labelled trial')}", type="primary",
                         icon=":material/cloud_download:", key="fetch_full"):
                home.start_fetch(db)
                st.rerun()
            st.caption(f"{offer.base_url} answers ({offer.detail}). The fetch runs in the background, page by "
                       "page; it can be stopped and started again without losing what it fetched.")
        else:
            st.info(f"The ClinicalTrials.gov API cannot be reached from this machine, so full records cannot be "
                    f"fetched here: {offer.detail}. On a connected machine run `{offer.command}`.",
                    icon=":material/cloud_off:")
        if job and not job["running"] and job.get("log_tail"):
            with st.expander("The last fetch"):
                st.code(job["log_tail"], language=None)


def overview() -> None:
    o = ui.query("overview")
    with st.container(horizontal=True, wrap=True, key="headline"):
        st.metric("Trials", f"{o['trials']:,}", width=METRIC_W)
        st.metric("Labelled", f"{o['labeled']:,}", help="Trials with a binary label from any source", width=METRIC_W)
        st.metric("Success", f"{o['positive']:,}", width=METRIC_W)
        st.metric("Failure", f"{o['negative']:,}", width=METRIC_W)
        st.metric("Labelled, full record", f"{o['labelled_full_records']:,}", width=METRIC_W,
                  help="Labelled trials with a full ClinicalTrials.gov record (XML or API v2), not only a TOP row")
        st.metric("Eligible interventions", f"{o['eligible_interventions']:,}", width=METRIC_W,
                  help="DrugBank drugs with at least 3 successful and 3 failed labelled trials: "
                       f"the interventions generation can use ({plural(o['eligible_trials'], 'trial')})")
        st.metric("Synthetic trials", f"{o['synthetic']:,}", width=METRIC_W,
                  help="Synthetic trials in the store (generated or imported)")
    if o["conflicts"]:
        st.caption(f"{plural(o['conflicts'], 'trial')} {has_have(o['conflicts'])} labels that disagree between "
                   f"sources; the effective label follows the preference {' > '.join(ui.config.label_preference())}.")
    full_records(o)

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
    with st.container(horizontal=True, wrap=True, key="drugbank_counts"):
        st.metric("DrugBank drugs", f"{o['drugbank_drugs']:,}", help="Size of the DrugBank vocabulary", width=250)
        st.metric("Trials with a matched intervention", f"{o['matched_trials']:,}", width=250)
        st.metric("Matched interventions", f"{o['matched_interventions']:,}", width=250)
        st.metric("Distinct drugs matched", f"{o['matched_drugs']:,}", width=250)
    left, right = st.columns([1, 2])
    with left:
        st.caption("Matches by rule")
        st.dataframe(ui.query("match_rules"), hide_index=True)
    with right:
        eligible = ui.query("eligible_interventions")
        st.caption(f"Eligible interventions for generation ({len(eligible):,}, "
                   f"{plural(o['eligible_trials'], 'trial')}): at least 3 successful and 3 failed labelled trials")
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


_import = home.sample_data_status(ui.db_path())
if _import is not None and _import.active:
    sample_data_progress(_import)
    st.stop()
if _import is not None and _import.state == "failed":
    st.error(f"Loading the sample data failed: {_import.error} (the store was left as it was)")
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
