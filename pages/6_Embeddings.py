"""Embeddings: cosine-similarity histograms, t-SNE / UMAP maps and quality metrics of synthetic sets.

Computation runs in its own process (`python -m core analyze`); this page only starts it, shows
its progress and renders the results the store holds for the chosen parameters."""
from __future__ import annotations

import dataclasses

import pandas as pd
import streamlit as st

from core import ui

from core.analysis import quality as analysis
from core.services import analysis as svc
from core.serialize import classifier_text

db = ui.page("Embeddings and quality", ":material/scatter_plot:", page_title="Embeddings", home_link=True)
sets = analysis.synthetic_sets(db)
if not sets:
    st.info("No synthetic trials in the store yet: generate some on the Generate page or import a published "
            "set (`python -m core import-synthetic`). The analysis compares synthetic with real trials.")
    st.page_link(ui.PAGES["Generate"], label="Generate synthetic trials", icon=":material/auto_awesome:")
    st.stop()

ALL = "All sets together"
set_names = [s for s, _ in sets]
with st.sidebar:
    st.subheader("Analysis parameters")
    choice = st.selectbox("Synthetic set", [ALL, *set_names], key="emb_set",
                          format_func=lambda s: s if s == ALL else f"{s} ({dict(sets)[s]:,})")
    scope = st.radio("Real trials", analysis.REAL_SCOPES, key="emb_scope",
                     format_func={"interventions": "Labelled trials of the set's interventions (paper)",
                                  "all": "All labelled trials"}.get)
    encoder = st.selectbox("Encoder", ["minilm", "biobert"], key="emb_encoder",
                           format_func={"minilm": "all-MiniLM-L6-v2 (bundled)",
                                        "biobert": "BioBERT [CLS] (if available locally)"}.get)
    pairs = st.number_input("Pairs per histogram", 100, 100_000, 10_000, step=1000, key="emb_pairs")
    seed = st.number_input("Seed", 0, 2**31 - 1, 0, key="emb_seed")
    max_real = st.number_input("Cap on real trials", 0, 100_000, 5_000, step=500, key="emb_max_real",
                               help="Seeded sample for speed; 0 = all")
    max_synth = st.number_input("Cap on synthetic trials", 0, 100_000, 5_000, step=500, key="emb_max_synth")
    threshold = st.number_input("Near-copy threshold (cosine distance)", 0.0, 1.0, 0.05, step=0.01,
                                format="%.3f", key="emb_threshold")
    projections = st.multiselect("Projections", analysis.PROJECTIONS, default=list(analysis.PROJECTIONS),
                                 format_func={"tsne": "t-SNE (perplexity 30, 1000 iterations)", "umap": "UMAP"}.get,
                                 key="emb_projections")

params = analysis.AnalysisParams(
    synthetic_source=None if choice == ALL else choice, real_scope=scope, pairs=int(pairs), seed=int(seed),
    encoder=encoder, max_real=int(max_real), max_synthetic=int(max_synth), copy_threshold=float(threshold))
main_job = svc.job_id(db, params, projections, False)
sets_params = dataclasses.replace(params, synthetic_source=None)
sets_job = svc.job_id(db, sets_params, (), True)


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


def running(job_id: str) -> bool:
    job = svc.state(job_id)
    return bool(job and job["active"])


res = analysis.stored(db, params, projections)
have_all = res["quality"] is not None and len(res["projections"]) == len(projections)
cols = st.columns([1, 1, 3])
if cols[0].button("Compute" if not have_all else "Recompute", type="primary" if not have_all else "secondary",
                  disabled=running(main_job), key="emb_compute", icon=":material/play_arrow:"):
    svc.start(db, params, projections, recompute=have_all)
    st.rerun()
