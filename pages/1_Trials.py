"""Trials: filter and search the real trials, page through them, open one record (?nct=NCT...)."""
from __future__ import annotations

import hashlib
import math

import pandas as pd
import streamlit as st

from core import ui
from core.services.trials import LABEL_CHOICES, RECORD_CHOICES, TrialFilter, display_frame, title_of
from core.services.wording import plural

PAGE_SIZE = 50
FILTER_W = 260   # px: every filter keeps a readable width (the row wraps at 1,024 px)
CRITERIA_CSS = """<style>
.st-key-eligibility [data-testid="stText"], .st-key-eligibility [data-testid="stText"] * {
    white-space: pre !important; overflow-x: auto; }
</style>"""
PERSIST = "session"  # filters survive opening a record and coming back

st.set_page_config(page_title="Trials", page_icon=":material/table_view:", layout="wide")
ui.sidebar_store()

state, message = ui.store_state()
if state != "ready":
    st.title("Trials")
    (st.warning if state in ("busy", "missing", "empty", "outdated") else st.error)(message)
    st.page_link("app.py", label="Home: load the sample data or upgrade the store there", icon=":material/home:")
    st.stop()


def open_trial(nct_id: str | None) -> None:
    if nct_id:
        st.query_params["nct"] = nct_id.strip().upper()
    else:
        st.query_params.pop("nct", None)


def _on_select() -> None:
    rows = st.session_state["trials_table"].selection.rows
    ncts = st.session_state.get("_trials_page_ncts", [])
    if rows and rows[0] < len(ncts):
        open_trial(ncts[rows[0]])


def _on_open_box() -> None:
    value = (st.session_state.get("open_nct") or "").strip()
    if value:
        open_trial(value)
        st.session_state["open_nct"] = ""


# ---------------------------------------------------------------- record view

def _field(label: str, value) -> None:
    if value is None or value == "" or value == []:
        return
    st.markdown(f"**{label}:** {value}")


def _dated(value: str | None, kind: str | None) -> str | None:
    if not value:
        return None
    return f"{value} ({kind.lower()})" if kind else value


