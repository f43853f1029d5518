"""Synthetic reports: filter the generated and imported synthetic trials, read one beside its few-shot
examples and reasons (shared text highlighted), accept / reject / flag it with a note, and export the set
(JSON Lines, Parquet, Hugging Face `datasets` directory with a data card)."""
from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from core import config, export, ui
from core.review import badges_markdown, highlight_html, record_markdown, review_text
from core.store import StoreLocked, connect

db = ui.page("Synthetic reports", ":material/fact_check:")
ss = st.session_state


@st.cache_data(ttl=ui.CACHE_TTL_S, show_spinner="Reading the synthetic trials…")
def load(db_file: str, version: tuple) -> tuple[list[dict], list[dict]]:
    from core.store.synthetic import list_runs, list_synthetic

    with connect(db_file, read_only=True, wait_s=ui.READ_WAIT_S) as con:
        return list_synthetic(con), list_runs(con)


@st.cache_data(ttl=600, show_spinner=False)
def example_records(db_file: str, version: tuple, ids: tuple[str, ...]) -> dict[str, dict]:
    from core.pipeline.retrieval import example_records as get

    with connect(db_file, read_only=True, wait_s=ui.READ_WAIT_S) as con:
        return get(con, list(ids))


try:
    rows, runs = load(str(db), ui.store_version(db))
except StoreLocked as exc:
    st.warning(f"The store is busy (a batch or an import is writing it): {exc}. Reload in a moment.")
    st.stop()
if not rows:
    st.info("No synthetic trials yet: generate some on the Generate page, or import a published set with "
            "`python -m core import-synthetic`.")
    st.markdown("[Generate synthetic trials](/Generate)")
    st.stop()

# ---------------------------------------------------------------- filters
ALL = "All"
LABELS = {ALL: None, "success": 1, "failure": 0}
REVIEWS = [ALL, "not reviewed", "accepted", "rejected", "flagged"]
run_info = {r["run_id"]: r for r in runs}
f1, f2, f3, f4, f5, f6 = st.columns([1.4, 1.4, 1.4, 0.8, 0.9, 0.9])
run_ids = sorted({r["run_id"] for r in rows if r["run_id"]}, reverse=True)
run = f1.selectbox("Run", [ALL, *run_ids], key="syn_run", format_func=lambda r: r if r == ALL else (
    f"{r} ({run_info[r]['done']}/{run_info[r]['n']}, {run_info[r]['status']})" if r in run_info else r))
source = f2.selectbox("Source", [ALL, *sorted({r["source"] for r in rows})], key="syn_source")
intervention = f3.selectbox("Intervention", [ALL, *sorted({r["intended_intervention"] for r in rows
                                                          if r["intended_intervention"]})], key="syn_intervention")
label = f4.selectbox("Label", list(LABELS), key="syn_label")
vstatus = f5.selectbox("Validation", [ALL, "ok", "warning", "invalid"], key="syn_validation")
review = f6.selectbox("Review", REVIEWS, key="syn_review_filter")


def keep(r: dict) -> bool:
    return ((run == ALL or r["run_id"] == run) and (source == ALL or r["source"] == source)
            and (intervention == ALL or r["intended_intervention"] == intervention)
            and (LABELS[label] is None or r["intended_label"] == LABELS[label])
            and (vstatus == ALL or r["validation_status"] == vstatus)
            and (review == ALL or (r["review_status"] or "not reviewed") == review))


shown = [r for r in rows if keep(r)]
st.caption(f"{len(shown):,} of {len(rows):,} synthetic trials")
if not shown:
    st.info("No synthetic trial matches these filters.")
    st.stop()

table = pd.DataFrame([{
    "id": r["id"], "source": r["source"], "intervention": r["intended_intervention"],
    "label": ui.label_text(r["intended_label"]), "generated": r["generated_intervention"],
    "match": r["intervention_match"], "validation": r["validation_status"], "review": r["review_status"] or "",
    "title": ((r["record"] or {}).get("brief_title") or "")[:120],
} for r in shown])
event = st.dataframe(table, hide_index=True, key="syn_table", on_select="rerun", selection_mode="single-row",
                     height=min(38 + 35 * len(shown), 320))
picked_rows = event.selection.rows if event and event.selection else []
ids = [r["id"] for r in shown]
if picked_rows:
    ss.syn_pick = ids[picked_rows[0]]
if ss.get("syn_pick") not in ids:
    ss.syn_pick = ids[0]
sid = st.selectbox("Trial", ids, key="syn_pick")
trial = next(r for r in shown if r["id"] == sid)

# ---------------------------------------------------------------- one trial beside its examples
record = trial["record"] or {}
st.subheader(f"{sid}: {record.get('brief_title') or '(no title)'}")
st.markdown(badges_markdown(trial["validation_status"], trial["validation"]))
st.caption(f"Source {trial['source']} · intended {trial['intended_intervention']} "
           f"({ui.label_text(trial['intended_label'])}) · generated {trial['generated_intervention'] or '(none)'} "
           f"({'match' if trial['intervention_match'] else 'no match'}) · "
           f"{trial.get('backend') or '?'}:{trial.get('model') or '?'} · prompt hash {trial.get('prompt_hash') or 'n/a'}"
           + (f" · review: {trial['review_status']}" if trial["review_status"] else ""))

