"""Synthetic reports: filter the generated and imported synthetic trials, read one beside its few-shot
examples and reasons (shared text highlighted), accept / reject / flag it with a note, and export the set
(JSON Lines, Parquet, Hugging Face `datasets` directory with a data card).

The selected trial has one source of truth, `syn_pick`: a click in the table sets it (only when the click
happens), the dropdown sets it, and the form saves to it and names it."""
from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from core import ui
from core.review import badges_markdown, highlight_html, record_markdown, review_text
from core.review import md_escape as plain
from core.services import review as svc
from core.services.wording import plural

db = ui.page("Synthetic reports", ":material/fact_check:")
ss = st.session_state


@st.cache_data(ttl=ui.CACHE_TTL_S, show_spinner=False)
def overview(db_file: str, version: tuple) -> dict:
    return svc.overview(db_file)


@st.cache_data(ttl=ui.CACHE_TTL_S, show_spinner="Reading the synthetic trials…")
def load(db_file: str, version: tuple, filters: tuple) -> list[dict]:
    return svc.trials(db_file, **dict(filters))


@st.cache_data(ttl=600, show_spinner=False)
def example_records(db_file: str, version: tuple, ids: tuple[str, ...]) -> dict[str, dict]:
    return svc.examples(db_file, list(ids))


try:
    info = overview(str(db), ui.store_version(db))
except svc.StoreLocked as exc:
    st.warning(f"The store is busy (a batch or an import is writing it): {exc}. Reload in a moment.")
    st.stop()
if not info["total"]:
    st.info("No synthetic trials yet: generate some on the Generate page, or import a published set with "
            "`python -m core import-synthetic`.")
    st.markdown("[Generate synthetic trials](/Generate)")
    st.stop()

# ---------------------------------------------------------------- filters (applied by the store)
ALL = "All"
LABELS = {ALL: None, "success": 1, "failure": 0}
REVIEWS = [ALL, "not reviewed", "accepted", "rejected", "flagged"]
run_info = {r["run_id"]: r for r in info["runs"]}
with st.container(key="syn_filters"):
    f1, f2, f3 = st.columns(3)
    f4, f5, f6 = st.columns(3)
run = f1.selectbox("Run", [ALL, *info["run_ids"]], key="syn_run", format_func=lambda r: r if r == ALL else (
    f"{r} ({run_info[r]['done']}/{run_info[r]['n']}, {run_info[r]['status']})" if r in run_info else r))
source = f2.selectbox("Source", [ALL, *info["sources"]], key="syn_source")
intervention = f3.selectbox("Intervention", [ALL, *info["interventions"]], key="syn_intervention")
label = f4.selectbox("Label", list(LABELS), key="syn_label")
vstatus = f5.selectbox("Validation", [ALL, "ok", "warning", "invalid"], key="syn_validation")
review = f6.selectbox("Review", REVIEWS, key="syn_review_filter")
filters = {"run_id": None if run == ALL else run, "source": None if source == ALL else source,
           "intervention": None if intervention == ALL else intervention, "label": LABELS[label],
           "validation_status": None if vstatus == ALL else vstatus, "review": None if review == ALL else review}
filter_key = tuple(sorted(filters.items()))

shown = load(str(db), ui.store_version(db), filter_key)
st.caption(f"{len(shown):,} of {plural(info['total'], 'synthetic trial')}")
if not shown:
    st.info("No synthetic trial matches these filters.")
    st.stop()

# ---------------------------------------------------------------- the selected trial: table click or dropdown
ids = [r["id"] for r in shown]
if ss.get("syn_pick") not in ids:
    ss.syn_pick = ids[0]
ss.setdefault("syn_table_gen", 0)
table_key = f"syn_table_{ss.syn_table_gen}_{abs(hash(filter_key)) % 10**8}"


def _from_table() -> None:
    # Runs only when the table's selection changes, with the ids as that table showed them.
    rows = ss[table_key].selection.rows if ss.get(table_key) else []
    if rows and rows[0] < len(ss.get("syn_table_ids", [])):
        ss.syn_pick = ss.syn_table_ids[rows[0]]


def _from_dropdown() -> None:
    ss.syn_table_gen += 1  # a fresh table: its old row highlight would show another trial


ss.syn_table_ids = ids
table = pd.DataFrame([{
    "id": r["id"], "source": r["source"], "intervention": r["intended_intervention"],
    "label": ui.label_text(r["intended_label"]), "generated": r["generated_intervention"],
    "match": r["intervention_match"], "validation": r["validation_status"], "review": r["review_status"] or "",
    "title": ((r["record"] or {}).get("brief_title") or "")[:120],
} for r in shown])
st.dataframe(table, hide_index=True, key=table_key, on_select=_from_table, selection_mode="single-row",
             height=min(38 + 35 * len(shown), 320))