def _frame(items: list[dict], columns: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(items, columns=columns)
    for col in df.columns:
        df[col] = df[col].map(lambda v: ", ".join(v) if isinstance(v, list) else v)
    return df


def record_view(nct_id: str) -> None:
    st.button("Back to the list", icon=":material/arrow_back:", on_click=open_trial, args=(None,))
    trial = ui.query("get_trial", nct_id)
    if trial is None:
        st.warning(f"{nct_id} is not in the store.")
        return
    rec = trial["record"]
    st.title(f"{rec['nct_id']}: {title_of(rec, trial['sources'])}")
    if rec["official_title"] and rec["official_title"] != rec["brief_title"]:
        st.caption(rec["official_title"])

    eff = trial["effective"]
    eff_text = (f"{ui.label_text(eff['label'])} (from {eff['label_source']})" if eff else "unlabelled")
    color = {1: "green", 0: "red"}.get(eff["label"] if eff else None, "gray")
    badges = [f":{color}-badge[Effective label: {eff_text}]"]
    badges += [f":blue-badge[{v}]" for v in (rec["phase"], rec["overall_status"]) if v]
    if rec["enrollment"] is not None:
        kind = f" ({rec['enrollment_type'].lower()})" if rec["enrollment_type"] else ""
        badges.append(f":gray-badge[Enrollment {rec['enrollment']:,}{kind}]")
    st.markdown(" ".join(badges), help="The effective label is the one the classifier and retrieval use, "
                "chosen by the label preference when sources disagree")
    if trial["conflict"]:
        details = "; ".join(f"{lab['label_source'].upper()} says {ui.label_text(lab['label'])}"
                            for lab in trial["labels"] if lab["label"] is not None)
        st.warning(f"Label conflict: {details}. The effective label is {eff_text}, following the "
                   f"preference {' > '.join(ui.config.label_preference())}.", icon=":material/warning:")

    left, right = st.columns([3, 2])
    with left:
        st.subheader("Summary")
        st.write(rec["brief_summary"] or "—")
        if rec["detailed_description"]:
            with st.expander("Detailed description"):
                st.text(rec["detailed_description"])
        st.subheader("Eligibility criteria")
        with st.container(border=True, key="eligibility"):
            # as written: the registry's own line breaks, long lines scroll sideways instead of being
            # wrapped a second time (the text is usually hard-wrapped already)
            st.html(CRITERIA_CSS)
            st.text(rec["eligibility_criteria"] or "— (not given)")
    with right:
        st.subheader("Study")
        _field("Study type", rec["study_type"])
        _field("Why stopped", rec["why_stopped"])
        _field("Conditions", ", ".join(rec["conditions"]))
        _field("Keywords", ", ".join(rec["keywords"]))
        _field("Start", _dated(rec["start_date"], rec["start_date_type"]))
        _field("Primary completion", _dated(rec["primary_completion_date"], rec["primary_completion_date_type"]))
        _field("Completion", _dated(rec["completion_date"], rec["completion_date_type"]))
        _field("Sponsor", " ".join(filter(None, [rec["lead_sponsor"],
                                                 f"({rec['sponsor_class']})" if rec["sponsor_class"] else None])))
        _field("Collaborators", ", ".join(rec["collaborators"]))
        _field("Gender", rec["gender"])
        ages = " to ".join(filter(None, [rec["minimum_age"], rec["maximum_age"]]))
        _field("Ages", ages)
        _field("Healthy volunteers", rec["healthy_volunteers"])
        design = {k: v for k, v in (rec["design_info"] or {}).items() if v}
        _field("Design", "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in design.items()))
        _field("Has results", {True: "yes", False: "no"}.get(rec["has_results"]))
        _field("Sources", ", ".join(trial["sources"]) + (f" (fields from {trial['source']})"
                                                          if len(trial["sources"]) > 1 else ""))
        _field("TOP files", ", ".join(trial["top_files"]))

    st.subheader("Labels")
    if trial["labels"]:
        labels = pd.DataFrame(
            [{"source": lab["label_source"], "label": ui.label_text(lab["label"]),
              "original outcome text": lab["outcome_text"]} for lab in trial["labels"]]
        )
        st.dataframe(labels, hide_index=True, key="labels_table")
        st.write(f"Effective label: **{eff_text}**")
    else:
        st.write("No label from any source: this trial is unlabelled.")

    st.subheader("Interventions and DrugBank matches")
    matches = {m["position"]: m for m in trial["matches"]}
    rows = []
    for pos, iv in enumerate(rec["interventions"]):
        m = matches.get(pos)
        rows.append({"type": iv["type"], "name": iv["name"], "other names": ", ".join(iv["other_names"] or []),
                     "DrugBank": f"{m['drug']} ({m['drugbank_id']})" if m else "",
                     "rule": m["rule"] if m else "", "description": iv["description"]})
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, key="interventions_table")
    else:
        st.write("No interventions listed.")

    for key, title in (("arm_groups", "Arms"), ("primary_outcomes", "Primary outcomes"),
                       ("secondary_outcomes", "Secondary outcomes")):
        if rec[key]:
            with st.expander(f"{title} ({len(rec[key])})"):
                st.dataframe(_frame(rec[key], list(rec[key][0])), hide_index=True)

    fmt = trial["raw_format"] or "text"
    with st.expander(f"Raw source document ({fmt}, {len(trial['raw_document'] or ''):,} characters)"):
        st.code(trial["raw_document"] or "", language={"xml": "xml", "json": "json"}.get(fmt),
                wrap_lines=True, height=500)


# ---------------------------------------------------------------- filters and table

def list_view() -> None:
    st.title("Trials")
    opts = ui.query("filter_options")
    text = st.text_input("Search title, summary and eligibility criteria", key="q", persist_state=PERSIST,
                         placeholder="e.g. metastatic, HbA1c, pregnancy")
    # A wrapping row of fixed-width filters: on a narrow window they move to the next line instead of
    # shrinking until their labels are cut.
    with st.container(horizontal=True, wrap=True, key="trial_filters"):
        intervention = st.selectbox("Intervention (or DrugBank drug)", opts["interventions"], index=None,
                                    key="f_intervention", accept_new_options=True, persist_state=PERSIST,
                                    placeholder="any; type to search any name", width=FILTER_W)
        condition = st.selectbox("Condition", opts["conditions"], index=None, key="f_condition",
                                 accept_new_options=True, persist_state=PERSIST,
                                 placeholder="any; type to search any name", width=FILTER_W)
        phases = st.multiselect("Phase", opts["phases"], key="f_phase", persist_state=PERSIST, placeholder="any",
                                width=FILTER_W)
        statuses = st.multiselect("Status", opts["statuses"], key="f_status", persist_state=PERSIST,
                                  placeholder="any", width=FILTER_W)
        labels = st.multiselect("Label", list(LABEL_CHOICES), key="f_label", persist_state=PERSIST,
                                placeholder="any", help="The effective label; 'conflicting': sources disagree",
                                width=FILTER_W)
        sources = st.multiselect("Data source", opts["sources"], key="f_source", persist_state=PERSIST,
                                 placeholder="any", width=FILTER_W)
        records = st.multiselect("Record", list(RECORD_CHOICES), key="f_record", persist_state=PERSIST,
                                 placeholder="any", width=FILTER_W,
                                 help="A full ClinicalTrials.gov record (title, summary, arms, outcomes), "
                                      "or only a TOP row (status, phase, diseases, drugs, criteria)")
    f = TrialFilter(intervention=intervention or "", condition=condition or "", phases=tuple(phases),
                    statuses=tuple(statuses), labels=tuple(labels), sources=tuple(sources), text=text or "",
                    records=tuple(records))
    o = ui.query("overview")
    full, top_only = o["labelled_full_records"], o["labelled_top_only"]
    st.caption(f"{full:,} of {plural(o['labeled'], 'labelled trial')} {'has' if full == 1 else 'have'} a full "
               f"ClinicalTrials.gov record; {top_only:,} {'is' if top_only == 1 else 'are'} only a TOP row "
               "(filter them with Record).")

    # Each filter has its own page widget, so a new filter starts again at page 1.
    page_key = "trials_page_" + hashlib.sha1(repr(f).encode()).hexdigest()[:12]
    page = int(st.session_state.get(page_key) or 1)
    df, total = ui.query("search_trials", f, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    num_pages = max(1, math.ceil(total / PAGE_SIZE))
    if page > num_pages:  # the store changed under us: start again
        page_key, page = f"{page_key}_{num_pages}", 1
        df, total = ui.query("search_trials", f, limit=PAGE_SIZE, offset=0)

    first = (page - 1) * PAGE_SIZE + 1 if total else 0
    st.caption(f"{plural(total, 'trial')} {'matches' if total == 1 else 'match'} · showing "
               f"{first:,}–{first + len(df) - 1 if total else 0:,} · select a row to open the record")
    st.session_state["_trials_page_ncts"] = df["nct_id"].tolist()
    df = display_frame(df)
    st.dataframe(
        df, hide_index=True, key="trials_table", on_select=_on_select, selection_mode="single-row",
        column_config={
            "nct_id": st.column_config.TextColumn("NCT id", width=115),
            "title": st.column_config.TextColumn("Title", width=380),
            "label": st.column_config.TextColumn("Label", width=150,
                                                 help="Effective label (its source); ⚠ sources disagree"),
            "phase": st.column_config.TextColumn("Phase", width=100),
            "status": st.column_config.TextColumn("Status", width=120),
            "conditions": st.column_config.TextColumn("Conditions", width=220),
            "interventions": st.column_config.TextColumn("Interventions", width=220),
            "sources": st.column_config.TextColumn("Sources", width=130),
            "record": st.column_config.TextColumn("Record", width=110,
                                                  help="full record, or only a TOP row"),
        },
        height=min(38 + 35 * max(len(df), 1), 38 + 35 * 20),
    )
    st.pagination(num_pages, key=page_key, max_visible_pages=9, persist_state=PERSIST)
    st.text_input("Open a trial by NCT id", key="open_nct", on_change=_on_open_box, placeholder="NCT00000102")


nct = st.query_params.get("nct")
if nct:
    record_view(nct.strip().upper())
else:
    list_view()
