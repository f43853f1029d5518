"""Generate: pick an intervention and label, see the 3 retrieved examples, generate the 5 reasons and a
trial (rendered, raw, validated), and start a batch in the background with a cost estimate."""
from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable

import pandas as pd
import streamlit as st

from core import ui

from core.services import generate as generate_jobs
from core.pipeline.batch import REASONING_MAX_TOKENS, UsageError, estimate_items, example_budget
from core.llm import DEFAULT_OPENAI_MODEL, LLMError, get_llm, resolve_api_key
from core.prompts import PARTS, PromptError, load_prompts, prompt_hash
from core.pipeline.reasoning import FormatError
from core.pipeline.retrieval import MIN_EACH, RULE_HELP, RULES, RetrievalError
from core.review import badges_markdown, record_markdown
from core.store import StoreLocked, connect

db = ui.page("Generate synthetic trials", ":material/auto_awesome:", page_title="Generate", home_link=True,
             caption="The paper's pipeline: retrieval of 3 real trials of one intervention and outcome → 5 reasons "
                     "for that outcome → a new trial report of the same intervention and outcome (Tables 1 and 2).")
version = ui.store_version(db)
ss = st.session_state

# ---------------------------------------------------------------- model settings (sidebar)
with st.sidebar:
    st.subheader("Model")
    backend = st.radio("Backend", ["local", "openai"], key="gen_backend", horizontal=True,
                       format_func={"local": "Embedded (offline)", "openai": "OpenAI-compatible"}.get)
    base_url = model = typed_key = None
    if backend == "openai":
        base_url = st.text_input("Base URL", key="gen_base_url", placeholder="https://api.openai.com/v1",
                                 help="Empty: OpenAI. Or Azure's /openai/v1/ endpoint, vLLM, Ollama, a llama.cpp server…"
                                 ).strip() or None
        model = st.text_input("Model", value=DEFAULT_OPENAI_MODEL, key="gen_model").strip() or DEFAULT_OPENAI_MODEL
        have_key = resolve_api_key(None) is not None
        typed_key = st.text_input(
            "API key", type="password", key="gen_api_key",
            placeholder="found in OPENAI_API_KEY / secrets.toml" if have_key else "sk-…",
            help="Used for this session's requests only: never stored, logged or exported.").strip() or None
        if not (have_key or typed_key or base_url):
            st.warning("No API key: set OPENAI_API_KEY, add it to .streamlit/secrets.toml, or type it above.")
    else:
        st.caption("Gemma 3 270M (Q4_K_M GGUF, llama.cpp), a base model: prompts are rendered as a document "
                   "for it to continue. Small and fast, not a good writer; use an OpenAI-compatible model for "
                   "real sets.")
    max_tokens = st.number_input("Max tokens per reply", 64, 16_384, 1024, step=64, key="gen_max_tokens")
    temperature = st.slider("Temperature", 0.0, 2.0, 1.0, 0.1, key="gen_temperature")
    st.subheader("Retrieval")
    rule = st.selectbox("Rule", RULES, key="gen_rule", format_func=lambda r: f"{r}: {RULE_HELP[r]}")
    min_each = st.number_input("Successful and failed trials an intervention needs", 1, 50, MIN_EACH,
                               key="gen_min_each")


def make_llm(for_calls: bool):
    """The LLM of the sidebar settings. Counting tokens needs no key; calls do (except on a custom base URL)."""
    from core.store.llmlog import db_logger

    on_call = db_logger(db) if for_calls else None
    if backend == "local":
        return get_llm("local", on_call=on_call)
    key = typed_key or resolve_api_key(None)
    if not key and not base_url:
        if for_calls:
            raise LLMError("no OpenAI API key (see the sidebar)", kind="auth", retryable=False)
        key = "not-needed-for-counting"
    return get_llm("openai", model=model, base_url=base_url, api_key=key, on_call=on_call)


@st.cache_data(ttl=60, show_spinner=False)
def eligible(db_file: str, version: tuple, rule: str, min_each: int) -> tuple[list[dict], list[dict]]:
    from core.pipeline.retrieval import eligible_interventions, rule_summary

    with connect(db_file, read_only=True, wait_s=ui.READ_WAIT_S) as con:
        return eligible_interventions(con, rule, min_each), rule_summary(con, min_each)


try:
    drugs, summary = eligible(str(db), version, rule, int(min_each))
except StoreLocked as exc:
    st.warning(f"The store is busy (a batch or an import is writing it): {exc}. Reload in a moment.")
    st.stop()

