"""The one pipeline: an item goes retrieval -> reasoning -> generation -> validation -> store.

The CLI batch (core.pipeline.batch), the Generate page (through core.services.generate) and the tests
all run items through these step functions, with the same settings and the same seeds:
- `Settings`: what a run fixes for its items (k, output mode, temperature, max tokens, attempts, budget).
- `step_seeds(seed)`: the seeds of one item's steps, derived once here.
- `retrieve_step`, `reason_step`, `generate_step`, `validate_step`: one named step each.
- `trial_row` / `failure_row`: what the store keeps of an item, with full provenance.
- `run_item`: all steps in order, with the quality gate inside it: a trial that fails a check a new seed
  can mend (RETRYABLE: a near copy of an example, the outcome stated in its title) is written again.
"""
from __future__ import annotations

import asyncio
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from core.pipeline.generation import Generation, agenerate
from core.pipeline.reasoning import Reasoning, areason
from core.pipeline.retrieval import Retrieval, RetrievalError
from core.pipeline.validation import validate

STEPS = ("retrieval", "reasoning", "generation", "validation", "store")
REASONING_MAX_TOKENS = 1024     # 5 reasons never need more; also what the generation prompt reserves for them
COMPACT_CONTEXT = 16_384        # at or below this context window, examples are serialized compactly


@dataclass
class Settings:
    """What a run fixes for every item."""
    k: int = 3
    output: str = "schema"            # 'schema' (structured replies) or 'free' (the paper's free text)
    temperature: float = 1.0
    max_tokens: int = 2048
    attempts: int = 3                 # replies per stage before the item fails
    budget: int | None = None         # tokens for the K examples
    compact: bool = False             # examples in the schema's shape (small contexts)
    quality_retries: int = 1          # a trial failing a RETRYABLE check is generated again with a new seed


def compact_for(llm: Any) -> bool:
    """Small contexts get compact examples (the schema's fields, long texts cut, no status fields)."""
    return int(getattr(llm, "context_window", 0) or 0) <= COMPACT_CONTEXT


# Invalid checks that another draw can mend (retry_reasons keeps the part of each detail that says why). An
# unreadable reply is asked again inside the generation step; a duplicate of the run's trials is left to the run.
RETRYABLE = ("near_copy", "label_leak")


def retry_reasons(checks: dict[str, Any]) -> dict[str, Any]:
    """{check: why} of the RETRYABLE checks that made this trial invalid (label_leak is invalid only when a
    title states the outcome): empty when the trial need not be written again."""
    why: dict[str, Any] = {}
    for name in RETRYABLE:
        check = checks.get(name) or {}
        if check.get("ok", True) or check.get("severity") != "invalid":
            continue
        detail = check.get("detail")
        if name == "near_copy" and isinstance(detail, dict):
            worst = max(detail.get("examples") or [{}], key=lambda e: (e.get("ngram_overlap") or 0,
                                                                       e.get("longest_run") or 0))
            why[name] = {k: worst.get(k) for k in ("nct_id", "ngram_overlap", "longest_run")}
        elif name == "label_leak" and isinstance(detail, dict):
            why[name] = detail.get("title")
        else:
            why[name] = detail
    return why


GENERATION_SEED_OFFSET = 7919   # a prime: generation's seed stays apart from reasoning's (and from runs made before)


def step_seeds(seed: int) -> dict[str, int]:
    """The seeds of one item's steps (retrieval draws, reasoning, generation), from the item's seed: the one
    place they are derived (the batch and the page used to add the offset each on their own)."""
    return {"retrieval": seed, "reasoning": seed, "generation": seed + GENERATION_SEED_OFFSET}


def retry_seed(seed: int, attempt: int) -> int:
    """A new generation seed for the quality gate's retry number `attempt` (1, 2, ...)."""
    return random.Random(f"retry:{seed}:{attempt}").getrandbits(31)


class StepError(Exception):
    """A step failed: `stage` names it; the partial item (retrieval, reasons) comes along for the record."""

    def __init__(self, stage: str, cause: BaseException, retrieval: Retrieval | None = None,
                 reasons: list[str] | None = None, responses: list | None = None):
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.stage, self.cause, self.retrieval, self.reasons = stage, cause, retrieval, reasons
        self.responses = responses if responses is not None else list(getattr(cause, "responses", None) or [])