if cols[1].button("Metrics for every set", disabled=running(sets_job), key="emb_compute_sets",
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

tab_hist, tab_map, tab_quality = st.tabs(["Cosine similarity", "Map (t-SNE / UMAP)", "Quality metrics"])

with tab_hist:
    st.caption(f"{params.pairs:,} sampled pairs of each kind (seed {params.seed}); {q['n_real']:,} real and "
               f"{q['n_synthetic']:,} synthetic trials; embedded text = the classifier's scrubbed serialization.")
    st.plotly_chart(analysis.histogram_figure(q), key="emb_hist")
    st.dataframe(pd.DataFrame([{"pairs": k, **{s: v[s] for s in ("n", "mean", "sd", "min", "median", "max")}}
                               for k, v in q["cosine"].items()]), hide_index=True, key="emb_cosine_table")


def show_selection(points: list[dict]) -> None:
    real_ids = [p["id"] for p in points if p["kind"] == "real"]
    synth_ids = [p["id"] for p in points if p["kind"] != "real"]
    if len(points) > 1:
        st.subheader(f"{len(points)} selected trials")
        st.dataframe(pd.DataFrame([{k: p[k] for k in ("kind", "id", "nct_id", "title", "intervention", "label",
                                                      "source", "validation_status")} for p in points]),
                     hide_index=True, key="emb_selected_table")
        return
    real, synth = analysis.records_for(db, real_ids, synth_ids)
    p = points[0]
    if p["kind"] == "real":
        rec = real.get(p["id"])
        st.subheader(f"Real trial {p['id']}")
        st.markdown(f"[Open {p['id']} on the Trials page]({ui.trial_url(p['id'])})  ·  label: {p['label']}  ·  "
                    f"intervention: {p['intervention']}")
        text = classifier_text(rec) if rec else "(record not in the store any more)"
    else:
        row = synth.get(p["id"]) or {}
        rec = row.get("record") or {}
        st.subheader(f"Synthetic trial {p['id']}")
        st.markdown(f"set: `{p['source']}`  ·  intended label: {p['label']}  ·  intervention: {p['intervention']}"
                    f"  ·  validation: {p['validation_status']}")
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
        color_label = c2.selectbox("Colour by", list(analysis.COLOR_BY), key="emb_color")
        proj = res["projections"][method]
        fig = analysis.scatter_figure(proj["points"], analysis.COLOR_BY[color_label])
        st.caption("Circles: real trials; diamonds: synthetic. Select one point (click it, or a small lasso "
                   "around it) to see its record; a lasso (the default drag) or a box lists several.")
        event = st.plotly_chart(fig, key=f"emb_map_{method}_{analysis.COLOR_BY[color_label]}", on_select="rerun",
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
        r = analysis.stored(db, dataclasses.replace(params, synthetic_source=name))["quality"]
        if r is not None:
            per_set[name] = r
    if params.synthetic_source is None:
        per_set = {ALL: q, **per_set}
    missing = [s for s in set_names if s not in per_set]
    st.caption("Fidelity: detection AUC of a cross-validated classifier telling real from synthetic embeddings "
               "(0.5 = indistinguishable). Privacy: cosine distance of each synthetic trial to its closest real "
               f"trial; near copies are at most {params.copy_threshold:g} away. Diversity: mean pairwise cosine "
               "(lower = more diverse) and distinct-n over the text. Validation: from each trial's checks.")
    def fmt(v) -> str:
        return "–" if v is None else (f"{v:.3f}" if isinstance(v, float) else f"{v:,}")

    st.table(pd.DataFrame([{k: (v if k == "metric" else fmt(v)) for k, v in row.items()}
                           for row in analysis.quality_table(per_set)]).set_index("metric"))
    if missing:
        st.caption(f"Not computed with these parameters yet: {', '.join(missing)} (use **Metrics for every set**).")
    if q["near_copy_examples"]:
        st.subheader(f"Near copies ({q['near_copies']})")
        st.dataframe(pd.DataFrame(q["near_copy_examples"]), hide_index=True, key="emb_copies")