# ---------------------------------------------------------------- prompts (editable for this session's runs)
paper = load_prompts()
with st.expander("Prompts (the paper's Tables 1 and 2; edit for this session's generations and batches)"):
    overrides: dict[str, dict[str, str]] = {}
    for stage in ("reasoning", "generation"):
        st.markdown(f"**{stage.capitalize()} module**")
        for part in PARTS[stage]:
            text = st.text_area(f"{stage} · {part}", value=paper[stage][part], key=f"gen_prompt_{stage}_{part}",
                                height=68 if len(paper[stage][part]) < 200 else 120)
            if text != paper[stage][part]:
                overrides.setdefault(stage, {})[part] = text
    try:
        prompts = load_prompts(overrides)
    except PromptError as exc:
        st.error(str(exc))
        prompts, overrides = paper, {}
    st.caption(f"Prompt hash {prompt_hash(prompts)}" + (" (edited)" if overrides else " (the paper's)")
               + " — stored with every output.")

# ---------------------------------------------------------------- 1. retrieval
st.header("1 · Retrieval")
st.dataframe(pd.DataFrame(summary)[["rule", "interventions", "trials", "description"]], hide_index=True,
             key="gen_rules")
if not drugs:
    st.warning(f"No intervention has at least {min_each} successful and {min_each} failed labelled trials under "
               f"rule '{rule}'. Load more data or lower the threshold in the sidebar.")
    st.stop()

c1, c2, c3 = st.columns([3, 1.3, 1])
drug = c1.selectbox("Intervention", drugs, key="gen_drug",
                    format_func=lambda d: f"{d['name']} — {d['n_success']} success / {d['n_failure']} failure trials")
label = c2.radio("Label", [1, 0], key="gen_label", horizontal=True, format_func={1: "success", 0: "failure"}.get)
ss.setdefault("gen_seed", 0)


def resample() -> None:
    ss.gen_seed += 1


c3.button("Resample", icon=":material/shuffle:", on_click=resample, key="gen_resample",
          help="Draw 3 other trials of this intervention and label")

try:
    counter = make_llm(for_calls=False)
    budget = example_budget(counter, prompts, int(max_tokens), 3)
except (UsageError, LLMError) as exc:
    st.error(str(exc))
    st.stop()

retrieval_key = (str(db), drug["drugbank_id"], label, ss.gen_seed, rule, int(min_each), backend, model,
                 base_url, budget)
if ss.get("gen_retrieval_key") != retrieval_key:
    from core.pipeline.retrieval import example_records, retrieve
    from core.store.retrieval import drug_synonyms

    try:
        with connect(db, read_only=True, wait_s=ui.READ_WAIT_S) as con:
            retrieval = retrieve(con, intervention=drug["drugbank_id"], label=label, seed=ss.gen_seed, rule=rule,
                                 min_each=int(min_each), count_tokens=counter.count_tokens, budget=budget)
            ex_records = example_records(con, [e.nct_id for e in retrieval.examples])
            synonyms = drug_synonyms(con, retrieval.drugbank_id)
    except (RetrievalError, StoreLocked) as exc:
        st.error(str(exc))
        st.stop()
    ss.gen_retrieval_key = retrieval_key
    ss.gen_retrieval = retrieval
    ss.gen_examples = ex_records
    ss.gen_synonyms = synonyms
    ss.pop("gen_reasoning", None)
    ss.pop("gen_generation", None)
retrieval = ss.gen_retrieval

st.subheader(f"Retrieved examples: {retrieval.intervention}, {ui.label_text(retrieval.label)}")
st.caption(f"Seed {retrieval.seed} · {retrieval.tokens:,} tokens in all, budget {budget:,} "
           f"({counter.model} tokenizer, {counter.context_window:,}-token context)"
           + (" · some examples were shortened to fit" if retrieval.truncated else ""))
cols = st.columns(len(retrieval.examples))
for i, (col, ex) in enumerate(zip(cols, retrieval.examples), 1):
    with col.container(border=True, key=f"gen_example_{i}"):
        rec = ss.gen_examples.get(ex.nct_id) or {}
        st.markdown(f"**Example {i}: [{ex.nct_id}]({ui.trial_url(ex.nct_id)})**")
        if rec.get("brief_title"):
            st.caption(rec["brief_title"])
        tokens = f"{ex.tokens:,} tokens" + (f" (of {ex.original_tokens:,}: shortened)" if ex.truncated else "")
        st.markdown(tokens)
        if ex.truncated:
            st.caption("Dropped or shortened: " + ", ".join(ex.dropped[:12]) + ("…" if len(ex.dropped) > 12 else ""))
        with st.expander("What the model sees"):
            st.code(ex.text[:30_000] + ("\n…" if len(ex.text) > 30_000 else ""), language="json", wrap_lines=True)


