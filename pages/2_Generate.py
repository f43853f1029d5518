"""Generate: pick an intervention and label, see the 3 retrieved examples (full records or TOP rows), generate
the 5 reasons and a trial (rendered, raw, validated; stored as a run of its own), and start batches in the
background with a cost estimate. Renders only: every call goes through core.services.generate."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core import ui
from core.llm import DEFAULT_OPENAI_MODEL, LLMError
from core.prompts import PARTS, PromptError, load_prompts, prompt_hash
from core.review import badges_markdown, record_markdown
from core.services import generate as svc

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
        have_key = svc.have_stored_key()
        typed_key = st.text_input(
            "API key", type="password", key="gen_api_key",
            placeholder="found in OPENAI_API_KEY / secrets.toml" if have_key else "sk-…",
            help="Used for this session's requests only: never stored, logged or exported.").strip() or None
    else:
        st.caption("Gemma 3 270M (Q4_K_M GGUF, llama.cpp), a base model: prompts are rendered as a document "
                   "for it to continue. Small and fast, not a good writer; use an OpenAI-compatible model for "
                   "real sets.")
    choice = svc.ModelChoice(backend, base_url, model, typed_key)
    if svc.key_missing(choice):
        st.warning("No API key: set OPENAI_API_KEY, add it to .streamlit/secrets.toml, or type it above.")
    output = st.radio("Replies", ["schema", "free"], key="gen_output", horizontal=True,
                      format_func={"schema": "Structured (schema)", "free": "Free (the paper's)"}.get,
                      help=" · ".join(f"{k}: {v}" for k, v in svc.OUTPUT_HELP.items()))
    max_tokens = st.number_input("Max tokens per reply", 64, 16_384, 1024, step=64, key="gen_max_tokens")
    temperature = st.slider("Temperature", 0.0, 2.0, 1.0, 0.1, key="gen_temperature")
    st.subheader("Retrieval")
    rule = st.selectbox("Rule", svc.RULES, key="gen_rule", format_func=lambda r: f"{r}: {svc.RULE_HELP[r]}")
    min_each = st.number_input("Successful and failed trials an intervention needs", 1, 50, svc.MIN_EACH,
                               key="gen_min_each")


@st.cache_data(ttl=60, show_spinner=False)
def eligible(db_file: str, version: tuple, rule: str, min_each: int) -> tuple[list[dict], list[dict]]:
    return svc.eligible(db_file, rule, min_each)


try:
    drugs, summary = eligible(str(db), version, rule, int(min_each))
except svc.StoreLocked as exc:
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
               + " — stored with every output. In schema mode the prompts stay as they are; the schema is sent "
                 "beside them.")

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
    counter = svc.make_llm(choice, for_calls=False)
    budget = svc.budget(counter, prompts, int(max_tokens), 3)
except (svc.UsageError, LLMError) as exc:
    st.error(str(exc))
    st.stop()

settings = svc.Settings(output=output, temperature=float(temperature), max_tokens=int(max_tokens), budget=budget)
retrieval_key = (str(db), drug["drugbank_id"], label, ss.gen_seed, rule, int(min_each), backend, model,
                 base_url, budget)
if ss.get("gen_retrieval_key") != retrieval_key:
    try:
        got = svc.retrieve_examples(db, drugbank_id=drug["drugbank_id"], label=label, seed=ss.gen_seed, rule=rule,
                                    min_each=int(min_each), llm=counter, example_budget_tokens=budget)
    except (svc.RetrievalError, svc.StoreLocked) as exc:
        st.error(str(exc))
        st.stop()
    ss.gen_retrieval_key = retrieval_key
    ss.gen_got = got
    for k in ("gen_reasoning", "gen_generation", "gen_run_id"):
        ss.pop(k, None)
got = ss.gen_got
retrieval = got["retrieval"]

st.subheader(f"Retrieved examples: {retrieval.intervention}, {ui.label_text(retrieval.label)}")
kinds = list(got["kinds"].values())
st.caption(f"Seed {retrieval.seed} · {retrieval.tokens:,} tokens in all, budget {budget:,} "
           f"({counter.model} tokenizer, {counter.context_window:,}-token context)"
           + (" · some examples were shortened to fit" if retrieval.truncated else "")
           + f" · {kinds.count('full record')} full record(s), {kinds.count('TOP row')} TOP row(s)"
           + (" · compact examples (the schema's fields, long texts cut with [...], no status fields)"
              if retrieval.compact else ""))
cols = st.columns(len(retrieval.examples))
for i, (col, ex) in enumerate(zip(cols, retrieval.examples), 1):
    with col.container(border=True, key=f"gen_example_{i}"):
        rec = got["records"].get(ex.nct_id) or {}
        st.markdown(f"**Example {i}: [{ex.nct_id}]({ui.trial_url(ex.nct_id)})** · {got['kinds'][ex.nct_id]}")
        if rec.get("brief_title"):
            st.caption(rec["brief_title"])
        tokens = f"{ex.tokens:,} tokens" + (f" (of {ex.original_tokens:,}: shortened)" if ex.truncated else "")
        st.markdown(tokens)
        if ex.truncated:
            st.caption("Dropped or shortened: " + ", ".join(ex.dropped[:12]) + ("…" if len(ex.dropped) > 12 else ""))
        with st.expander("What the model sees"):
            st.code(ex.text[:30_000] + ("\n…" if len(ex.text) > 30_000 else ""), language="json", wrap_lines=True)


def base_model_note() -> None:
    if backend == "local":
        st.info(svc.BASE_MODEL_LIMITS, icon=":material/info:")


def show_failure(exc: BaseException, unreadable: str) -> None:
    if isinstance(exc, svc.FormatError):
        st.error(f"{unreadable}: {exc}")
        st.code(getattr(exc, "raw_text", "") or "", language=None, wrap_lines=True)
    elif isinstance(exc, LLMError):
        st.error(f"The model call failed ({exc.kind}, after {exc.attempts} attempt(s)): {exc}")
    else:
        st.error(f"{type(exc).__name__}: {exc}")


# ---------------------------------------------------------------- 2. reasoning
st.header("2 · Reasoning")
if st.button("Generate reasons", type="primary", icon=":material/psychology:", key="gen_reasons_btn"):
    try:
        llm = svc.make_llm(choice, db=db)
        ss.gen_run_id = svc.new_interactive_run(db, choice=choice, llm=llm, prompts=prompts, settings=settings,
                                                retrieval=retrieval, seed=ss.gen_seed)
        with st.spinner(f"Asking {llm.model} for 5 reasons…"):
            r = svc.interactive_reasons(llm, retrieval, prompts=prompts, settings=settings, seed=ss.gen_seed,
                                        run_id=ss.gen_run_id)
        ss.gen_reasoning = {"obj": r, "model": llm.model,
                            "tokens": sum(x.prompt_tokens + x.completion_tokens for x in r.responses),
                            "cost": sum(x.cost_usd or 0 for x in r.responses),
                            "latency": sum(x.latency_s for x in r.responses)}
        ss.pop("gen_generation", None)
    except (svc.FormatError, LLMError) as exc:
        if ss.get("gen_run_id"):
            svc.record_failure(db, ss.gen_run_id, "reasoning", exc, retrieval, prompts)
        show_failure(exc, "The model's replies had no 5 usable reasons")
reasoning = ss.get("gen_reasoning")
if reasoning:
    r = reasoning["obj"]
    st.markdown("\n".join(f"{i}. {x}" for i, x in enumerate(r.reasons, 1)))
    st.caption(f"{reasoning['model']} · {r.attempts} attempt(s) · {reasoning['tokens']:,} tokens · "
               f"${reasoning['cost']:.5f} · {reasoning['latency']:.1f} s · asked: {r.output} · "
               f"reply: {r.output_mode} · run {ss.get('gen_run_id')}")
    base_model_note()
    with st.expander("Raw reply"):
        st.code(r.raw_text, language=None, wrap_lines=True)
else:
    st.caption("No reasons yet for these examples.")

# ---------------------------------------------------------------- 3. generation
st.header("3 · Generation")
if st.button("Generate the trial", type="primary", icon=":material/description:", disabled=not reasoning,
             key="gen_trial_btn"):
    try:
        llm = svc.make_llm(choice, db=db)
        with st.spinner(f"{llm.model} is writing a {ui.label_text(retrieval.label)} trial of {retrieval.intervention}…"):
            row = svc.interactive_trial(db, llm, retrieval, reasoning["obj"], prompts=prompts, settings=settings,
                                        seed=ss.gen_seed, run_id=ss.gen_run_id, synonyms=got["synonyms"],
                                        example_records=got["records"])
        ss.gen_generation = row
        ui.clear_cache()
    except (svc.FormatError, LLMError) as exc:
        svc.record_failure(db, ss.gen_run_id, "generation", exc, retrieval, prompts, reasoning["obj"].reasons)
        show_failure(exc, "The model's replies could not be read as a trial")
gen = ss.get("gen_generation")
if gen:
    meta = gen["meta"]
    st.markdown(badges_markdown(gen["validation_status"], gen["validation"]))
    st.caption(f"Intended: {gen['intended_intervention']} · generated: {gen['generated_intervention'] or '(none)'} · "
               f"{'match' if gen['intervention_match'] else 'no match'} · read as {gen['parse_format']} · "
               f"{meta['generation_attempts']} attempt(s) · reply: {meta['output_mode']['generation']} · "
               f"${meta['cost_usd']:.5f}")
    st.success(f"Stored as {gen['id']} (run {gen['run_id']}, with its examples, prompts, model, tokens and cost): "
               "it is listed on the [Synthetic reports page](/Synthetic_reports).", icon=":material/save:")
    base_model_note()
    t1, t2, t3, t4 = st.tabs(["Rendered", "Raw reply", "Record", "Validation"])
    with t1:
        st.markdown(record_markdown(gen["record"]))
    with t2:
        st.code(gen["raw_text"], language=None, wrap_lines=True)
    with t3:
        st.json(gen["record"], expanded=False)
    with t4:
        st.json(gen["validation"])
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
    valid_only = st.checkbox("Only usable trials (draw new items until N are not invalid, at most 3N)",
                             key="gen_batch_valid_only")
    est = svc.estimate(counter, retrieval, n=int(n), max_tokens=int(max_tokens), prompts=prompts)
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
        if svc.key_missing(choice):
            st.error("No API key for OpenAI (see the sidebar).")
        else:
            rid = svc.start_batch(
                db, api_key=typed_key, n=int(n), backend=backend, base_url=base_url, model=model,
                concurrency=int(concurrency), seed=int(run_seed), max_tokens=int(max_tokens),
                temperature=float(temperature), rule=rule, prompts=overrides or None, output=output,
                valid_only=bool(valid_only),
                intervention=retrieval.drugbank_id if scope in ("this", "both") else None,
                label=retrieval.label if scope == "this" else None)
            st.toast(f"Batch {rid} started")


def _progress() -> None:
    runs = svc.list_batches(db)
    if not runs:
        st.caption("No generation run in this store yet. Batches run as their own processes: they keep going "
                   "when you leave or reload the page, and `python -m core generate --run-id ID` resumes one.")
        return
    for s in runs[:20]:
        rid = s["run_id"]
        total = s["n"] or "?"
        kind = "interactive" if s.get("interactive") else "batch"
        text = (f"{rid}: {s['done']} done, {s['failed']} failed of {total} · {s['status']} · {kind}"
                + (f" · ${s['cost_usd']:.4f}" if s.get("cost_usd") else ""))
        st.progress(s["fraction"], text=text)
        if s["status"] in svc.ACTIVE and s.get("job"):
            st.button("Stop", key=f"gen_stop_{rid}", on_click=svc.cancel, args=(rid,), icon=":material/stop:")
        elif s["status"] in ("failed", "cancelled") and s.get("log"):
            with st.expander(f"{rid}: log"):
                st.code(s.get("log") or "(empty)", language=None)
    st.markdown("[Review the generated trials on the Synthetic reports page](/Synthetic_reports)")


st.subheader("Runs in this store")
active = any(s["status"] in svc.ACTIVE and s.get("job") for s in svc.list_batches(db))
st.fragment(run_every=1.0 if active else None)(_progress)()