examples = example_records(str(db), ui.store_version(db), tuple(trial["example_nct_ids"] or []))
ex_ids = [i for i in (trial["example_nct_ids"] or []) if i in examples]
synthetic_text = review_text(record)
example_texts = {i: review_text(examples[i]) for i in ex_ids}
near = (trial["validation"] or {}).get("near_copy", {}).get("detail")
per_example = {p["nct_id"]: p for p in near.get("examples", [])} if isinstance(near, dict) else {}

left, right = st.columns(2)
with left:
    st.markdown("**Synthetic trial**")
    t1, t2, t3 = st.tabs(["Text (shared with its examples highlighted)", "Rendered", "Raw reply"])
    with t1:
        body, share = highlight_html(synthetic_text, list(example_texts.values()))
        st.caption(f"{share:.0%} of the text lies in runs of 8+ words that also occur in one of its examples."
                   if ex_ids else "No few-shot examples recorded (an imported set).")
        with st.container(height=520, key="syn_text"):
            st.markdown(f'<div style="font-size:0.9em">{body}</div>', unsafe_allow_html=True)
    with t2:
        st.markdown(record_markdown(record))
    with t3:
        st.code(trial["raw_text"] or "", language=None, wrap_lines=True)
    if trial["reasons"]:
        st.markdown("**Reasons it was written from**")
        st.markdown("\n".join(f"{i}. {r}" for i, r in enumerate(trial["reasons"], 1)))
with right:
    st.markdown(f"**Its {len(ex_ids)} few-shot examples**")
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
with st.form("syn_review_form", border=True):
    st.markdown("**Review**")
    options = ["accepted", "rejected", "flagged", "not reviewed"]
    current = trial["review_status"] or "not reviewed"
    decision = st.radio("Decision", options, index=options.index(current), horizontal=True, key=f"syn_decision_{sid}")
    note = st.text_area("Note", value=trial["review_note"] or "", key=f"syn_note_{sid}", height=80)
    if st.form_submit_button("Save review", type="primary"):
        from core.store.synthetic import set_review

        try:
            with connect(db, wait_s=10) as con:
                set_review(con, sid, None if decision == "not reviewed" else decision, note.strip() or None)
        except StoreLocked as exc:
            st.error(f"Not saved: the store is busy ({exc}). Try again in a moment.")
        else:
            load.clear()
            ss.syn_saved = f"Saved: {sid} is {decision}."
            st.rerun()
if ss.get("syn_saved"):
    st.success(ss.pop("syn_saved"))

# ---------------------------------------------------------------- export
st.header("Export")
with st.container(border=True, key="syn_export"):
    e1, e2 = st.columns([2, 1])
    name = e1.text_input("Dataset name", value="synthetic-clinical-trials", key="syn_export_name")
    only = e2.radio("Trials", ["filtered", "accepted"], key="syn_export_scope", horizontal=True,
                    format_func={"filtered": f"the {len(shown):,} filtered",
                                 "accepted": "accepted among them"}.get)
    chosen = shown if only == "filtered" else [r for r in shown if r["review_status"] == "accepted"]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "synthetic"
    if st.button(f"Prepare export of {len(chosen):,} trials", disabled=not chosen, key="syn_export_btn",
                 icon=":material/inventory_2:"):
        filters = {"run": run, "source": source, "intervention": intervention, "label": label,
                   "validation": vstatus, "review": review if only == "filtered" else "accepted"}
        filters = {k: v for k, v in filters.items() if v != ALL}
        with st.spinner("Writing JSONL, Parquet and the Hugging Face dataset…"):
            out = export.export_rows(chosen)
            hf_dir = export.write_hf_dataset(out, config.DATA_DIR / "exports" / slug, name, filters)
            ss.syn_export = {"slug": slug, "n": len(out), "jsonl": export.to_jsonl(out),
                             "parquet": export.to_parquet(out), "hf_zip": export.zip_dir(hf_dir), "dir": str(hf_dir)}
    ready = ss.get("syn_export")
    if ready:
        st.caption(f"{ready['n']:,} trials · Hugging Face dataset written to {ready['dir']} "
                   "(`datasets.load_from_disk`), README.md is its data card.")
        d1, d2, d3 = st.columns(3)
        d1.download_button("JSON Lines", ready["jsonl"], f"{ready['slug']}.jsonl", "application/jsonl",
                           key="syn_dl_jsonl", icon=":material/download:")
        d2.download_button("Parquet", ready["parquet"], f"{ready['slug']}.parquet", "application/octet-stream",
                           key="syn_dl_parquet", icon=":material/download:")
        d3.download_button("Hugging Face dataset (zip)", ready["hf_zip"], f"{ready['slug']}.zip", "application/zip",
                           key="syn_dl_hf", icon=":material/download:")
