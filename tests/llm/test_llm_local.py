"""The embedded backend end to end with the real Gemma 3 270M GGUF (small max_tokens), and the
openai backend against llama.cpp's own OpenAI-compatible server running the same GGUF."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from core.llm import LLMError, LLMRequest, get_llm, local_model_path

DOC = ("Successful clinical trial example:\n<clinical_study>\n<brief_title>A Study of Imatinib in Chronic "
       "Myeloid Leukemia</brief_title>\n<phase>Phase 3</phase>\n</clinical_study>\n\n"
       "Successful clinical trial example:\n<clinical_study>\n<brief_title>")


@pytest.fixture(scope="module")
def local():
    entries: list[dict] = []
    llm = get_llm("local", on_call=entries.append)
    llm.entries = entries  # type: ignore[attr-defined]
    return llm


def test_generates_text_and_counts_agree_with_llama(local):
    req = LLMRequest(document=DOC, max_tokens=12, temperature=0.8, seed=3, purpose="generation", run_id="t")
    resp = local.complete(req)
    assert resp.text.strip()
    assert resp.backend == "local" and resp.model == "gemma-3-270m-q4_k_m" and resp.cost_usd == 0.0
    assert 0 < resp.completion_tokens <= 12
    assert resp.finish_reason in ("length", "stop")
    # count_tokens is the model's own tokenizer: plus the BOS token, it is what llama.cpp evaluated
    direct = local._llama.tokenize(DOC.encode(), add_bos=False, special=True)
    assert local.count_tokens(DOC) == len(direct)
    assert resp.prompt_tokens == local.count_prompt_tokens(req) == len(direct) + 1
    entry = local.entries[-1]
    assert entry["document"] == DOC and entry["messages"] is None and entry["error"] is None
    assert entry["params"]["n_ctx"] == local.context_window == 8192
    assert (entry["purpose"], entry["run_id"], entry["attempt"]) == ("generation", "t", 1)


def test_same_seed_same_text_and_async_path(local):
    req = LLMRequest(document=DOC, max_tokens=8, temperature=1.0, seed=11)
    first = local.complete(req)

    async def three():
        return await asyncio.gather(*(local.acomplete(req) for _ in range(3)))   # serialized by the lock

    again = asyncio.run(three())
    assert [r.text for r in again] == [first.text] * 3


def test_model_loaded_once_per_process(local):
    assert get_llm("local")._llama is local._llama
    assert local_model_path().stat().st_size > 100_000_000


def test_chat_only_request_is_refused_clearly(local):
    with pytest.raises(LLMError, match="base model") as info:
        local.complete(LLMRequest(messages=[{"role": "user", "content": "hi"}]))
    assert info.value.kind == "bad_request" and not info.value.retryable


def test_prompt_longer_than_context_is_a_context_length_error():
    small = get_llm("local", n_ctx=64)
    with pytest.raises(LLMError) as info:
        small.complete(LLMRequest(document=DOC * 4, max_tokens=4))
    assert info.value.kind == "context_length" and info.value.attempts == 1


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(url)


@pytest.mark.slow
def test_openai_backend_against_llama_cpp_server(local, tmp_path):
    pytest.importorskip("fastapi", reason="llama.cpp server extras (requirements-dev.txt) not installed")
    from conftest import free_port

    port = free_port()
    log = open(tmp_path / "llama_server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.llm.serve_local", "--model", str(local_model_path()), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "2048", "--n_threads", "1", "--model_alias", "gemma-3-270m"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        _wait_http(f"http://127.0.0.1:{port}/v1/models", proc)
        entries: list[dict] = []
        llm = get_llm("openai", base_url=f"http://127.0.0.1:{port}/v1", model="gemma-3-270m", on_call=entries.append)
        req = LLMRequest(document=DOC, max_tokens=8, temperature=0.7, seed=5, purpose="generation")
        resp = llm.complete(req)
        assert resp.text.strip() and 0 < resp.completion_tokens <= 8
        # same GGUF, same tokenizer: the server's prompt count is the embedded backend's count
        assert resp.prompt_tokens == local.count_prompt_tokens(req)
        assert entries[-1]["params"]["endpoint"] == "completions" and entries[-1]["error"] is None
        chat = llm.complete(LLMRequest(messages=[{"role": "user", "content": "Name one antibiotic."}], max_tokens=8))
        assert chat.backend == "openai" and chat.completion_tokens <= 8
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def test_cpu_workarounds_follow_the_cpu_and_the_override(monkeypatch):
    """The extra (AMX) weight buffers go off where the CPU has AMX, or when asked; the thread count
    follows the free cores."""
    from core.llm import local as L

    monkeypatch.setenv("CTGEN_LLAMA_EXTRA_BUFTS", "0")
    assert L.extra_buffers_off()
    monkeypatch.setenv("CTGEN_LLAMA_EXTRA_BUFTS", "1")
    assert not L.extra_buffers_off()
    monkeypatch.delenv("CTGEN_LLAMA_EXTRA_BUFTS")
    flags = next((ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")), "")
    assert L.extra_buffers_off() == ("amx_int8" in flags.split())
    assert 1 <= L.free_cores(0.05) <= (os.cpu_count() or 2)
    # a busy core: a spinning thread takes about one core's share of the idle time away
    import threading

    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [0 for _ in iter(stop.is_set, True)], daemon=True)
    spinner.start()
    try:
        assert L.free_cores(0.3) <= max(1, (os.cpu_count() or 2) - 1)
    finally:
        stop.set()
        spinner.join()
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: (_ for _ in ()).throw(OSError("no /proc"))
                        if str(path) == "/proc/stat" else real_open(path, *a, **k))
    monkeypatch.setattr(L.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(L.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert L.free_cores() == 4
    monkeypatch.setattr(L.os, "getloadavg", lambda: (3.2, 0.0, 0.0))
    assert L.free_cores() == 1
    monkeypatch.setenv("CTGEN_LLAMA_THREADS", "3")
    assert L.local_llama_kwargs() == {"n_threads": 3, "n_threads_batch": 3}


def test_title_mask_keeps_the_outcome_out_of_titles(local):
    """The embedded model's title mask: the tokens it bans begin an outcome word, ordinary title words
    stay allowed, and a trial asked for with the mask, after a prompt that invites "Failed ..." titles,
    has titles without outcome words (a reply without the mask is the control: it may or may not say it)."""

    import re

    from core.llm.local import banned_tokens
    from core.pipeline.generation import TITLE_AVOID
    from core.pipeline.schema import trial_schema
    from core.serialize import LEAK_WORDS

    model = local._llama._model
    ids = banned_tokens(model, local._llama._n_vocab, tuple(sorted(TITLE_AVOID)))
    pieces = {model.token_to_piece(int(t)).rstrip(b"\0").decode("utf-8", "ignore").strip().lower() for t in ids}
    assert {"failed", "failure", "successful", "terminated"} <= pieces
    assert not pieces & {"term", "efficacy", "safety", "study", "complete", "trial", "suc"}
    leak = re.compile(r"\b(" + "|".join(re.escape(w) for w in LEAK_WORDS) + r")\b", re.IGNORECASE)
    doc = ("Failed clinical trial example: {\"brief_title\": \"Failed trial of aspirin\"}\n\n"
           "Write a report of a failed clinical trial of Aspirin. Say in the title that it failed.\n"
           "Failed clinical trial example: ")
    avoid = {f: TITLE_AVOID for f in ("brief_title", "official_title")}
    for seed in (1, 2, 3):
        text = local.complete(LLMRequest(document=doc, max_tokens=70, temperature=1.0, seed=seed,
                                         schema=trial_schema("Aspirin"), avoid_words=avoid)).text
        titles = re.findall(r'"(?:brief_title|official_title)"\s*:\s*"((?:[^"\\]|\\.)*)', text)
        assert titles, text
        assert not any(leak.search(t) for t in titles), titles
