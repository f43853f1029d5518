"""`python -m core generate`: a batch of synthetic trials (retrieval -> reasoning -> generation).

- C requests in flight (asyncio); transient HTTP failures are retried inside llm.acomplete; a reply
  that does not parse is retried (bounded), then the item is recorded in generation_failures with its
  stage and reason. Failures never stop the batch.
- Item i of run R is `R:i`, with a per-item seed derived from (run seed, i): re-running the same
  --run-id after a crash or kill -9 skips finished items and redoes the rest, so the run ends with
  one row per item (a trial, or a failure when it failed again).
- Each finished item is committed at once through a short-lived connection, so the app can read
  the store meanwhile. Progress: tqdm, the generation_runs row, and RUNS_DIR/<run_id>/progress.json.
- The API key is passed to the client only: never stored in params, logs or progress files.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from core import config
from core.jobs.background import read_json, write_json_atomic
from core.config import runs_dir
from core.prompts import PromptError, load_prompts, prompt_hash
from core.pipeline.reasoning import OUTPUTS
from core.pipeline.retrieval import MIN_EACH, PAPER_EXAMPLE_BUDGET, RULES, Retrieval, RetrievalError, RetrievalPool
from core.pipeline.run import REASONING_MAX_TOKENS, Settings, compact_for
from core.pipeline.validation import fingerprint
from core.store import connect
from core.store import synthetic as store

DEFAULT_MAX_TOKENS = 2048
BUDGET_MARGIN = 64              # chat framing tokens and rounding
GROUP_WAIT_S = 0.05             # how long the store writer gathers finished items into one connection


class UsageError(ValueError):
    """Bad arguments (exit 2)."""


def progress_path(run_id: str) -> Path:
    return runs_dir() / run_id / "progress.json"


def read_progress(run_id: str) -> dict[str, Any] | None:
    return read_json(progress_path(run_id)) or None


def _write_progress(run_id: str, data: dict[str, Any]) -> None:
    path = progress_path(run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, data)


def item_seed(run_seed: int, index: int) -> int:
    """Deterministic per-item seed (same run seed and index -> same retrieval and LLM seeds)."""
    return random.Random(f"{run_seed}:{index}").getrandbits(31)


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def example_budget(llm: Any, prompts: dict, max_tokens: int, k: int, cap: int | None = None) -> int:
    """Tokens left for the K examples: the context window minus the generation prompt's own text,
    the reasons it will carry and the reply (exact counts with the model's tokenizer)."""
    from core.models import FewShotExample

    dummy = Retrieval("DB00000", "X" * 12, 1, "drugbank", 0, [FewShotExample("", 1, "", 0, 0) for _ in range(k)], None)
    from core.pipeline.generation import build_prompt as gen_prompt

    messages, document, _ = gen_prompt(dummy, [""] * 5, prompts)
    text = "\n".join(m["content"] for m in messages) if llm.chat else document
    overhead = llm.count_tokens(text)
    reasons = min(max_tokens, REASONING_MAX_TOKENS)
    budget = llm.context_window - overhead - max_tokens - reasons - BUDGET_MARGIN
    budget = min(budget, PAPER_EXAMPLE_BUDGET, cap or PAPER_EXAMPLE_BUDGET)
    if budget < 64 * k:
        raise UsageError(f"--max-tokens {max_tokens} leaves only {budget} tokens for {k} examples in the "
                         f"{llm.context_window}-token context of {llm.model}; lower --max-tokens")
    return budget


def estimate_items(llm: Any, retrieval: Retrieval, *, n: int, max_tokens: int, prompts: dict | None = None,
                   reasons_tokens: int = 350) -> dict[str, Any]:
    """Cost estimate of n items like this one: exact prompt tokens (with `llm`'s own tokenizer and chat
    overhead) of this retrieval's reasoning and generation prompts, with reasons of a typical length;
    replies at `max_tokens` at most (reasoning capped at REASONING_MAX_TOKENS)."""
    from core.pipeline.generation import build_prompt as generation_prompt
    from core.llm import LLMRequest, estimate_cost
    from core.pipeline.reasoning import build_prompt as reasoning_prompt

    r_messages, r_document = reasoning_prompt(retrieval, prompts)
    typical = ["x " * (reasons_tokens // 5)] * 5
    g_messages, g_document, _ = generation_prompt(retrieval, typical, prompts)

    def prompt_tokens(messages: list[dict], document: str) -> int:
        req = LLMRequest(messages=messages) if llm.chat else LLMRequest(document=document)
        return llm.count_prompt_tokens(req)

    p_in = prompt_tokens(r_messages, r_document) + prompt_tokens(g_messages, g_document)
    typical_out = reasons_tokens + min(max_tokens, 1200)
    max_out = min(max_tokens, REASONING_MAX_TOKENS) + max_tokens
    per_item = estimate_cost(llm.model, p_in, typical_out)
    per_item_max = estimate_cost(llm.model, p_in, max_out)
    return {
        "prompt_tokens_per_item": p_in, "completion_tokens_per_item": typical_out,
        "max_completion_tokens_per_item": max_out,
        "cost_per_item": per_item, "cost_total": None if per_item is None else per_item * n,
        "cost_total_max": None if per_item_max is None else per_item_max * n,
    }


def estimate(db: str | Path | None, n: int, *, model: str = "gpt-4o-mini", intervention: str | None = None,
             label: int | None = None, max_tokens: int = DEFAULT_MAX_TOKENS, rule: str = "drugbank",
             min_each: int = MIN_EACH, k: int = 3, seed: int = 0, context_window: int | None = None,
             sample: int = 5) -> dict[str, Any]:
    """Cost estimate of a batch with no retrieval in hand: estimate_items on a few sample items (examples
    fitted as the batch would fit them, counted with `model`'s tokenizer), averaged, times n, replies at
    their maximum. cost_usd is None for unpriced models."""
    from core.llm import estimate_cost, get_llm

    # Counting only: no request is sent, so no key is needed.
    counter = get_llm("openai", model=model, api_key="not-needed-for-counting", n_ctx=context_window)
    prompts = load_prompts()
    budget = example_budget(counter, prompts, max_tokens, k)
    with connect(db) as con:
        pool = RetrievalPool.load(con, rule, min_each, intervention)
        draws = []
        for i in range(sample):
            try:
                draws.append(pool.select(label=label, k=k, seed=item_seed(seed, i))[2])
            except RetrievalError:
                continue
        pool.prefetch(con, [x for d in draws for x in d])
    per_item = []
    for i in range(sample):
        try:
            r = pool.retrieve(label=label, k=k, seed=item_seed(seed, i), count_tokens=counter.count_tokens,
                              budget=budget)
        except RetrievalError:
            continue
        per_item.append(estimate_items(counter, r, n=1, max_tokens=max_tokens, prompts=prompts))
    if not per_item:
        raise RetrievalError("no item could be drawn for this intervention/label")
    prompt_tokens = int(sum(e["prompt_tokens_per_item"] for e in per_item) / len(per_item) * n)
    completion_tokens = per_item[0]["max_completion_tokens_per_item"] * n
    return {"n": n, "model": model, "prompt_tokens": prompt_tokens, "completion_tokens_max": completion_tokens,
            "cost_usd": estimate_cost(model, prompt_tokens, completion_tokens), "example_budget": budget,
            "sampled_items": len(per_item)}


def _public_url(url: str | None) -> str | None:
    """The endpoint without any credentials in it (user:password@, ?api-key=...), for the store."""
    if not url:
        return url
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class Batch:
    """One run: state shared by its items."""

    def __init__(self, db: Path, run_id: str, n: int, params: dict[str, Any], prompts: dict, llm: Any,
                 log_buffer: list[dict], concurrency: int, show_progress: bool = True,
                 on_progress: Callable[[dict], None] | None = None):
        self.db, self.run_id, self.n, self.params = db, run_id, n, params
        self.prompts, self.phash, self.llm = prompts, prompt_hash(prompts), llm
        self.log_buffer = log_buffer
        self.concurrency = concurrency
        self.queue: asyncio.Queue | None = None
        self.done = 0
        self.failed = 0
        self.cost = 0.0
        self.show_progress = show_progress
        self.on_progress = on_progress
        self.started = time.time()
        self.pool: RetrievalPool | None = None
        self.budget = 0
        self.settings: Any = None                 # core.pipeline.run.Settings
        self.seen: list[tuple] = []               # fingerprints of the trials this run made (duplicates)
        self.statuses: dict[int, str] = {}        # item -> validation status of its stored trial
        self.valid_only = False
        self.limit = n                            # item indices run: N, or up to 3N with --valid-only

    def usable(self) -> int:
        """Stored trials that are not 'invalid'."""
        return sum(1 for s in self.statuses.values() if s != "invalid")

    # -- store writes: group commit. Items hand their write to one writer; whatever is ready while
    # it works goes through the next connection, each item in its own transaction, committed at once.
    # Checkpointing on close is left to the end of the run (the WAL is durable; a reader replays it).
    def _write_group(self, writes: list[tuple[Callable[[Any], Any], float]]) -> list[BaseException | None]:
        """Each (write, cost) in its own transaction; then the run's counts and cost, once for the group."""
        results: list[BaseException | None] = []
        with connect(self.db) as con:
            con.execute("PRAGMA disable_checkpoint_on_shutdown")
            for fn, _ in writes:
                con.execute("BEGIN TRANSACTION")
                try:
                    fn(con)
                    self._flush_log(con)
                    con.execute("COMMIT")
                    results.append(None)
                except Exception as exc:  # noqa: BLE001 - handed back to the item that wrote
                    con.execute("ROLLBACK")
                    results.append(exc)
            cost = sum(c for (_, c), r in zip(writes, results) if r is None)
            store.update_run(con, self.run_id, add_cost=cost)   # counts are recounted from the tables
        return results

    async def _writer(self) -> None:
        while True:
            first = await self.queue.get()
            if first is None:
                return
            group = [first]
            stop = False
            # Items finish in bursts: a moment's wait lets one connection (~20 ms to open) take the burst.
            await asyncio.sleep(GROUP_WAIT_S)
            while not self.queue.empty():
                nxt = self.queue.get_nowait()
                if nxt is None:
                    stop = True
                    break
                group.append(nxt)
            try:
                results = await asyncio.to_thread(self._write_group, [w for w, _ in group])
            except Exception as exc:  # noqa: BLE001 - e.g. the store stayed locked
                results = [exc] * len(group)
            for (_, fut), res in zip(group, results):
                if res is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(res)
            if stop:
                return

    async def write(self, fn: Callable[[Any], Any], cost: float = 0.0) -> None:
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put(((fn, cost), fut))
        await fut

    def _flush_log(self, con: Any) -> None:
        if not self.log_buffer:
            return
        # the event loop keeps appending while this runs in the writer thread: take a prefix
        count = len(self.log_buffer)
        entries = self.log_buffer[:count]
        del self.log_buffer[:count]
        from core.store.llmlog import log_calls

        log_calls(con, entries)

    # -- one item: the one pipeline (core.pipeline.run), then the store
    async def item(self, index: int, slots: asyncio.Semaphore) -> str:
        """One item: its LLM work holds one of the C slots; its store write does not (so the next
        item's requests start while this one is being committed). -> its validation status or 'failed'."""
        from core.pipeline.run import StepError, failure_row, run_item, trial_row

        await slots.acquire()
        held = True
        seed = item_seed(self.params["seed"], index)
        sid = f"{self.run_id}:{index}"
        try:
            try:
                item = await run_item(self.llm, self.pool, self.settings, seed=seed, label=self.params.get("label"),
                                      prompts=self.prompts, run_id=self.run_id, seen=self.seen)
            except StepError as err:
                slots.release()
                held = False
                intended = self.pool.drug["name"] if self.pool.drug else None
                row = failure_row(err, sid=sid, run_id=self.run_id, index=index, prompt_hash=self.phash,
                                  intended=intended, label=self.params.get("label"))
                cost = sum((r.cost_usd or 0.0) for r in err.responses)

                await self.write(lambda con: store.save_failure(con, row), cost)
                self.failed += 1
                return "failed"
            self.seen.append(fingerprint(item.generation.record, sid))
            row = trial_row(item, sid=sid, run_id=self.run_id, index=index, prompt_hash=self.phash, llm=self.llm,
                            settings=self.settings)
            cost = row["meta"]["cost_usd"]

            slots.release()
            held = False
            await self.write(lambda con: store.save_synthetic(con, row), cost)
            self.cost += cost
            self.done += 1
            self.statuses[index] = item.status
            return item.status
        finally:
            if held:  # cancelled
                slots.release()

    # -- the whole run
    def progress(self, status: str, pending: int) -> dict[str, Any]:
        data = {"run_id": self.run_id, "n": self.n, "done": self.done, "failed": self.failed,
                "pending": pending, "status": status, "cost_usd": round(self.cost, 6), "pid": os.getpid(),
                "concurrency": self.concurrency, "started_at": self.started, "updated_at": time.time()}
        _write_progress(self.run_id, data)
        if self.on_progress:
            self.on_progress(data)
        return data

    async def run(self, todo: list[int]) -> None:
        from tqdm import tqdm

        sem = asyncio.Semaphore(self.concurrency)
        bar = tqdm(total=self.n, initial=self.n - len(todo), desc=f"generate {self.run_id}", unit="trial",
                   disable=not self.show_progress, file=sys.stderr)
        pending = len(todo)
        self.progress("running", pending)

        async def one(i: int) -> None:
            nonlocal pending
            try:
                await self.item(i, sem)
            except Exception as exc:  # noqa: BLE001 - not even its failure could be stored (store locked?)
                print(f"item {i}: not recorded ({type(exc).__name__}: {exc}); re-run with --run-id "
                      f"{self.run_id} to redo it", file=sys.stderr)
            pending -= 1
            bar.update(1)
            bar.set_postfix(failed=self.failed)
            self.progress("running", pending)

        self.queue = asyncio.Queue()
        writer = asyncio.create_task(self._writer())
        try:
            await asyncio.gather(*(one(i) for i in todo))
            # --valid-only: new items (new seeds, so new examples) until N trials are usable, at most 3N items
            nxt = max([self.n - 1, *self.statuses, *todo]) + 1
            while self.valid_only and self.usable() < self.n and nxt < self.limit:
                wave = list(range(nxt, min(self.limit, nxt + self.n - self.usable())))
                nxt = wave[-1] + 1
                bar.total += len(wave)
                pending += len(wave)
                await asyncio.gather(*(one(i) for i in wave))
        finally:
            await self.queue.put(None)
            await writer
            bar.close()
            closer = getattr(self.llm, "aclose", None)
            if closer:
                try:
                    await closer()
                except Exception:  # noqa: BLE001
                    pass


def run_batch(db: str | Path | None, n: int, *, intervention: str | None = None, label: int | None = None,
              backend: str = "local", base_url: str | None = None, api_key: str | None = None,
              model: str | None = None, concurrency: int = 1, seed: int | None = None,
              max_tokens: int = DEFAULT_MAX_TOKENS, run_id: str | None = None, temperature: float = 1.0,
              rule: str = "drugbank", min_each: int = MIN_EACH, k: int = 3, attempts: int = 3,
              example_budget_cap: int | None = None, prompt_overrides: dict | None = None,
              n_ctx: int | None = None, max_retries: int = 5, timeout_s: float = 120.0,
              show_progress: bool = True, on_progress: Callable[[dict], None] | None = None,
              batch_api: bool = False, poll_s: float = 30.0, output: str = "schema",
              valid_only: bool = False) -> dict[str, Any]:
    """Generate (or complete) run `run_id` up to `n` items. Returns the run's final counts.
    With `batch_api`, through OpenAI's Batch API (resumable by the same run id).
    `output`: 'schema' (structured replies) or 'free' (the paper's free text, parsed afterwards).
    `valid_only`: draw new items until `n` stored trials are not 'invalid', at most 3n items."""
    from core.llm import get_llm

    db = config.db_path(db)
    if n < 1:
        raise UsageError("--n must be at least 1")
    if label is not None and label not in (0, 1):
        raise UsageError("--label must be 0 or 1")
    if concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    if rule not in RULES:
        raise UsageError(f"--rule must be one of {', '.join(RULES)}")
    if output not in OUTPUTS:
        raise UsageError(f"--output must be one of {', '.join(OUTPUTS)}")
    run_id = run_id or new_run_id()
    if ":" in run_id or "/" in run_id:
        raise UsageError("--run-id may not contain ':' or '/'")

    with connect(db) as con:
        existing = store.get_run(con, run_id)
        if existing:  # resume: the items must be the same items
            old = existing["params"] or {}
            for key, new in (("seed", seed), ("intervention", intervention), ("label", label), ("rule", rule),
                             ("min_each", min_each), ("k", k)):
                if key in ("seed", "intervention", "label") and new is None:
                    continue
                if old.get(key) != new:
                    raise UsageError(f"run {run_id} was started with {key}={old.get(key)!r}, not {new!r}: "
                                     "resume it with the same value or use another --run-id")
            seed = old["seed"]
            intervention, label = old.get("intervention"), old.get("label")
            prompts = existing["prompts"]
            if prompt_overrides and load_prompts(prompt_overrides) != prompts:
                raise UsageError(f"run {run_id} used other prompts (hash {existing['prompt_hash']}); use another --run-id")
        else:
            prompts = load_prompts(prompt_overrides)
        seed = seed if seed is not None else secrets.randbelow(2**31)
        pool = RetrievalPool.load(con, rule, min_each, intervention)
    drug = pool.drug
    if not drug and not pool.eligible:
        raise RetrievalError(f"no intervention has >= {min_each} successful and >= {min_each} failed labelled "
                             f"trials under rule {rule!r} in {db} (load data with `python -m core sample-data`)")
    if drug:
        labels = [label] if label is not None else [0, 1]
        short = [lb for lb in labels if pool.count(drug["drugbank_id"], lb) < k]
        if short == labels:
            raise RetrievalError(f"{drug['name']} ({drug['drugbank_id']}) has fewer than {k} trials labelled "
                                 f"{' or '.join(map(str, short))} under rule {rule!r}")

    log_buffer: list[dict] = []
    if batch_api:  # the same pipeline; its requests answered through /v1/batches (core.llm.batch_api)
        if backend != "openai":
            raise UsageError("--batch-api needs --backend openai")
        from core.llm.batch_api import create as batch_llm, print_event

        llm = batch_llm(model=model, base_url=base_url, api_key=api_key, n_ctx=n_ctx, on_call=log_buffer.append,
                        max_retries=max_retries, timeout_s=timeout_s, state_dir=runs_dir() / run_id / "batch-api",
                        run_id=run_id, poll_s=poll_s, on_batch=print_event)
        concurrency = n  # every item in flight, so that one stage of all of them is one batch
    else:
        llm = get_llm(backend, model=model, base_url=base_url, api_key=api_key, on_call=log_buffer.append,
                      n_ctx=n_ctx, max_retries=max_retries, timeout_s=timeout_s)
    params = {"intervention": intervention, "drugbank_id": drug["drugbank_id"] if drug else None, "label": label,
              "seed": seed, "backend": backend, "base_url": _public_url(base_url), "model": llm.model, "concurrency": concurrency,
              "max_tokens": max_tokens, "temperature": temperature, "rule": rule, "min_each": min_each, "k": k,
              "attempts": attempts, "example_budget_cap": example_budget_cap, "batch_api": batch_api,
              "output": output, "valid_only": valid_only}
    batch = Batch(db, run_id, n, params, prompts, llm, log_buffer, concurrency, show_progress, on_progress)
    batch.pool = pool
    batch.budget = example_budget(llm, prompts, max_tokens, k, example_budget_cap)
    batch.settings = Settings(k=k, output=output, temperature=temperature, max_tokens=max_tokens, attempts=attempts,
                              budget=batch.budget, compact=compact_for(llm))
    batch.valid_only, batch.limit = valid_only, (3 * n if valid_only else n)

    with connect(db) as con:
        store.start_run(con, run_id, n, params, prompts, batch.phash, os.getpid())
        done = store.done_items(con, run_id)
        todo = [i for i in range(n) if i not in done]
        for t in store.list_synthetic(con, run_id=run_id):
            batch.statuses[t["item_index"]] = t["validation_status"]
            if t["record"]:
                batch.seen.append(fingerprint(t["record"], t["id"]))
        # the items' draws are known from their seeds: read just those trials, once
        wanted = []
        for i in (todo + [i for i in range(n, batch.limit) if i not in done]):
            try:
                wanted += pool.select(label=label, k=k, seed=item_seed(seed, i))[2]
            except RetrievalError:
                pass  # the item fails at its retrieval stage, with this reason
        pool.prefetch(con, wanted)
    status = "interrupted"
    try:
        asyncio.run(batch.run(todo))
        status = "done"
    finally:
        with connect(db) as con:
            counts = store.update_run(con, run_id, status=status)
            con.execute("CHECKPOINT")  # fold the run's WAL into the file now (writes skipped it)
        batch.done, batch.failed = counts["done"], counts["failed"]
        batch.progress(status, 0 if status == "done" else n - counts["done"] - counts["failed"])
    return {"run_id": run_id, "n": n, **counts, "cost_usd": batch.cost, "status": status, "seed": seed,
            "example_budget": batch.budget}


def _load_overrides(path: str | None) -> dict | None:
    if not path:
        return None
    p = Path(path)
    try:
        if p.suffix == ".toml":
            import tomllib
            return tomllib.loads(p.read_text())
        return json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{p}: cannot read prompt overrides ({exc})") from None


def run(args: argparse.Namespace) -> int:
    from core.llm import LLMError

    try:
        result = run_batch(
            args.db, args.n, intervention=args.intervention, label=args.label, backend=args.backend,
            base_url=args.base_url, api_key=args.api_key, model=args.model, concurrency=args.concurrency,
            seed=args.seed, max_tokens=args.max_tokens, run_id=args.run_id, temperature=args.temperature,
            rule=args.rule, min_each=args.min_each, example_budget_cap=args.example_budget,
            prompt_overrides=_load_overrides(args.prompts), n_ctx=args.n_ctx, timeout_s=args.timeout,
            show_progress=not args.no_progress, batch_api=args.batch_api, poll_s=args.poll_s,
            output=args.output, valid_only=args.valid_only,
        )
    except (UsageError, RetrievalError, PromptError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except LLMError as exc:  # configuration problems (no key, no model file); per-item errors never get here
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


