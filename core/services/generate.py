"""What the Generate page calls: the model of its settings (and the key policy), the eligible drugs, one
retrieval with its examples, the interactive reasons and trial through the one pipeline (core.pipeline.run)
stored as a run of their own with full provenance, cost estimates, and batches as background jobs (the job
id is the run id, so starting the same run id again resumes it), listed from the store."""
from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

from core import jobs
from core.jobs.background import write_json_atomic
from core.pipeline.batch import UsageError, estimate_items, example_budget, new_run_id
from core.pipeline.run import (REASONING_MAX_TOKENS, Settings, StepError, compact_for, generate_step, reason_step,
                               step_seeds, trial_row)
from core.pipeline.replies import FormatError
from core.pipeline.retrieval import MIN_EACH, RULE_HELP, RULES, RetrievalError
from core.store import StoreLocked

ACTIVE = jobs.ACTIVE
OUTPUT_HELP = {
    "schema": "structured: the reply follows the trial schema (json_schema on servers, a grammar on the "
              "embedded model): the intended drug, no status fields, bounded lengths",
    "free": "the paper's free-form reply, parsed afterwards",
}
# Shown beside the embedded model's output, not only in the sidebar.
BASE_MODEL_LIMITS = (
    "**What the embedded model can and cannot do.** Gemma 3 270M is a small *base* model: it continues the "
    "prompt as a document, it is not instructed to follow it. In schema mode the grammar guarantees the shape "
    "(every field present, the intended drug named, no status fields, bounded lengths), but not the sense: "
    "expect repeated phrases, vague or contradictory reasons, and trials that read like a patchwork of their "
    "examples. It is for trying the pipeline offline; use an OpenAI-compatible model for sets you train on.")

__all__ = ["ModelChoice", "make_llm", "key_missing", "eligible", "retrieve_examples", "budget", "estimate",
           "interactive_reasons", "interactive_trial", "start_batch", "batch_state", "list_batches", "cancel",
           "UsageError", "FormatError", "StepError", "ACTIVE", "OUTPUT_HELP", "BASE_MODEL_LIMITS", "Settings",
           "StoreLocked", "RetrievalError", "MIN_EACH", "RULE_HELP", "RULES", "new_interactive_run",
           "record_failure", "have_stored_key", "REASONING_MAX_TOKENS"]


@dataclass(frozen=True)
class ModelChoice:
    """The sidebar's model settings. `typed_key` is used for this session's requests only."""
    backend: str = "local"
    base_url: str | None = None
    model: str | None = None
    typed_key: str | None = None


def key_missing(choice: ModelChoice) -> bool:
    """True when the openai backend has no key anywhere and no custom endpoint (which may need none)."""
    from core.llm import resolve_api_key

    return choice.backend == "openai" and not (choice.typed_key or resolve_api_key(None) or choice.base_url)


def have_stored_key() -> bool:
    from core.llm import resolve_api_key

    return resolve_api_key(None) is not None


def make_llm(choice: ModelChoice, *, db: str | os.PathLike | None = None, for_calls: bool = True) -> Any:
    """The LLM of the sidebar settings. Counting tokens needs no key; calls do (except on a custom base URL).
    With `db`, every call is logged to the store."""
    from core.llm import LLMError, get_llm, resolve_api_key
    from core.store.llmlog import db_logger

    on_call = db_logger(db) if (for_calls and db is not None) else None
    if choice.backend == "local":
        return get_llm("local", on_call=on_call)
    key = choice.typed_key or resolve_api_key(None)
    if not key and not choice.base_url:
        if for_calls:
            raise LLMError("no OpenAI API key (see the sidebar)", kind="auth", retryable=False)
        key = "not-needed-for-counting"
    return get_llm("openai", model=choice.model, base_url=choice.base_url, api_key=key, on_call=on_call)


def eligible(db: str | os.PathLike, rule: str, min_each: int) -> tuple[list[dict], list[dict]]:
    """(eligible drugs, per-rule summary) for the selection boxes."""
    from core.pipeline.retrieval import eligible_interventions, rule_summary
    from core.store import connect
    from core.ui import READ_WAIT_S

    with connect(db, read_only=True, wait_s=READ_WAIT_S) as con:
        return eligible_interventions(con, rule, min_each), rule_summary(con, min_each)


def budget(llm: Any, prompts: dict, max_tokens: int, k: int = 3) -> int:
    return example_budget(llm, prompts, max_tokens, k)