sid = st.selectbox("Trial", ids, key="syn_pick", on_change=_from_dropdown,
                   help="Or select a row in the table. The review below is saved to this trial.")
trial = next(r for r in shown if r["id"] == sid)

# ---------------------------------------------------------------- one trial beside its examples
record = trial["record"] or {}
st.subheader(f"{sid}: {record.get('brief_title') or '(no title)'}")
st.markdown(badges_markdown(trial["validation_status"], trial["validation"]))
st.caption(plain(
    f"Source {trial['source']} · intended {trial['intended_intervention']} "
    f"({ui.label_text(trial['intended_label'])}) · generated {trial['generated_intervention'] or '(none)'} "
    f"({'match' if trial['intervention_match'] else 'no match'}) · "
    f"{trial.get('backend') or '?'}:{trial.get('model') or '?'} · prompt hash {trial.get('prompt_hash') or 'n/a'}"
    + (f" · review: {trial['review_status']}" if trial["review_status"] else "")))

examples = example_records(str(db), ui.store_version(db), tuple(trial["example_nct_ids"] or []))
ex_ids = [i for i in (trial["example_nct_ids"] or []) if i in examples]
synthetic_text = review_text(record)
example_texts = {i: review_text(examples[i]) for i in ex_ids}
near = (trial["validation"] or {}).get("near_copy", {}).get("detail")
per_example = {p["nct_id"]: p for p in near.get("examples", [])} if isinstance(near, dict) else {}

left, right = st.columns(2)
with left:
    st.markdown("**Synthetic trial**")
    t1, t2, t3 = st.tabs(["Shared text", "Rendered", "Raw reply"])
    with t1:
        body, share = highlight_html(synthetic_text, list(example_texts.values()))
        st.caption(f"Highlighted: {share:.0%} of the text lies in runs of 8+ words that also occur in one of its "
                   "examples." if ex_ids else "No few-shot examples recorded (an imported set).")
        with st.container(height=520, key="syn_text"):
            st.markdown(f'<div style="font-size:0.9em">{body}</div>', unsafe_allow_html=True)
    with t2:
        st.markdown(record_markdown(record))
    with t3:
        st.code(trial["raw_text"] or "", language=None, wrap_lines=True)
    if trial["reasons"]:
        st.markdown("**Reasons it was written from**")
        with st.container(key="syn_reasons"):
            for i, r in enumerate(trial["reasons"], 1):
                st.text(f"{i}. {r}")  # as written: "[X] ..." stays text, never a checkbox
with right:
    st.markdown(f"**Its {plural(len(ex_ids), 'few-shot example')}**")
    if not ex_ids:
        st.caption("None in the store.")
    for nct in ex_ids:
        with st.expander(nct + (f" · 8-gram overlap {per_example[nct]['ngram_overlap']:.0%}, longest shared run "
                                f"{per_example[nct]['longest_run']} words" if nct in per_example else ""),
                         expanded=len(ex_ids) == 1):
            st.markdown(f"[Open {nct} on the Trials page]({ui.trial_url(nct)})")
            body, _ = highlight_html(example_texts[nct], [synthetic_text])
            with st.container(height=300, key=f"syn_ex_{nct}"):
                st.markdown(f'<div style="font-size:0.9em">{body}</div>', unsafe_allow_html=True)

# ---------------------------------------------------------------- review
stored = (trial["review_status"], trial["review_note"])
pending = ss.get("syn_confirm")
if pending and pending["sid"] != sid:
    ss.pop("syn_confirm")
    pending = None


def _save(decision: str, note: str, expected: tuple) -> None:
    try:
        row = svc.save_review(db, sid, decision, note, expected)
    except svc.ReviewConflict as exc:
        st.error(f"Not saved: {exc}. The page now shows what is stored.")
        load.clear()
        return
    except svc.StoreLocked as exc:
        st.error(f"Not saved: the store is busy ({exc}). Try again in a moment.")
        return
    load.clear()
    ss.syn_saved = {"sid": sid, "decision": decision, "status": row["review_status"], "note": row["review_note"]}
    ss.pop("syn_confirm", None)
    st.rerun()


with st.form("syn_review_form", border=True):
    st.markdown(f"**Review of {plain(sid)}**")
    if stored[0]:
        st.caption("Earlier decision: " + plain(f"{stored[0]}" + (f" — “{stored[1]}”" if stored[1] else "")
                                                    + ". Saving another decision asks first."))
    options = list(svc.REVIEW_OPTIONS)
    current = stored[0] or "not reviewed"
    decision = st.radio("Decision", options, index=options.index(current), horizontal=True, key=f"syn_decision_{sid}")
    note = st.text_area("Note", value=stored[1] or "", key=f"syn_note_{sid}", height=80)
    if st.form_submit_button(f"Save review of {sid}", type="primary"):
        new = (None if decision == "not reviewed" else decision, note.strip() or None)
        if stored[0] and new != stored:
            ss.syn_confirm = {"sid": sid, "decision": decision, "note": note, "expected": stored}
            st.rerun()
        else:
            _save(decision, note, stored)