@dataclass
class Item:
    """One finished item: everything the store keeps of it."""
    retrieval: Retrieval
    reasoning: Reasoning
    generation: Generation
    status: str
    checks: dict[str, Any]
    seed: int
    intended: str
    synonyms: list[str] = field(default_factory=list)
    generation_seeds: list[int] = field(default_factory=list)

    @property
    def responses(self) -> list:
        return self.reasoning.responses + self.generation.responses


# ---- the steps ----

async def retrieve_step(pool: Any, llm: Any, settings: Settings, seed: int, label: int | None) -> Retrieval:
    return await asyncio.to_thread(pool.retrieve, label=label, k=settings.k, seed=seed,
                                   count_tokens=llm.count_tokens, budget=settings.budget, compact=settings.compact)


async def reason_step(llm: Any, retrieval: Retrieval, settings: Settings, seed: int, prompts: dict,
                      run_id: str | None) -> Reasoning:
    return await areason(llm, retrieval, prompts=prompts, temperature=settings.temperature,
                         max_tokens=min(settings.max_tokens, REASONING_MAX_TOKENS), seed=seed,
                         attempts=settings.attempts, run_id=run_id, output=settings.output)


async def generate_step(llm: Any, retrieval: Retrieval, reasons: list[str], settings: Settings, seed: int,
                        prompts: dict, run_id: str | None, synonyms: list[str]) -> Generation:
    return await agenerate(llm, retrieval, reasons, prompts=prompts, temperature=settings.temperature,
                           max_tokens=settings.max_tokens, seed=seed, attempts=settings.attempts, run_id=run_id,
                           synonyms=synonyms, output=settings.output)


def validate_step(generation: Generation, retrieval: Retrieval, examples: list[dict], synonyms: list[str],
                  seen: list[tuple] | None = None) -> tuple[str, dict[str, Any]]:
    """Validation of the generated trial against its examples and the trials of the run so far (`seen`:
    their core.pipeline.validation.fingerprint)."""
    return validate(generation.record, intended_intervention=retrieval.intervention, synonyms=synonyms,
                    examples=examples, run_trials=seen, output=generation.output)


async def run_item(llm: Any, pool: Any, settings: Settings, *, seed: int, label: int | None, prompts: dict,
                   run_id: str | None, seen: list[tuple] | None = None,
                   on_step: Callable[[str], None] | None = None) -> Item:
    """One item through every step but the store; StepError names the step that failed."""
    stage = "retrieval"
    retrieval: Retrieval | None = None
    reasoning: Reasoning | None = None
    seeds = step_seeds(seed)
    try:
        if on_step:
            on_step(stage)
        retrieval = await retrieve_step(pool, llm, settings, seeds["retrieval"], label)
        synonyms = pool.synonyms.get(retrieval.drugbank_id, [])
        examples = [pool.records[e.nct_id] for e in retrieval.examples if e.nct_id in pool.records]
        stage = "reasoning"
        if on_step:
            on_step(stage)
        reasoning = await reason_step(llm, retrieval, settings, seeds["reasoning"], prompts, run_id)
        stage = "generation"
        used = [seeds["generation"]]
        retries: list[dict[str, Any]] = []
        earlier: list = []
        while True:
            if on_step:
                on_step(stage)
            generation = await generate_step(llm, retrieval, reasoning.reasons, settings, used[-1], prompts,
                                             run_id, synonyms)
            generation.responses = earlier + generation.responses
            stage = "validation"
            status, checks = await asyncio.to_thread(validate_step, generation, retrieval, examples, synonyms, seen)
            why = retry_reasons(checks)
            if not why or len(used) > settings.quality_retries:
                break
            # the quality gate: a trial another draw can mend is written again with a new seed
            earlier = generation.responses
            used.append(retry_seed(seed, len(used)))
            retries.append({"seed": used[-1], "replaces": used[-2], "because": why})
            stage = "generation"
        # which seeds wrote the trial and why each retry happened; `unresolved`: what the last draw still fails
        checks["quality_retries"] = {"ok": True, "severity": "ok",
                                     "detail": {"seeds": used, "retries": retries, "unresolved": why}}
        return Item(retrieval, reasoning, generation, status, checks, seed, retrieval.intervention, synonyms, used)
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise
    except Exception as exc:  # noqa: BLE001 - named by step, recorded by the caller
        raise StepError(stage, exc, retrieval, reasoning.reasons if reasoning else None,
                        (reasoning.responses if reasoning else []) + list(getattr(exc, "responses", None) or [])
                        ) from exc