def retrieve_examples(db: str | os.PathLike, *, drugbank_id: str, label: int, seed: int, rule: str, min_each: int,
                      llm: Any, example_budget_tokens: int) -> dict[str, Any]:
    """One retrieval as the page shows it: the retrieval, the examples' records, the drug's synonyms and
    which examples are full ClinicalTrials.gov records and which TOP rows only."""
    from core.pipeline.retrieval import example_records, retrieve
    from core.store import connect
    from core.store.retrieval import drug_synonyms, full_record_ids
    from core.ui import READ_WAIT_S

    with connect(db, read_only=True, wait_s=READ_WAIT_S) as con:
        r = retrieve(con, intervention=drugbank_id, label=label, seed=seed, rule=rule, min_each=min_each,
                     count_tokens=llm.count_tokens, budget=example_budget_tokens, compact=compact_for(llm))
        ids = [e.nct_id for e in r.examples]
        records = example_records(con, ids)
        synonyms = drug_synonyms(con, r.drugbank_id)
        full = full_record_ids(con, ids)
    return {"retrieval": r, "records": records, "synonyms": synonyms,
            "kinds": {i: ("full record" if i in full else "TOP row") for i in ids}}


def estimate(llm: Any, retrieval: Any, *, n: int, max_tokens: int, prompts: dict) -> dict[str, Any]:
    return estimate_items(llm, retrieval, n=n, max_tokens=max_tokens, prompts=prompts)


def new_interactive_run(db: str | os.PathLike, *, choice: ModelChoice, llm: Any, prompts: dict,
                        settings: Settings, retrieval: Any, seed: int) -> str:
    """A run of its own for the page's reasons and trial (id 'page-...'), recorded with its parameters and
    prompts, so that its calls, reasons and trial carry full provenance and show in Synthetic reports."""
    from core.pipeline.batch import _public_url
    from core.prompts import prompt_hash
    from core.store import connect
    from core.store import synthetic as store

    run_id = "page-" + new_run_id()
    params = {"intervention": retrieval.intervention, "drugbank_id": retrieval.drugbank_id, "label": retrieval.label,
              "seed": seed, "backend": choice.backend, "base_url": _public_url(choice.base_url), "model": llm.model,
              "max_tokens": settings.max_tokens, "temperature": settings.temperature, "rule": retrieval.rule,
              "k": settings.k, "attempts": settings.attempts, "output": settings.output, "interactive": True,
              "example_nct_ids": [e.nct_id for e in retrieval.examples]}
    with connect(db) as con:
        store.start_run(con, run_id, 1, params, prompts, prompt_hash(prompts), os.getpid())
    return run_id


def _run(coro_fn: Any, llm: Any) -> Any:
    async def go() -> Any:
        try:
            return await coro_fn()
        finally:
            closer = getattr(llm, "aclose", None)
            if closer:
                await closer()
    return asyncio.run(go())


def interactive_reasons(llm: Any, retrieval: Any, *, prompts: dict, settings: Settings, seed: int,
                        run_id: str) -> Any:
    """The 5 reasons (core.pipeline.run.reason_step, with the item's reasoning seed)."""
    return _run(lambda: reason_step(llm, retrieval, settings, step_seeds(seed)["reasoning"], prompts, run_id), llm)


def interactive_trial(db: str | os.PathLike, llm: Any, retrieval: Any, reasoning: Any, *, prompts: dict,
                      settings: Settings, seed: int, run_id: str, synonyms: list[str],
                      example_records: dict[str, dict]) -> dict[str, Any]:
    """The trial (generation then validation, the pipeline's steps and seeds), stored with its reasons as
    item 0 of `run_id`; -> the stored row."""
    from core.pipeline.run import Item, validate_step
    from core.prompts import prompt_hash
    from core.store import connect
    from core.store import synthetic as store

    gen_seed = step_seeds(seed)["generation"]
    generation = _run(lambda: generate_step(llm, retrieval, reasoning.reasons, settings, gen_seed, prompts, run_id,
                                            synonyms), llm)
    examples = [example_records[e.nct_id] for e in retrieval.examples if e.nct_id in example_records]
    status, checks = validate_step(generation, retrieval, examples, synonyms)
    item = Item(retrieval, reasoning, generation, status, checks, seed, retrieval.intervention, synonyms, [gen_seed])
    row = trial_row(item, sid=f"{run_id}:0", run_id=run_id, index=0, prompt_hash=prompt_hash(prompts), llm=llm,
                    settings=settings, extra_meta={"interactive": True})
    with connect(db) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            store.save_synthetic(con, row)
            store.update_run(con, run_id, status="done", add_cost=row["meta"]["cost_usd"])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    return row


