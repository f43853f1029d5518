"""Embeddings: cosine-similarity histograms, t-SNE / UMAP maps and quality metrics of synthetic sets.

Computation runs in its own process (`python -m core analyze`); this page only starts it, shows
its progress and renders the results the store holds for the chosen parameters."""
from __future__ import annotations

import dataclasses

import pandas as pd
import streamlit as st

from core import ui
from core.review import md_escape as plain
from core.serialize import classifier_text
from core.services import analysis as svc
from core.ui import figures
from core.services.wording import plural

db = ui.page("Embeddings and quality", ":material/scatter_plot:", page_title="Embeddings", home_link=True)
sets = svc.synthetic_sets(db)
if not sets:
    st.info("No synthetic trials in the store yet: generate some on the Generate page or import a published "
            "set (`python -m core import-synthetic`). The analysis compares synthetic with real trials.")
    st.page_link(ui.PAGES["Generate"], label="Generate synthetic trials", icon=":material/auto_awesome:")
    st.stop()

ALL = "All sets together"
by_name = {s["source"]: s for s in sets}
set_names = list(by_name)
with st.sidebar:
    st.subheader("Analysis parameters")
    rule = st.radio("Synthetic trials analysed", svc.SYNTHETIC_RULES, key="emb_rule",
                    format_func={"usable": "Usable only (as fine-tuning: not invalid, not rejected)",
                                 "all": "All, invalid and rejected included"}.get)
    count = "usable" if rule == "usable" else "n"
    choice = st.selectbox("Synthetic set", [ALL, *set_names], key="emb_set",
                          format_func=lambda s: s if s == ALL else f"{s} ({by_name[s][count]:,})")
    scope = st.radio("Real trials", svc.REAL_SCOPES, key="emb_scope",
                     format_func={"interventions": "Labelled trials of the set's interventions (paper)",
                                  "all": "All labelled trials"}.get)
    encoder = st.selectbox("Encoder", ["minilm", "biobert"], key="emb_encoder",
                           format_func={"minilm": "all-MiniLM-L6-v2 (bundled)",
                                        "biobert": "BioBERT [CLS] (if available locally)"}.get)
    pairs = st.number_input("Pairs per histogram", 100, 100_000, 10_000, step=1000, key="emb_pairs",
                            help="Drawn without replacement from the distinct pairs; when fewer exist, all of them")
    seed = st.number_input("Seed", 0, 2**31 - 1, 0, key="emb_seed")
    max_real = st.number_input("Cap on real trials", 0, 100_000, 5_000, step=500, key="emb_max_real",
                               help="Seeded sample for speed; 0 = all")
    max_synth = st.number_input("Cap on synthetic trials", 0, 100_000, 5_000, step=500, key="emb_max_synth")
    threshold = st.number_input("Near-copy threshold (cosine distance)", 0.0, 1.0, 0.05, step=0.01,
                                format="%.3f", key="emb_threshold")
    projections = st.multiselect("Projections", svc.PROJECTIONS, default=list(svc.PROJECTIONS),
                                 format_func={"tsne": "t-SNE (perplexity 30, 1000 iterations)", "umap": "UMAP"}.get,
                                 key="emb_projections")

params = svc.AnalysisParams(
    synthetic_source=None if choice == ALL else choice, real_scope=scope, pairs=int(pairs), seed=int(seed),
    encoder=encoder, max_real=int(max_real), max_synthetic=int(max_synth), copy_threshold=float(threshold),
    synthetic_rule=rule)
sets_params = dataclasses.replace(params, synthetic_source=None)


@st.fragment(run_every=1.0)
def _poll(job_id: str, title: str) -> None:
    """Polls a running job's progress; reruns the whole page once the job has ended."""
    job = svc.state(job_id)
    if not job or not job["active"]:
        st.rerun()
    with st.status(title, expanded=True, state="running"):
        st.progress(min(max(float(job.get("fraction") or 0), 0.0), 1.0), text=job.get("stage") or "…")


