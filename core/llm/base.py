"""The one LLM interface: request and response values, errors, the abstract `LLM` with its retry
loop and call logging, and `get_llm`, the registry of backends (core.llm.local, core.llm.openai).

Retries are ours, not the SDK's (its max_retries is 0): transient failures (429, 5xx, timeouts,
dropped connections, unreadable replies) are retried with exponential back-off and full jitter,
and every attempt, failed or not, is reported to `on_call` so it can be logged and counted.
API keys are never stored, logged or put in an error message: every string that leaves a
backend is scrubbed of the key.
"""

import abc
import importlib
import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable


log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------
# Requests, responses, errors


@dataclass
class LLMRequest:
    messages: list[dict[str, str]] = field(default_factory=list)  # chat form
    document: str | None = None             # completion form for base models: text to continue
    temperature: float = 1.0
    max_tokens: int = 1024
    stop: list[str] | None = None
    seed: int | None = None
    purpose: str = ""                       # 'reasoning' | 'generation' | ... (logged)
    run_id: str | None = None               # logged
    # Structured output: a JSON Schema the reply must follow (OpenAI-compatible servers: response_format
    # json_schema, strict, falling back to json_object then free text where a server refuses it; the
    # embedded model: the schema as a llama.cpp grammar). None: free text.
    schema: dict[str, Any] | None = None
    schema_name: str = "reply"
    # The embedded model only: a llama.cpp grammar (GBNF) used instead of the schema's, for a document whose
    # answer the prompt already opened (e.g. the paper's "Reasons:\n1."). Servers get `schema`.
    grammar: str | None = None
    # The embedded model only: llama.cpp's repeat penalty over the last 64 tokens (a base model otherwise
    # loops: "8. 8. 8.", the same reason five times). OpenAI-compatible servers do not get it.
    repeat_penalty: float = 1.0
    # The embedded model, with a schema only: words its reply may not write inside these string fields
    # ({field: [word, ...]}; tokens that begin one of them are masked while the field is being written).
    # The trial's titles must not state the outcome; servers get no such mask (validation still checks).
    avoid_words: dict[str, list[str]] | None = None


@dataclass
class LLMResponse:
    text: str
    model: str
    backend: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    cost_usd: float | None
    finish_reason: str | None
    # How the reply was constrained: 'json_schema', 'json_object', 'grammar' (llama.cpp) or 'free'.
    output_mode: str = "free"