def record_failure(db: str | os.PathLike, run_id: str, stage: str, exc: BaseException, retrieval: Any,
                   prompts: dict, reasons: list[str] | None = None) -> None:
    """An interactive step that failed, recorded in its run like a batch item's failure."""
    from core.pipeline.run import failure_row
    from core.prompts import prompt_hash
    from core.store import connect
    from core.store import synthetic as store

    row = failure_row(StepError(stage, exc, retrieval, reasons), sid=f"{run_id}:0", run_id=run_id, index=0,
                      prompt_hash=prompt_hash(prompts), intended=retrieval.intervention, label=retrieval.label)
    with connect(db) as con:
        store.save_failure(con, row)
        store.update_run(con, run_id, status="done")


# ---- batches (background jobs) ----

def start_batch(db: str | os.PathLike, *, api_key: str | None = None, run_id: str | None = None,
                prompts: dict[str, dict[str, Any]] | None = None, **options: Any) -> str:
    """`python -m core generate ...` in the background; returns the run id. `options` are the
    command's flags (n, backend, model, concurrency, seed, output, ...). `prompts`: overrides of the paper's
    prompts ({stage: {part: text}}), handed over as a file. The API key reaches the child through its
    environment only."""
    rid = run_id or new_run_id()
    params = {k: v for k, v in options.items() if v not in (None, "", False)}
    params["run_id"] = rid
    if prompts:
        d = jobs.job_dir(rid)
        d.mkdir(parents=True, exist_ok=True)
        write_json_atomic(d / "prompts.json", prompts)
        params["prompts"] = str(d / "prompts.json")
    env = {"OPENAI_API_KEY": api_key} if api_key else None
    return jobs.start(jobs.JobSpec(kind="generate", db=db, params=params, job_id=rid, env=env))


def batch_state(run_id: str) -> dict[str, Any]:
    """A batch's live state: status (the job's: queued/running/done/failed/cancelled), n, done, failed,
    pending, cost_usd, fraction, and the log's tail when it failed."""
    j = jobs.status(run_id)
    p = j.progress if j else {}
    out: dict[str, Any] = {"run_id": run_id, "status": j.state if j else "unknown", "n": p.get("n"),
                           "done": p.get("done", 0), "failed": p.get("failed", 0), "pending": p.get("pending"),
                           "cost_usd": p.get("cost_usd", 0.0), "error": j.error if j else None}
    n = out["n"] or 0
    out["fraction"] = min(1.0, (out["done"] + out["failed"]) / n) if n else 0.0
    if out["status"] in ("failed", "cancelled"):
        out["log"] = jobs.log_tail(run_id, 4000)
    return out


def list_batches(db: str | os.PathLike) -> list[dict[str, Any]]:
    """Every generation run of this store, newest first, from the store (so they survive a reload and
    include runs started from the command line and the page's own interactive runs), with the live job
    state where the run is a background job."""
    from core.store import connect
    from core.store import synthetic as store
    from core.ui import READ_WAIT_S

    try:
        with connect(db, read_only=True, wait_s=READ_WAIT_S) as con:
            runs = store.list_runs(con)
    except StoreLocked:   # a writer held on: show the jobs now, the rest at the next refresh
        runs = []
    job_ids = {j.id for j in jobs.list_jobs(kind="generate", db=db)}
    out = []
    for r in runs:
        params = r.get("params") or {}
        row = {"run_id": r["run_id"], "n": r["n"], "done": r["done"], "failed": r["failed"],
               "cost_usd": r["cost_usd"] or 0.0, "status": r["status"], "interactive": bool(params.get("interactive")),
               "backend": params.get("backend"), "model": params.get("model"), "output": params.get("output"),
               "created_at": r["created_at"], "job": r["run_id"] in job_ids}
        if row["job"]:
            live = batch_state(r["run_id"])
            row.update({k: live[k] for k in ("status", "error") if live.get(k) is not None})
            row["done"] = max(row["done"], live["done"])
            row["failed"] = max(row["failed"], live["failed"])
            row["log"] = live.get("log")
        if row["interactive"] and row["status"] == "running":
            row["status"] = "reasons only"    # the page made reasons; no trial (yet)
        n = row["n"] or 0
        row["fraction"] = min(1.0, (row["done"] + row["failed"]) / n) if n else 0.0
        out.append(row)
    known = {r["run_id"] for r in out}
    for j in jobs.list_jobs(kind="generate", db=db):   # started, not yet in the store
        if j.id not in known:
            out.insert(0, {**batch_state(j.id), "interactive": False, "job": True, "created_at": None})
    return out


def cancel(run_id: str) -> bool:
    """Stop a batch. Its finished items stay; the same run id resumes it."""
    return jobs.cancel(run_id)
