"""Fine-tune: choose an experiment cell, see what the classifier will see (scrubbing, leakage audit),
launch it as a background run and watch it (progress, cancel, logs)."""
from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from core import serialize, ui
from core.review import md_escape as plain
from core.finetune import table3 as T3
from core.services import finetune as svc

db = ui.page("Fine-tune", ":material/model_training:",
             caption="Outcome prediction experiments of the paper (section 4.1): train a classifier on real, "
                     "synthetic or hybrid trials and test it on real ones. Runs are separate processes: they keep "
                     "going when you leave or reload this page.")


@st.cache_resource(show_spinner="Reading and scrubbing the labelled trials…", max_entries=4, ttl=600)
def dataset(db_file: str, version: tuple[int, int], source: str | None, mode: str):
    return svc.dataset(db_file, source, mode)


@st.cache_data(show_spinner="Leakage audit…", max_entries=8, ttl=600)
def audit(db_file: str, version: tuple[int, int], source: str | None, mode: str) -> dict:
    return svc.leakage_audit(dataset(db_file, version, source, mode))


@st.cache_data(ttl=600)
def model_info(model: str) -> tuple[str, str]:
    return svc.model_info(model)


version = ui.store_version(db)
sources = svc.synthetic_sources(db)

# ---------------------------------------------------------------- settings
with st.container(border=True):
    st.subheader("Run settings")
    c1, c2, c3 = st.columns(3)
    experiment = c1.selectbox("Experiment", svc.EXPERIMENTS, key="ft_experiment",
                              format_func=lambda e: f"{T3.SECTION_TITLES[e]} — {svc.EXPERIMENT_HELP[e]}")
    ratio = None
    if experiment == "ratio":
        pct = c2.select_slider("Synthetic share of the training set (%)", options=[100, 80, 60, 40, 20, 0],
                               value=60, key="ft_ratio")
        ratio = pct / 100
        train = svc.ratio_train_name(ratio)
    else:
        train = c2.selectbox("Training set", svc.TRAIN_SETS, index=1, key="ft_train",
                             format_func=lambda t: T3.TRAIN_TITLES[t])
    source_names = ["(all usable synthetic trials)"] + [s for s, _ in sources]
    source = c3.selectbox("Synthetic set", source_names, key="ft_source",
                          format_func=lambda s: s if s.startswith("(") else
                          f"{s} ({svc.plural(dict(sources)[s], 'usable trial')})")
    source = None if source.startswith("(") else source

    c4, c5, c6, c7 = st.columns([2, 1, 1, 1])
    model_choice = c4.selectbox(
        "Model", ["tfidf", "auto", "minilm", "other (path or Hugging Face id)"], key="ft_model",
        format_func={"tfidf": "TF-IDF + logistic regression (seconds, CPU)",
                     "auto": "BioBERT if available locally, else all-MiniLM-L6-v2",
                     "minilm": "all-MiniLM-L6-v2 (bundled)",
                     "other (path or Hugging Face id)": "Other: a local path or a cached Hugging Face id"}.get)
    model = model_choice
    if model_choice.startswith("other"):
        model = st.text_input("Model path or Hugging Face id", value=svc.BIOBERT, key="ft_model_other")
    seeds_text = c5.text_input("Seeds", value="40,41,42", key="ft_seeds")
    epochs = c6.number_input("Epochs", min_value=1, max_value=50, value=7, key="ft_epochs",
                             disabled=model == "tfidf")
    max_length = c7.number_input("Max length (tokens)", min_value=16, max_value=512, value=512, step=16,
                                 key="ft_max_length", disabled=model == "tfidf")
    scrub_mode = st.radio("Scrubbing", serialize.MODES, horizontal=True, key="ft_scrub",
                          format_func={"strict": "strict (default): everything that leaks the outcome",
                                       "paper": "paper-exact: overall_status, why_stopped, label words in synthetic text"}.get)

    name, note = model_info(model)
    if name:
        st.markdown(f"**Model that will run:** `{name}`")
    if note:
        (st.error if not name else st.info)(note)
    if model == "tfidf" and train == "none":
        st.info("With TF-IDF, “no fine-tuning” is a constant classifier (there is no pre-trained TF-IDF model): "
                "P(success) = 0.5 for every trial, so all are predicted successes and ROC-AUC is 0.5 by construction.")

    ds = dataset(str(db), version, source, scrub_mode)
    counts = svc.synthetic_counts(db, source)
    m1, m2, m3 = st.columns(3)
    m1.metric("Set A (labelled, in-distribution)", f"{len(ds.set_a):,}")
    m2.metric("Set B (other interventions)", f"{len(ds.set_b):,}")
    m3.metric("Synthetic trials", f"{len(ds.synthetic):,}", help="usable for training: " + svc.USABLE_RULE)
    st.caption(plain(svc.synthetic_message(counts)))
    st.caption(f"Set A is defined by {svc.plural(len(ds.interventions), 'intervention')}: {ds.interventions_from}.")

    problem = None
    try:
        seeds = tuple(int(s) for s in seeds_text.split(",") if s.strip())
        if not seeds:
            raise ValueError
    except ValueError:
        seeds, problem = (), f"Seeds: {seeds_text!r} is not a comma-separated list of integers."
    req = svc.RunRequest(experiment, train, model=model, seeds=seeds, synthetic_ratio=ratio, epochs=int(epochs),
                         max_length=int(max_length), scrub_mode=scrub_mode, synthetic_source=source)
    if not problem:
        problem = svc.request_problem(ds, req, counts)
    if problem:
        st.warning(problem)
    if st.button("Launch run", type="primary", disabled=bool(problem) or not name, key="ft_launch"):
        run_id = svc.start(db, req)
        st.session_state["ft_pick"] = run_id  # the runs panel below shows the new run
        st.success(f"Started run {run_id}")