# ---- what the store keeps ----

def trial_row(item: Item, *, sid: str, run_id: str, index: int, prompt_hash: str, llm: Any,
              settings: Settings, source: str | None = None, extra_meta: dict | None = None) -> dict[str, Any]:
    """The synthetic_trials row of a finished item, with its provenance in `meta`."""
    from core.record import OUTCOME_FIELDS

    r, g = item.retrieval, item.generation
    responses = item.responses
    # The label is the intended one, beside the trial: a free reply's status fields are reported by
    # validation ('status_fields') and not kept in the record.
    record = {k: (None if k in OUTCOME_FIELDS else v) for k, v in g.record.items()}
    cost = sum((x.cost_usd or 0.0) for x in responses)
    return {
        "id": sid, "run_id": run_id, "source": source or f"run:{run_id}", "item_index": index,
        "intended_intervention": item.intended, "intended_label": r.label,
        "generated_intervention": g.generated_intervention, "intervention_match": g.intervention_match,
        "record": dict(record, nct_id=sid), "raw_text": g.raw_text, "reasons": item.reasoning.reasons,
        "example_nct_ids": [e.nct_id for e in r.examples], "validation": item.checks,
        "validation_status": item.status, "drugbank_id": r.drugbank_id, "prompt_hash": prompt_hash,
        "parse_format": g.parse_format, "backend": llm.backend, "model": llm.model,
        "meta": {
            "seed": item.seed, "rule": r.rule, "output": settings.output,
            "output_mode": {"reasoning": item.reasoning.output_mode, "generation": g.output_mode},
            "output_refusals": list(getattr(llm, "output_refusals", []) or []),
            "examples": [{"nct_id": e.nct_id, "tokens": e.tokens, "original_tokens": e.original_tokens,
                          "truncated": e.truncated, "dropped": e.dropped} for e in r.examples],
            "example_text": [e.text for e in r.examples], "compact_examples": r.compact,
            "example_budget": settings.budget, "truncated": r.truncated,
            "reasoning_attempts": item.reasoning.attempts, "generation_attempts": g.attempts,
            "generation_seeds": item.generation_seeds, "reasoning_text": item.reasoning.raw_text,
            "prompt_tokens": sum(x.prompt_tokens or 0 for x in responses),
            "completion_tokens": sum(x.completion_tokens or 0 for x in responses),
            "latency_s": round(sum(x.latency_s or 0.0 for x in responses), 3),
            "cost_usd": cost, "temperature": settings.temperature, **(extra_meta or {}),
        },
    }


def failure_row(err: StepError, *, sid: str, run_id: str, index: int, prompt_hash: str,
                intended: str | None, label: int | None) -> dict[str, Any]:
    """The generation_failures row of an item that failed at `err.stage`."""
    from core.pipeline.replies import FormatError

    exc = err.cause
    retrieval = err.retrieval
    return {
        "id": sid, "run_id": run_id, "item_index": index,
        "intended_intervention": retrieval.intervention if retrieval else intended,
        "intended_label": retrieval.label if retrieval else label, "stage": err.stage,
        "reason": f"{type(exc).__name__}: {exc}"[:2000], "raw_text": getattr(exc, "raw_text", None),
        "attempts": len(getattr(exc, "responses", None) or []) or None, "prompt_hash": prompt_hash,
        "example_nct_ids": [e.nct_id for e in retrieval.examples] if retrieval else None, "reasons": err.reasons,
        "error_kind": "format" if isinstance(exc, FormatError) else getattr(exc, "kind", None)
        or ("retrieval" if isinstance(exc, RetrievalError) else type(exc).__name__),
    }


def settings_dict(settings: Settings) -> dict[str, Any]:
    return asdict(settings)