class LLMError(Exception):
    """A failed call. `kind`: 'rate_limit', 'server', 'timeout', 'connection', 'bad_response'
    (retryable), or 'bad_request', 'context_length', 'auth', 'permission', 'not_found',
    'config', 'internal' (not retryable). `attempts`: how many tries were made."""

    def __init__(self, message: str, *, kind: str, retryable: bool, status: int | None = None,
                 retry_after_s: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable
        self.status = status
        self.retry_after_s = retry_after_s
        self.attempts = 0

    def __str__(self) -> str:
        return super().__str__()


# ----------------------------------------------------------------------------------------------
# The interface


class LLM(abc.ABC):
    backend: str
    model: str
    context_window: int
    chat: bool

    # Back-off: attempt n waits uniform(0, min(cap, base * 2**(n-1))) ("full jitter").
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 20.0

    def __init__(self, *, max_retries: int = 5, timeout_s: float = 120.0,
                 on_call: Callable[[dict], None] | None = None) -> None:
        self.max_retries = max(0, int(max_retries))
        self.timeout_s = float(timeout_s)
        self.on_call = on_call
        self._secret: str | None = None

    def __repr__(self) -> str:  # never shows the key
        return f"<{type(self).__name__} backend={self.backend!r} model={self.model!r}>"

    # -- what backends implement
    @abc.abstractmethod
    def _call(self, req: LLMRequest) -> LLMResponse:
        """One attempt, blocking. Raise LLMError (or any exception, classified by _classify)."""

    async def _acall(self, req: LLMRequest) -> LLMResponse:
        """One attempt, async. Default: the blocking call in a worker thread."""
        return await asyncio.to_thread(self._call, req)

    def _classify(self, exc: BaseException) -> LLMError:
        return LLMError(f"{type(exc).__name__}: {exc}", kind="internal", retryable=False)

    @abc.abstractmethod
    def count_tokens(self, text: str) -> int:
        """Exact number of tokens `text` encodes to for this model."""

    def count_prompt_tokens(self, req: LLMRequest) -> int:
        """Tokens the request's prompt will take (what the server reports as prompt_tokens)."""
        return self.count_tokens(req.document or "")

    # -- retries, shared by both forms
    def _backoff_s(self, attempt: int, err: LLMError) -> float:
        wait = random.uniform(0.0, min(self.backoff_cap_s, self.backoff_base_s * 2 ** (attempt - 1)))
        if err.retry_after_s is not None:  # the server said how long; honour it, within reason
            wait = max(wait, min(err.retry_after_s, self.backoff_cap_s))
        return wait

    def _failure(self, exc: BaseException, attempt: int) -> tuple[LLMError, BaseException | None]:
        """The LLMError to report, and the exception to chain it to (None when that would carry the key:
        we raise outside the except block, so nothing else links back to it)."""
        err = exc if isinstance(exc, LLMError) else self._classify(exc)
        cause: BaseException | None = None if err is exc else exc
        if self._secret and (self._secret in str(err) or self._secret in repr(exc)):
            err = LLMError(self._scrub(str(err)) or "", kind=err.kind, retryable=err.retryable,
                           status=err.status, retry_after_s=err.retry_after_s)
            cause = None
        err.attempts = attempt
        return err, cause

    def _failed(self, req: LLMRequest, exc: Exception, attempt: int,
                t0: float) -> tuple[LLMError, BaseException | None, float | None]:
        """A failed call, classified and logged: (error, cause, seconds to wait before retrying or None
        when it is not retried)."""
        err, cause = self._failure(exc, attempt)
        self._emit(req, None, err, attempt, time.perf_counter() - t0)
        retry = err.retryable and attempt <= self.max_retries
        return err, cause, self._backoff_s(attempt, err) if retry else None

    async def acomplete(self, req: LLMRequest) -> LLMResponse:
        attempt = 0
        while True:
            attempt += 1
            t0 = time.perf_counter()
            try:
                resp = await self._acall(req)
            except Exception as exc:  # noqa: BLE001 - classified, logged, retried or re-raised below
                err, cause, delay = self._failed(req, exc, attempt, t0)
            else:
                self._emit(req, resp, None, attempt, resp.latency_s)
                return resp
            if delay is None:  # raised out here, so the error's context does not link back to exc
                raise err from cause
            await asyncio.sleep(delay)

    def complete(self, req: LLMRequest) -> LLMResponse:
        attempt = 0
        while True:
            attempt += 1
            t0 = time.perf_counter()
            try:
                resp = self._call(req)
            except Exception as exc:  # noqa: BLE001 - as in acomplete
                err, cause, delay = self._failed(req, exc, attempt, t0)
            else:
                self._emit(req, resp, None, attempt, resp.latency_s)
                return resp
            if delay is None:  # raised out here, so the error's context does not link back to exc
                raise err from cause
            time.sleep(delay)

    # -- logging
    def _uses_messages(self, req: LLMRequest) -> bool:
        return self.chat and bool(req.messages)

    def _params(self, req: LLMRequest) -> dict[str, Any]:
        params = {"temperature": req.temperature, "max_tokens": req.max_tokens, "stop": req.stop,
                  "seed": req.seed, "timeout_s": self.timeout_s}
        if req.schema is not None:
            params["schema_name"] = req.schema_name
        return params

    def _scrub(self, text: str | None) -> str | None:
        if text and self._secret and self._secret in text:
            return text.replace(self._secret, "***")
        return text

    def _emit(self, req: LLMRequest, resp: LLMResponse | None, err: LLMError | None,
              attempt: int, latency_s: float) -> None:
        if self.on_call is None:
            return
        chat = self._uses_messages(req)
        entry = {
            "backend": self.backend,
            "model": resp.model if resp else self.model,
            "purpose": req.purpose,
            "run_id": req.run_id,
            "messages": [{"role": m.get("role", ""), "content": self._scrub(m.get("content", ""))}
                         for m in req.messages] if chat else None,
            "document": None if chat else self._scrub(req.document),
            "params": self._params(req),
            "response_text": self._scrub(resp.text) if resp else None,
            "prompt_tokens": resp.prompt_tokens if resp else None,
            "completion_tokens": resp.completion_tokens if resp else None,
            "latency_s": round(latency_s, 4),
            "cost_usd": resp.cost_usd if resp else None,
            "finish_reason": resp.finish_reason if resp else None,
            "output_mode": resp.output_mode if resp else None,
            "error": str(err) if err else None,
            "error_kind": err.kind if err else None,
            "status": err.status if err else None,
            "attempt": attempt,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        }
        try:
            self.on_call(entry)
        except Exception:  # a broken logger must not fail the generation it logs
            log.exception("on_call hook failed")



# ----------------------------------------------------------------------------------------------


def get_llm(backend: str = "local", *, model: str | None = None, base_url: str | None = None,
            api_key: str | None = None, max_retries: int = 5, timeout_s: float = 120.0,
            on_call: Callable[[dict], None] | None = None, n_ctx: int | None = None) -> LLM:
    """The LLM for a backend.

    local:  `model` may be a path to another GGUF (default: the embedded Gemma 3 270M);
            `n_ctx` its context window (default 8192).
    openai: `model` default gpt-4o-mini; `base_url` any OpenAI-compatible endpoint; the key from
            `api_key`, OPENAI_API_KEY or .streamlit/secrets.toml (servers on a custom base_url may
            need none); `n_ctx` overrides the context window table (useful for self-hosted models).
    """
    common = {"max_retries": max_retries, "timeout_s": timeout_s, "on_call": on_call}
    if backend not in BACKENDS:
        raise LLMError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}", kind="config", retryable=False)
    module_name, factory = BACKENDS[backend].split(":")
    create = getattr(importlib.import_module(module_name), factory)
    return create(model=model, base_url=base_url, api_key=api_key, n_ctx=n_ctx, **common)


# The registry of backends: name -> "module:factory". Imported on first use, so that a command that never
# talks to llama.cpp does not load it (and the other way round).
BACKENDS: dict[str, str] = {"local": "core.llm.local:create", "openai": "core.llm.openai:create"}