def job_progress(job_id: str, title: str) -> None:
    # Poll only while a job runs: an idle page does not rerun every second.
    job = svc.state(job_id)
    if job and job["active"]:
        _poll(job_id, title)
    elif job and job["state"] == "failed":
        st.error(f"{title} failed: {job.get('message')}")


main_job = svc.job_id(db, params, projections, False)
sets_job = svc.job_id(db, sets_params, (), True)
res = svc.stored(db, params, projections)
have_all = res["quality"] is not None and len(res["projections"]) == len(projections)
cols = st.columns([1, 1, 2])
if cols[0].button("Compute" if not have_all else "Recompute", type="primary" if not have_all else "secondary",
                  disabled=svc.running(main_job), key="emb_compute", icon=":material/play_arrow:"):
    svc.start(db, params, projections, recompute=have_all)
    st.rerun()
if cols[1].button("Metrics for every set", disabled=svc.running(sets_job), key="emb_compute_sets",
                  help="Quality metrics of each synthetic set separately, for the side-by-side table"):
    svc.start(db, sets_params, (), each_set=True)
    st.rerun()
if res["quality_row"]:
    row = res["quality_row"]
    cols[2].caption(f"Stored result from {row['created_at']:%Y-%m-%d %H:%M} (seed {row['seed']}, "
                    f"{row['elapsed_s']:.1f} s, encoder {row['model']}).")
job_progress(main_job, "Computing embeddings and metrics")
job_progress(sets_job, "Computing metrics for every set")

q = res["quality"]
if q is None:
    st.info("Nothing computed yet for these parameters. **Compute** runs the analysis in the background; "
            "the results are stored with their parameters and shown here.")
    st.stop()
if q.get("encoder_note"):
    st.warning(q["encoder_note"])
st.caption(plain(f"Synthetic trials analysed: {q['synthetic_rule_text']}"
                    + (f" ({plural(q['n_synthetic_excluded'], 'trial')} of the set left out)"
                       if q.get("n_synthetic_excluded") else "") + "."))

tab_hist, tab_map, tab_quality = st.tabs(["Cosine similarity", "Map (t-SNE / UMAP)", "Quality metrics"])

with tab_hist:
    st.caption(f"{q['n_real']:,} real and {q['n_synthetic']:,} synthetic trials; pairs drawn without replacement "
               f"from the distinct pairs (never a trial with itself), at most {params.pairs:,} of each kind "
               f"(seed {params.seed}); embedded text = the classifier's scrubbed serialization.")
    st.plotly_chart(figures.histogram_figure(q), key="emb_hist")
    st.dataframe(pd.DataFrame([{"pairs": k, "n": v["n"], "distinct pairs": v.get("distinct"),
                                **{s: v[s] for s in ("mean", "sd", "min", "median", "max")}}
                               for k, v in q["cosine"].items()]), hide_index=True, key="emb_cosine_table")
    few = [f"{k}: {v['n']:,}" for k, v in q["cosine"].items() if v.get("distinct") is not None
           and v["distinct"] < params.pairs]
    if few:
        st.caption("Fewer distinct pairs exist than asked for, so every one of them was used (" + "; ".join(few) + ").")