# ---------------------------------------------------------------- what the classifier sees
with st.expander("What the classifier sees: scrubbing and leakage audit", expanded=False):
    st.markdown("**Removed fields:** " + ", ".join(f"`{f}`" for f in serialize.removed_fields(scrub_mode)))
    st.markdown("**Removed words** (" + ("all text" if scrub_mode == "strict" else "synthetic text only") + "): "
                + ", ".join(f"“{w}”" for w in serialize.LEAK_WORDS))
    result = audit(str(db), version, source, scrub_mode)
    st.metric("Leakage audit: ROC-AUC of a classifier on ONLY the removed fields", f"{result['roc_auc']:.3f}",
              help="TF-IDF + logistic regression trained on the removed text alone (60/40 split of the labelled "
                   "real trials). 0.5 means the removed fields carry no outcome signal; higher means scrubbing "
                   "them was necessary.")
    st.caption(f"{result['n_train']:,} training and {result['n_test']:,} test trials.")
    if ds.set_a:
        ex = ds.set_a[0]
        st.markdown(f"Example: scrubbed text of {ex.id} (set A)")
        st.code(ex.text[:3000], language=None, wrap_lines=True)
        st.markdown("Removed from it:")
        st.code(ds.removed.get(ex.id) or "(nothing)", language=None, wrap_lines=True)
    if ds.synthetic:
        st.markdown(f"Example: scrubbed synthetic trial {ds.synthetic[0].id}")
        st.code(ds.synthetic[0].text[:3000], language=None, wrap_lines=True)


# ---------------------------------------------------------------- runs
def _progress_text(j: dict) -> str:
    p = j.get("progress") or {}
    if not p:
        return ""
    if p.get("seed") is None:
        return p.get("stage") or ""
    parts = [f"seed {p.get('seed')} ({(p.get('seed_index') or 0) + 1}/{p.get('n_seeds')})"]
    if p.get("max_steps"):
        parts.append(f"step {p.get('step')}/{p.get('max_steps')}")
    if p.get("epoch") is not None:
        parts.append(f"epoch {p['epoch']:.2f}")
    if p.get("loss") is not None:
        parts.append(f"loss {p['loss']:.4f}")
    return " · ".join(parts)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else ""


def runs_panel() -> None:
    st.subheader("Runs")
    svc.store_pending(db)  # results that could not be written while the store was busy
    all_jobs = svc.run_views(db)
    active = any(j["status"] in svc.ACTIVE for j in all_jobs)
    if st.session_state.get("ft_was_active") and not active:
        st.session_state["ft_was_active"] = False
        st.rerun()  # a run just ended: stop polling
    st.session_state["ft_was_active"] = active
    if not all_jobs:
        st.caption("No background runs yet for this store.")
        return
    table = pd.DataFrame([{
        "run": j["run_id"], "status": j.get("status"), "progress": _progress_text(j),
        "model": j["model"], "experiment": j["experiment"], "training": j["training"],
        "started": _when(j.get("started_at")), "finished": _when(j.get("finished_at")),
        "duration (s)": f"{j['duration_s']:.1f}" if j.get("duration_s") is not None else "",
        "stored": "yes" if j.get("stored") else "no",
    } for j in all_jobs])
    st.table(table.set_index("run"))  # small, and plain HTML: readable by people and by screen readers
    ids = [j["run_id"] for j in all_jobs]
    if st.session_state.get("ft_pick") not in ids:
        st.session_state.pop("ft_pick", None)
    pick = st.selectbox("Run", ids, key="ft_pick")
    j = next(x for x in all_jobs if x["run_id"] == pick)
    p = j.get("progress") or {}
    if j.get("status") in svc.ACTIVE:
        frac = (p.get("step") or 0) / p["max_steps"] if p.get("max_steps") else 0.0
        seeds_done = (p.get("seed_index") or 0) / max(p.get("n_seeds") or 1, 1)
        total = min(1.0, seeds_done + frac / max(p.get("n_seeds") or 1, 1))
        st.progress(total, text=f"{j['status']}: {_progress_text(j) or 'starting…'}")
        if st.button("Cancel run", key=f"ft_cancel_{pick}"):
            svc.cancel(pick)
            st.rerun(scope="fragment")
    elif j.get("status") == "done":
        st.success(f"Run {pick} finished; results are on the Experiments page.")
    elif j.get("status") == "failed":
        st.error(f"Run {pick} failed: {j.get('error')}")
    else:
        st.info(f"Run {pick}: {j.get('status')}")
    with st.expander("Log", expanded=j.get("status") == "failed"):
        st.code(svc.log_tail(pick) or "(empty)", language=None)


# Poll every 2 s only while a run is active (launching one reruns the script, which turns polling on).
_active = svc.any_active(db)
st.fragment(run_every=2 if _active else None)(runs_panel)()