if pending:
    with st.container(border=True, key="syn_confirm_box"):
        st.warning(plain(f"{sid} already has a decision. Replace it? {stored[0]} → {pending['decision']}"
                            f"; note “{stored[1] or ''}” → “{pending['note'].strip()}”"))
        c1, c2 = st.columns(2)
        if c1.button(f"Replace with {pending['decision']}", type="primary", key="syn_confirm_yes"):
            _save(pending["decision"], pending["note"], tuple(pending["expected"]))
        if c2.button("Keep the earlier decision", key="syn_confirm_no"):
            ss.pop("syn_confirm")
            st.rerun()

saved = ss.get("syn_saved")
if saved and saved["sid"] == sid:
    ss.pop("syn_saved")
    st.success(f"Saved: {sid} is {saved['decision']}.")
    st.caption(plain(f"Stored decision: {saved['status'] or 'not reviewed'}"
                        + (f" — note “{saved['note']}”" if saved["note"] else " — no note") + " (read back from the store)"))

with st.expander("Review history"):
    hist = svc.history(db, sid)
    if hist:
        st.table(pd.DataFrame([{"when": f"{h['changed_at']:%Y-%m-%d %H:%M:%S}", "who": h["reviewer"] or "",
                                "decision": f"{h['old_status'] or 'not reviewed'} → {h['new_status'] or 'not reviewed'}",
                                "old note": h["old_note"] or "", "new note": h["new_note"] or ""} for h in hist]))
    else:
        st.caption(f"No review decisions for {sid} yet.")

# ---------------------------------------------------------------- export
st.header("Export")
with st.container(border=True, key="syn_export"):
    e1, e2 = st.columns([2, 1])
    name = e1.text_input("Dataset name", value="synthetic-clinical-trials", key="syn_export_name")
    only = e2.radio("Trials", ["filtered", "accepted"], key="syn_export_scope", horizontal=True,
                    format_func={"filtered": f"the {len(shown):,} filtered",
                                 "accepted": "accepted among them"}.get)
    chosen = shown if only == "filtered" else [r for r in shown if r["review_status"] == "accepted"]
    bad = [r for r in chosen if r["validation_status"] == "invalid" or r["review_status"] == "rejected"]
    exclude = True
    if bad:
        n_inv = sum(1 for r in bad if r["validation_status"] == "invalid")
        n_rej = sum(1 for r in bad if r["review_status"] == "rejected")
        st.warning(f"{plural(len(bad), 'trial')} of these cannot be used for training: "
                   + "; ".join(x for x in (f"{n_inv:,} invalid" if n_inv else "",
                                           f"{n_rej:,} rejected in review" if n_rej else "") if x) + ".")
        exclude = st.radio("Invalid and rejected trials", ["exclude", "include"], horizontal=True,
                           key="syn_export_bad", format_func={"exclude": "leave them out",
                                                              "include": "export them too (marked in the data)"}.get) == "exclude"
    if exclude:
        bad_ids = {r["id"] for r in bad}
        chosen = [r for r in chosen if r["id"] not in bad_ids]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "synthetic"
    if st.button(f"Prepare export of {plural(len(chosen), 'trial')}", disabled=not chosen, key="syn_export_btn",
                 icon=":material/inventory_2:"):
        applied = {"run": run, "source": source, "intervention": intervention, "label": label,
                   "validation": vstatus, "review": review if only == "filtered" else "accepted"}
        applied = {k: v for k, v in applied.items() if v != ALL}
        if bad:
            applied["invalid and rejected"] = "excluded" if exclude else "included"
        with st.spinner("Writing JSONL, Parquet and the Hugging Face dataset…"):
            ss.syn_export = svc.export_set(chosen, name, slug, applied)
    ready = ss.get("syn_export")
    if ready:
        st.caption(f"{plural(ready['n'], 'trial')} · Hugging Face dataset written to {ready['dir']} "
                   "(`datasets.load_from_disk`), README.md is its data card.")
        d1, d2, d3 = st.columns(3)
        d1.download_button("JSON Lines", ready["jsonl"], f"{ready['slug']}.jsonl", "application/jsonl",
                           key="syn_dl_jsonl", icon=":material/download:")
        d2.download_button("Parquet", ready["parquet"], f"{ready['slug']}.parquet", "application/octet-stream",
                           key="syn_dl_parquet", icon=":material/download:")
        d3.download_button("Hugging Face dataset (zip)", ready["hf_zip"], f"{ready['slug']}.zip", "application/zip",
                           key="syn_dl_hf", icon=":material/download:")