def show_selection(points: list[dict]) -> None:
    real_ids = [p["id"] for p in points if p["kind"] == "real"]
    synth_ids = [p["id"] for p in points if p["kind"] != "real"]
    if len(points) > 1:
        st.subheader(f"{len(points)} selected trials")
        st.dataframe(pd.DataFrame([{k: p[k] for k in ("kind", "id", "nct_id", "title", "intervention", "label",
                                                      "source", "validation_status")} for p in points]),
                     hide_index=True, key="emb_selected_table")
        return
    real, synth = svc.records_for(db, real_ids, synth_ids)
    p = points[0]
    if p["kind"] == "real":
        rec = real.get(p["id"])
        st.subheader(f"Real trial {p['id']}")
        st.markdown(f"[Open {p['id']} on the Trials page]({ui.trial_url(p['id'])})  ·  label: {p['label']}  ·  "
                    f"intervention: {plain(p['intervention'] or '')}")
        text = classifier_text(rec) if rec else "(record not in the store any more)"
    else:
        row = synth.get(p["id"]) or {}
        rec = row.get("record") or {}
        st.subheader(f"Synthetic trial {p['id']}")
        st.markdown(f"set: `{p['source']}`  ·  intended label: {p['label']}  ·  intervention: "
                    f"{plain(p['intervention'] or '')}  ·  validation: {p['validation_status']}")
        if row.get("example_nct_ids"):
            st.caption("Few-shot examples: " + ", ".join(row["example_nct_ids"]))
        text = classifier_text(rec, synthetic=True) if rec else "(record not in the store any more)"
    st.caption("Text embedded (scrubbed serialization)")
    st.text(text)


with tab_map:
    if not res["projections"]:
        st.info("No projection computed for these parameters: choose t-SNE or UMAP in the sidebar and Compute.")
    else:
        c1, c2 = st.columns(2)
        method = c1.radio("Projection", list(res["projections"]), horizontal=True, key="emb_method",
                          format_func={"tsne": "t-SNE", "umap": "UMAP"}.get)
        color_label = c2.selectbox("Colour by", list(figures.COLOR_BY), key="emb_color")
        proj = res["projections"][method]
        fig = figures.scatter_figure(proj["points"], figures.COLOR_BY[color_label])
        st.caption("Circles: real trials; diamonds: synthetic (real in blue, synthetic in orange). To see one "
                   "record, drag a small lasso around its point; a lasso around several (or the box tool) lists them.")
        event = st.plotly_chart(fig, key=f"emb_map_{method}_{figures.COLOR_BY[color_label]}", on_select="rerun",
                                selection_mode=("points", "box", "lasso"))
        chosen = []
        for sel in (event.selection.points if event and event.selection else []):
            trace = fig.data[sel["curve_number"]]
            cd = trace.customdata[sel["point_index"]]
            chosen.append(cd[0])
        if chosen:
            by_id = {p["id"]: p for p in proj["points"]}
            show_selection([by_id[i] for i in dict.fromkeys(chosen) if i in by_id])

with tab_quality:
    per_set = {}
    for name in set_names:
        r = svc.stored(db, dataclasses.replace(params, synthetic_source=name))["quality"]
        if r is not None:
            per_set[name] = r
    if params.synthetic_source is None:
        per_set = {ALL: q, **per_set}
    missing = [s for s in set_names if s not in per_set]
    st.caption("Fidelity: detection AUC of a cross-validated classifier telling real from synthetic embeddings "
               "(0.5 = indistinguishable), with a 95% bootstrap interval and its class sizes. Privacy: cosine "
               "distance of each synthetic trial to its closest real trial; near copies are at most "
               f"{params.copy_threshold:g} away. Diversity: mean pairwise cosine (lower = more diverse) and "
               "distinct-n over the text. Validation: from each trial's checks. Each count says what a rate is of.")
    for name, r in per_set.items():
        warn = (r.get("detection") or {}).get("warning")
        if warn:
            st.warning(f"{name}: {warn}")

    def fmt(v) -> str:
        return "–" if v is None else (f"{v:.3f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v))

    st.table(pd.DataFrame([{k: (v if k == "metric" else fmt(v)) for k, v in row.items()}
                           for row in svc.quality_table(per_set)]).set_index("metric"))
    if missing:
        st.caption(f"Not computed with these parameters yet: {', '.join(missing)} (use **Metrics for every set**).")
    if q["near_copy_examples"]:
        st.subheader(f"Near copies ({q['near_copies']})")
        st.dataframe(pd.DataFrame(q["near_copy_examples"]), hide_index=True, key="emb_copies")
