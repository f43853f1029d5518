"""The OpenAI-compatible backend: OpenAI, Azure's v1 endpoint, vLLM, Ollama, llama.cpp server, through
the official `openai` SDK. Uses `LLMRequest.messages` (chat), or `document` through /v1/completions
when a request has no messages."""

import asyncio
import concurrent.futures
import functools
import json
import logging
import os
import ssl
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

from core import config
from core.llm.pricing import context_window as _known_context_window
from core.llm.pricing import estimate_cost
from core.llm.base import LLM, LLMError, LLMRequest, LLMResponse
from core.llm.tokens import encoding_name_for, tiktoken_encoding

log = logging.getLogger(__name__)

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
UNKNOWN_OPENAI_CONTEXT = 8192       # a self-hosted model we know nothing about: be conservative
_NO_KEY = "sk-no-key-required"      # what llama.cpp / vLLM / Ollama accept when they need no key
# Structured output, best first. A server that refuses one (older vLLM, Ollama, llama.cpp servers know
# json_object or their own grammar options, not json_schema) gets the next, once per LLM: the rest of
# the run asks for what it accepted.
OUTPUT_MODES = ("json_schema", "json_object", "free")
# json_object carries no schema: it goes in the prompt, as an addition after the paper's text.
SCHEMA_NOTE = "Reply with one JSON object that follows this JSON Schema:\n"

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


@functools.lru_cache(maxsize=1)
def ssl_context() -> ssl.SSLContext:
    """The verifying TLS context every client of this process shares (certifi's CA bundle, as the SDK's
    own default; SSL_CERT_FILE overrides)."""
    cafile = os.environ.get("SSL_CERT_FILE")
    if not cafile:
        try:
            import certifi

            cafile = certifi.where()
        except ImportError:
            cafile = None
    return ssl.create_default_context(cafile=cafile)


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
        self.output_floor = 0                  # index into OUTPUT_MODES: the best mode the server accepts
        self.output_refusals: list[str] = []   # what the server said when it refused a mode (for the record)

    def _new_client(self):
        import openai

        # max_retries=0: retries are ours, so they are observable, logged and tested.
        # One TLS context per process: loading the CA bundle for each client took 50-170 ms.
        http = openai.DefaultAsyncHttpxClient(verify=ssl_context())
        return openai.AsyncOpenAI(api_key=self._secret, base_url=self.base_url, timeout=self.timeout_s,
                                  max_retries=0, http_client=http)

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

    def _structured(self, req: LLMRequest, mode: str) -> tuple[list[dict], dict[str, Any]]:
        """(messages, extra create() arguments) asking for `mode`."""
        if mode == "json_schema":
            return req.messages, {"response_format": {"type": "json_schema", "json_schema": {
                "name": req.schema_name, "strict": True, "schema": req.schema}}}
        if mode == "json_object":
            note = {"role": "system", "content": SCHEMA_NOTE + json.dumps(req.schema, ensure_ascii=False)}
            return [*req.messages, note], {"response_format": {"type": "json_object"}}
        return req.messages, {}

    @staticmethod
    def _refused(exc: BaseException) -> bool:
        """A 400/422 that is about the request's response_format (not its length or model)."""
        import openai

        if not isinstance(exc, (openai.BadRequestError, openai.UnprocessableEntityError)):
            return False
        text = str(exc).lower()
        return not ("context" in text and "length" in text)

    async def _request(self, client: Any, req: LLMRequest) -> LLMResponse:
        if req.schema is None or not req.messages:
            return await self._request_mode(client, req, "free")
        while True:
            mode = OUTPUT_MODES[self.output_floor]
            try:
                return await self._request_mode(client, req, mode)
            except Exception as exc:  # noqa: BLE001 - a refusal steps down; anything else is the caller's
                if mode == "free" or not self._refused(exc):
                    raise
                with self._lock:
                    if OUTPUT_MODES[self.output_floor] == mode:
                        self.output_floor += 1
                        self.output_refusals.append(f"{mode}: {self._scrub(str(exc))[:300]}")
                log.info("%s refused %s; asking for %s", self.base_url or "the server", mode,
                         OUTPUT_MODES[self.output_floor])

    async def _request_mode(self, client: Any, req: LLMRequest, mode: str) -> LLMResponse:
        kwargs: dict[str, Any] = {"model": self.model, "temperature": req.temperature}
        if req.stop:
            kwargs["stop"] = req.stop
        if req.seed is not None:
            kwargs["seed"] = req.seed
        t0 = time.perf_counter()
        if req.messages:
            messages, extra = self._structured(req, mode)
            # Reasoning models take max_completion_tokens; everything else knows max_tokens.
            reasoning = self.model.startswith(("o1", "o3", "o4", "gpt-5"))
            kwargs["max_completion_tokens" if reasoning else "max_tokens"] = req.max_tokens
            # response_format goes as extra_body: the same JSON on the wire, without the SDK's typed transform
            # walking the whole schema on every request (~2 ms of CPU each, paid in series by a batch).
            out = await client.chat.completions.create(messages=messages, **kwargs, extra_body=extra or None)
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
                           finish_reason=choices[0].finish_reason, output_mode=mode)

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




def create(*, model: str | None, base_url: str | None, api_key: str | None, n_ctx: int | None,
           **common: Any) -> "OpenAILLM":
    """The OpenAI-compatible backend."""
    return OpenAILLM(model=model or DEFAULT_OPENAI_MODEL, base_url=base_url, api_key=key_for(api_key, base_url),
                     n_ctx=n_ctx, **common)


def key_for(api_key: str | None, base_url: str | None) -> str:
    """The key rule of every OpenAI-compatible backend: the key given or configured; a server on a custom
    base_url (llama.cpp, vLLM, Ollama) may need none; OpenAI itself does."""
    key = resolve_api_key(api_key)
    if key:
        return key
    if base_url is None:
        raise LLMError("no OpenAI API key: pass --api-key, set OPENAI_API_KEY, or put OPENAI_API_KEY "
                       "in .streamlit/secrets.toml", kind="auth", retryable=False)
    return _NO_KEY
