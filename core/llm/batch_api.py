"""OpenAI Batch API as an LLM backend: the same pipeline, its requests answered through /v1/batches.

`BatchAPILLM` is an OpenAILLM whose calls are not sent one by one: every request the pipeline makes
while its items are in flight is collected (per purpose, so the reasoning stage and the generation
stage are separate batches), written as JSONL, uploaded (`files.create`), run (`batches.create`),
polled, and its output and error files downloaded; each waiting call then gets its line's answer
(or its error, which the usual retry loop of `LLM.acomplete` handles: a failed or expired line is
sent again in a later batch).

Resumable, by what is stored with the run (a state folder, e.g. RUNS_DIR/<run_id>/batch-api/):
- `custom_id` is a hash of the request body (model, messages, seed, ...). The pipeline's requests are
  deterministic (per-item seeds), so a rerun asks the same questions under the same ids;
- `state.json` lists every batch (id, input file, purpose, its custom_ids), written atomically BEFORE
  the batch is created (so a kill -9 right after `batches.create` is found again through the batch's
  metadata) and after each change;
- `results.jsonl` keeps each answered line as soon as its batch's output is downloaded (fsync'd).
A kill -9 at any point and a rerun therefore neither lose an answer nor pay for one twice: answered
lines come from results.jsonl, lines of a batch still running wait for that batch, only the rest
go into a new batch; the pipeline's store skips items already stored.

Costs are at batch prices (`core.llm.pricing.BATCH_DISCOUNT` of the standard price).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from core.llm.base import LLMError, LLMRequest, LLMResponse
from core.llm.openai import OUTPUT_MODES, OpenAILLM
from core.llm.pricing import estimate_cost

ENDPOINT = "/v1/chat/completions"
TERMINAL = {"completed", "failed", "expired", "cancelled"}
MAX_LINES = 50_000                  # the API's limit of requests per batch


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class BatchState:
    """The batches of one run and the answers received, on disk (what a rerun resumes from)."""

    def __init__(self, folder: str | os.PathLike):
        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.dir / "state.json"
        self.results_path = self.dir / "results.jsonl"
        self.batches: list[dict[str, Any]] = []
        self.results: dict[str, dict[str, Any]] = {}
        if self.state_path.exists():
            try:
                self.batches = json.loads(self.state_path.read_text(encoding="utf-8")).get("batches", [])
            except ValueError as exc:
                raise LLMError(f"{self.state_path}: not readable ({exc}); move it away to start the batches anew",
                               kind="config", retryable=False) from None
        if self.results_path.exists():
            for line in self.results_path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except ValueError:  # a line cut short by a kill: its batch's output is fetched again
                    continue
                self.results[row["custom_id"]] = row["body"]

    def save(self) -> None:
        _atomic_write(self.state_path, json.dumps({"batches": self.batches}, indent=1))

    def add_results(self, rows: list[dict[str, Any]]) -> None:
        with open(self.results_path, "a", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        for row in rows:
            self.results[row["custom_id"]] = row["body"]


class BatchAPILLM(OpenAILLM):
    """OpenAILLM whose requests go through the Batch API (see the module docstring)."""

    backend = "openai"

    def __init__(self, *, state_dir: str | os.PathLike, run_id: str, poll_s: float = 30.0, idle_s: float = 1.0,
                 completion_window: str = "24h", on_batch: Callable[[dict[str, Any]], None] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state = BatchState(state_dir)
        self.run_id = run_id
        self.poll_s, self.idle_s, self.completion_window = poll_s, idle_s, completion_window
        self.on_batch = on_batch
        self._waiting: dict[str, list[asyncio.Future]] = {}
        self._lines: dict[str, dict[str, Any]] = {}
        self._last_arrival = 0.0
        self._collector: asyncio.Task | None = None
        self._sync_client: Any = None
        self._client_lock = threading.Lock()

    # -- one request line
    def body(self, req: LLMRequest) -> dict[str, Any]:
        if not req.messages:
            raise LLMError("the Batch API path sends chat requests only (this request has no messages)",
                           kind="bad_request", retryable=False)
        mode = self.mode_for(req)
        messages, extra = self._structured(req, mode)  # structured output exactly as the online path asks
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": req.temperature, **extra}
        reasoning = self.model.startswith(("o1", "o3", "o4", "gpt-5"))
        body["max_completion_tokens" if reasoning else "max_tokens"] = req.max_tokens
        if req.stop:
            body["stop"] = req.stop
        if req.seed is not None:
            body["seed"] = req.seed
        return body

    def mode_for(self, req: LLMRequest) -> str:
        return "free" if req.schema is None else OUTPUT_MODES[self.output_floor]

    def custom_id(self, req: LLMRequest, body: dict[str, Any]) -> str:
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()[:32]
        return f"{req.purpose or 'call'}-{digest}"

    def _params(self, req: LLMRequest) -> dict[str, Any]:
        params = super()._params(req)
        params["endpoint"] = "batches:chat.completions"
        return params

    def _response(self, body: dict[str, Any], latency: float, mode: str = "free") -> LLMResponse:
        choices = body.get("choices") or []
        if not choices:
            raise LLMError("batch line has no choices", kind="bad_response", retryable=True)
        text = (choices[0].get("message") or {}).get("content") or ""
        usage = body.get("usage") or {}
        p = int(usage.get("prompt_tokens") or 0)
        c = int(usage.get("completion_tokens") or self.count_tokens(text))
        return LLMResponse(text=text, model=body.get("model") or self.model, backend=self.backend,
                           prompt_tokens=p, completion_tokens=c, latency_s=latency,
                           cost_usd=estimate_cost(self.model, p, c, batch=True),
                           finish_reason=choices[0].get("finish_reason"), output_mode=mode)

    async def _acall(self, req: LLMRequest) -> LLMResponse:
        mode = self.mode_for(req)
        body = self.body(req)
        cid = self.custom_id(req, body)
        t0 = time.perf_counter()
        if cid in self.state.results:  # answered before (this run, or before a kill)
            return self._response(self.state.results[cid], 0.0, mode)
        fut = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(cid, []).append(fut)
        self._lines[cid] = {"custom_id": cid, "method": "POST", "url": ENDPOINT, "body": body,
                            "_purpose": req.purpose or "call"}
        self._last_arrival = time.monotonic()
        if self._collector is None or self._collector.done():
            self._collector = asyncio.create_task(self._collect())
        outcome = await fut
        if isinstance(outcome, LLMError):
            if mode != "free" and outcome.status in (400, 422) and "response_format" in str(outcome).lower():
                # the server refused this structured-output mode: the retry asks for the next one
                with self._lock:
                    if OUTPUT_MODES[self.output_floor] == mode:
                        self.output_floor += 1
                        self.output_refusals.append(f"{mode}: {self._scrub(str(outcome))[:300]}")
                outcome.retryable = True
            raise outcome
        return self._response(outcome, time.perf_counter() - t0, mode)

    # -- the collector: submit, poll, download, hand out
    def _client(self) -> Any:
        import openai

        with self._client_lock:
            if self._sync_client is None:
                self._sync_client = openai.OpenAI(api_key=self._secret, base_url=self.base_url,
                                                  timeout=self.timeout_s, max_retries=3)
            return self._sync_client

    def _live(self) -> list[dict[str, Any]]:
        return [b for b in self.state.batches if not b.get("collected")]

    def _assigned(self) -> set[str]:
        return {c for b in self._live() for c in b["custom_ids"]}

    def _notify(self, batch: dict[str, Any], event: str) -> None:
        if self.on_batch:
            try:
                self.on_batch({"event": event, **{k: batch.get(k) for k in
                               ("id", "purpose", "status", "request_counts", "input_file_id")},
                               "lines": len(batch["custom_ids"])})
            except Exception:  # a progress display must not break the run
                pass

    async def _collect(self) -> None:
        try:
            while self._waiting:
                # wait until the items have asked everything they will ask for now
                while time.monotonic() - self._last_arrival < self.idle_s:
                    await asyncio.sleep(self.idle_s / 4)
                assigned = self._assigned()
                new = [c for c in self._waiting if c not in assigned and c not in self.state.results]
                by_purpose: dict[str, list[str]] = {}
                for c in new:
                    by_purpose.setdefault(self._lines[c]["_purpose"], []).append(c)
                for purpose, cids in by_purpose.items():
                    for s in range(0, len(cids), MAX_LINES):
                        await asyncio.to_thread(self._submit, purpose, cids[s:s + MAX_LINES])
                for c in [c for c in self._waiting if c in self.state.results]:
                    self._resolve(c, self.state.results[c])
                for batch in self._live():
                    await asyncio.to_thread(self._poll, batch)
                    if batch.get("collected"):
                        self._hand_out(batch)
                if self._waiting and any(set(b["custom_ids"]) & set(self._waiting) for b in self._live()):
                    await asyncio.sleep(self.poll_s)
        except Exception as exc:  # noqa: BLE001 - every waiting call learns what went wrong
            err = exc if isinstance(exc, LLMError) else self._classify(exc)
            for c in list(self._waiting):
                self._resolve(c, err)

    def _resolve(self, cid: str, outcome: Any) -> None:
        for fut in self._waiting.pop(cid, []):
            if not fut.done():
                fut.set_result(outcome)

    def _submit(self, purpose: str, cids: list[str]) -> None:
        client = self._client()
        data = "".join(json.dumps({k: v for k, v in self._lines[c].items() if not k.startswith("_")}) + "\n"
                       for c in cids).encode("utf-8")
        f = client.files.create(file=(f"{self.run_id}-{purpose}.jsonl", data), purpose="batch")
        entry = {"id": None, "purpose": purpose, "input_file_id": f.id, "custom_ids": cids, "status": "creating",
                 "created_at": time.time()}
        self.state.batches.append(entry)
        self.state.save()  # before create: a kill right after it finds the batch by its metadata
        b = client.batches.create(input_file_id=f.id, endpoint=ENDPOINT, completion_window=self.completion_window,
                                  metadata={"ctgen_run": self.run_id, "purpose": purpose, "input_file_id": f.id})
        entry.update(id=b.id, status=b.status)
        self.state.save()
        self._notify(entry, "created")

    def _find_created(self, entry: dict[str, Any]) -> None:
        """A batch whose creation a kill interrupted: created (found by its input file) or not."""
        client = self._client()
        for b in client.batches.list(limit=100):
            if b.input_file_id == entry["input_file_id"]:
                entry.update(id=b.id, status=b.status)
                self.state.save()
                return
        b = client.batches.create(input_file_id=entry["input_file_id"], endpoint=ENDPOINT,
                                  completion_window=self.completion_window,
                                  metadata={"ctgen_run": self.run_id, "purpose": entry["purpose"],
                                            "input_file_id": entry["input_file_id"]})
        entry.update(id=b.id, status=b.status)
        self.state.save()

    def _poll(self, entry: dict[str, Any]) -> None:
        client = self._client()
        if not entry.get("id"):
            self._find_created(entry)
        b = client.batches.retrieve(entry["id"])
        counts = b.request_counts.model_dump() if b.request_counts is not None else None
        changed = b.status != entry.get("status")
        entry.update(status=b.status, request_counts=counts)
        if changed and b.status not in TERMINAL:  # a finished batch is announced once, below
            self._notify(entry, "status")
        if b.status not in TERMINAL:
            self.state.save()
            return
        answered: list[dict[str, Any]] = []
        errors: dict[str, dict[str, Any]] = {}
        for file_id, kind in ((b.output_file_id, "output"), (b.error_file_id, "error")):
            if not file_id:
                continue
            for line in client.files.content(file_id).text.splitlines():
                if not line.strip():
                    continue
                row = json.loads(line)
                resp = row.get("response") or {}
                if resp.get("status_code") == 200 and not row.get("error"):
                    answered.append({"custom_id": row["custom_id"], "body": resp.get("body") or {}})
                else:
                    errors[row["custom_id"]] = row
        self.state.add_results(answered)   # durable before anyone is told
        if b.status == "failed":
            msgs = "; ".join(e.message or e.code or "" for e in (b.errors.data if b.errors else []) or [])
            entry["error"] = f"batch {b.id} failed validation: {msgs or 'no details'}"
        entry["errors"] = {c: _line_error(r) for c, r in errors.items()}
        entry["collected"] = True
        self.state.save()
        self._notify(entry, "done")

    def _hand_out(self, entry: dict[str, Any]) -> None:
        for c in entry["custom_ids"]:
            if c not in self._waiting:
                continue
            if c in self.state.results:
                self._resolve(c, self.state.results[c])
                continue
            if entry.get("error"):
                self._resolve(c, LLMError(entry["error"], kind="bad_request", retryable=False))
                continue
            e = (entry.get("errors") or {}).get(c)
            if e is None:  # neither answered nor failed (a cancelled batch): send it again
                e = {"message": f"batch {entry['id']} ended {entry['status']} without answering this line",
                     "kind": "timeout", "retryable": True, "status": None}
            self._resolve(c, LLMError(e["message"], kind=e["kind"], retryable=e["retryable"], status=e["status"]))

    async def aclose(self) -> None:
        await super().aclose()
        with self._client_lock:
            if self._sync_client is not None:
                self._sync_client.close()
                self._sync_client = None


def _line_error(row: dict[str, Any]) -> dict[str, Any]:
    """What a failed line means for the retry loop: expired and server errors are sent again."""
    if row.get("error"):
        code = row["error"].get("code") or ""
        msg = f"batch line {code}: {row['error'].get('message', '')}"
        return {"message": msg, "kind": "timeout" if code == "batch_expired" else "server",
                "retryable": True, "status": None}
    resp = row.get("response") or {}
    status = int(resp.get("status_code") or 0)
    err = ((resp.get("body") or {}).get("error") or {})
    msg = f"batch line HTTP {status}: {err.get('message', '')}"
    retryable = status == 429 or status >= 500
    kind = "rate_limit" if status == 429 else "server" if status >= 500 else "bad_request"
    return {"message": msg, "kind": kind, "retryable": retryable, "status": status}


def create(*, model: str | None, base_url: str | None, api_key: str | None, n_ctx: int | None,
           state_dir: str | os.PathLike, run_id: str, poll_s: float = 30.0, idle_s: float = 1.0,
           on_batch: Callable[[dict[str, Any]], None] | None = None, **common: Any) -> BatchAPILLM:
    """The Batch API backend (same key rules as the openai backend)."""
    from core.llm.openai import DEFAULT_OPENAI_MODEL, key_for

    return BatchAPILLM(model=model or DEFAULT_OPENAI_MODEL, base_url=base_url, api_key=key_for(api_key, base_url),
                       n_ctx=n_ctx,
                       state_dir=state_dir, run_id=run_id, poll_s=poll_s, idle_s=idle_s, on_batch=on_batch,
                       **common)


def print_event(event: dict[str, Any]) -> None:
    """A batch's progress on stderr (the CLI's on_batch)."""
    import sys

    counts = event.get("request_counts") or {}
    done = f" {counts.get('completed', 0)}/{counts.get('total', 0)} done, {counts.get('failed', 0)} failed" if counts else ""
    print(f"batch {event.get('id')} ({event.get('purpose')}, {event.get('lines')} requests): "
          f"{event.get('status')}{done}", file=sys.stderr, flush=True)