def ask_model(spinner: Callable[[str], str], call: Callable[[Any], Awaitable[Any]], unreadable: str):
    """One model call from the page: (result, llm), or (None, None) after showing why it failed: the replies
    could not be read (`unreadable`, with the raw reply), or the call itself failed."""
    async def _call(llm):
        try:
            return await call(llm)
        finally:
            closer = getattr(llm, "aclose", None)
            if closer:
                await closer()

    try:
        llm = make_llm(for_calls=True)
        with st.spinner(spinner(llm.model)):
            return asyncio.run(_call(llm)), llm
    except FormatError as exc:
        st.error(f"{unreadable}: {exc}")
        st.code(getattr(exc, "raw_text", "") or "", language=None, wrap_lines=True)
    except LLMError as exc:
        st.error(f"The model call failed ({exc.kind}, after {exc.attempts} attempt(s)): {exc}")
    return None, None


# ---------------------------------------------------------------- 2. reasoning
st.header("2 · Reasoning")
if st.button("Generate reasons", type="primary", icon=":material/psychology:", key="gen_reasons_btn"):
    from core.pipeline.reasoning import areason

    r, llm = ask_model(lambda m: f"Asking {m} for 5 reasons…",
                       lambda llm: areason(llm, retrieval, prompts=prompts, temperature=float(temperature),
                                           max_tokens=min(int(max_tokens), REASONING_MAX_TOKENS), seed=ss.gen_seed),
                       "The model's replies had no 5 numbered reasons")
    if r is not None:
        ss.gen_reasoning = {"reasons": r.reasons, "raw": r.raw_text, "attempts": r.attempts,
                            "tokens": sum(x.prompt_tokens + x.completion_tokens for x in r.responses),
                            "cost": sum(x.cost_usd or 0 for x in r.responses),
                            "latency": sum(x.latency_s for x in r.responses), "model": llm.model}
        ss.pop("gen_generation", None)
reasoning = ss.get("gen_reasoning")
if reasoning:
    st.markdown("\n".join(f"{i}. {r}" for i, r in enumerate(reasoning["reasons"], 1)))
    st.caption(f"{reasoning['model']} · {reasoning['attempts']} attempt(s) · {reasoning['tokens']:,} tokens · "
               f"${reasoning['cost']:.5f} · {reasoning['latency']:.1f} s")
    with st.expander("Raw reply"):
        st.code(reasoning["raw"], language=None, wrap_lines=True)
else:
    st.caption("No reasons yet for these examples.")

# ---------------------------------------------------------------- 3. generation
st.header("3 · Generation")
if st.button("Generate the trial", type="primary", icon=":material/description:", disabled=not reasoning,
             key="gen_trial_btn"):
    from core.pipeline.generation import agenerate
    from core.pipeline.validation import validate

    g, llm = ask_model(lambda m: f"{m} is writing a {ui.label_text(retrieval.label)} trial of "
                                 f"{retrieval.intervention}…",
                       lambda llm: agenerate(llm, retrieval, reasoning["reasons"], prompts=prompts,
                                             temperature=float(temperature), max_tokens=int(max_tokens),
                                             seed=ss.gen_seed + 7919, synonyms=ss.gen_synonyms),
                       "The model's replies could not be read as a trial")
    if g is not None:
        status, checks = validate(g.record, intended_intervention=retrieval.intervention, synonyms=ss.gen_synonyms,
                                  examples=[ss.gen_examples[e.nct_id] for e in retrieval.examples
                                            if e.nct_id in ss.gen_examples])
        ss.gen_generation = {"record": g.record, "raw": g.raw_text, "format": g.parse_format,
                             "generated": g.generated_intervention, "match": g.intervention_match,
                             "status": status, "checks": checks, "attempts": g.attempts,
                             "cost": sum(x.cost_usd or 0 for x in g.responses), "model": llm.model}
gen = ss.get("gen_generation")
if gen:
    st.markdown(badges_markdown(gen["status"], gen["checks"]))
    st.caption(f"Intended: {retrieval.intervention} · generated: {gen['generated'] or '(none)'} · "
               f"{'match' if gen['match'] else 'no match'} · read as {gen['format']} · {gen['attempts']} attempt(s) · "
               f"${gen['cost']:.5f}")
    t1, t2, t3, t4 = st.tabs(["Rendered", "Raw reply", "Record", "Validation"])
    with t1:
        st.markdown(record_markdown(gen["record"]))
    with t2:
        st.code(gen["raw"], language=None, wrap_lines=True)
    with t3:
        st.json(gen["record"], expanded=False)
    with t4:
        st.json(gen["checks"])
elif not reasoning:
    st.caption("Generate the reasons first: the trial is written from them.")

# ---------------------------------------------------------------- 4. batch
st.header("4 · Batch run")
with st.container(border=True, key="gen_batch"):
    b1, b2, b3, b4 = st.columns(4)
    n = b1.number_input("Trials", 1, 100_000, 10, key="gen_batch_n")
    concurrency = b2.number_input("Requests in flight", 1, 64, 1 if backend == "local" else 8, key="gen_batch_c",
                                  help="The embedded model answers one request at a time; servers take many.")
    run_seed = b3.number_input("Run seed", 0, 2**31 - 1, 0, key="gen_batch_seed")
    scope = b4.selectbox("Items", ["this", "both", "any"], key="gen_batch_scope", format_func={
        "this": f"{retrieval.intervention}, {ui.label_text(retrieval.label)}",
        "both": f"{retrieval.intervention}, label drawn per item",
        "any": "intervention and label drawn per item"}.get)
    est = estimate_items(counter, retrieval, n=int(n), max_tokens=int(max_tokens), prompts=prompts)
    if est["cost_total"] is None:
        cost_text = "no price known for this model (self-hosted?)"
    elif est["cost_total"] == 0:
        cost_text = "free (runs on this machine)"
    else:
        cost_text = (f"≈ ${est['cost_total']:.4f} (at most ${est['cost_total_max']:.4f} if every reply uses "
                     f"max tokens; retries extra)")
    st.markdown(f"**Cost estimate** for {int(n):,} trials with {counter.model}: {cost_text}")
    st.caption(f"Per trial ≈ {est['prompt_tokens_per_item']:,} prompt tokens (reasoning + generation, counted "
               f"exactly for these examples) and ≈ {est['completion_tokens_per_item']:,} reply tokens.")
    if st.button("Start batch", type="primary", icon=":material/play_arrow:", key="gen_batch_start"):
        if backend == "openai" and not (typed_key or resolve_api_key(None) or base_url):
            st.error("No API key for OpenAI (see the sidebar).")
        else:
            rid = generate_jobs.start_batch(
                db, api_key=typed_key, n=int(n), backend=backend, base_url=base_url, model=model,
                concurrency=int(concurrency), seed=int(run_seed), max_tokens=int(max_tokens),
                temperature=float(temperature), rule=rule, prompts=overrides or None,
                intervention=retrieval.drugbank_id if scope in ("this", "both") else None,
                label=retrieval.label if scope == "this" else None)
            ss.setdefault("gen_runs", []).append(rid)
            st.toast(f"Batch {rid} started")


def _progress() -> None:
    runs = ss.get("gen_runs", [])
    if not runs:
        st.caption("No batch started from this session yet. Batches run as their own processes: they keep "
                   "going when you leave or reload the page, and `python -m core generate --run-id ID` resumes one.")
        return
    for rid in reversed(runs):
        s = generate_jobs.batch_state(rid)
        total = s["n"] or "?"
        text = (f"{rid}: {s['done']} done, {s['failed']} failed of {total} · {s['status']}"
                + (f" · ${s['cost_usd']:.4f}" if s.get("cost_usd") else ""))
        st.progress(s["fraction"], text=text)
        if s["status"] in generate_jobs.ACTIVE:
            st.button("Stop", key=f"gen_stop_{rid}", on_click=generate_jobs.cancel, args=(rid,),
                      icon=":material/stop:")
        elif s["status"] in ("failed", "cancelled"):
            with st.expander(f"{rid}: log"):
                st.code(s.get("log") or "(empty)", language=None)
    st.markdown("[Review the generated trials on the Synthetic reports page](/Synthetic_reports)")


active = any(generate_jobs.batch_state(r)["status"] in generate_jobs.ACTIVE for r in ss.get("gen_runs", []))
st.fragment(run_every=1.0 if active else None)(_progress)()
