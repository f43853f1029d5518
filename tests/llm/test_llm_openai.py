"""The openai backend through the real `openai` SDK against a real HTTP server on localhost
(tests/servers/openai_server.py) that injects faults; retries are ours and counted at the server."""
from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid

import pytest

from core.llm import LLMError, LLMRequest, get_llm
from core.store import connect
from core.store.llmlog import db_logger, recent_calls
from tests.servers.openai_server import serve

REASONS_MSGS = [
    {"role": "system", "content": "You are now a medical expert in the clinical area."},
    {"role": "user", "content": "Write 5 reasons leading (Metformin) to (fail) in these trials. Be creative and write unique reasons."},
]
TRIAL_MSGS = [
    {"role": "system", "content": "You are now a medical expert in the clinical area."},
    {"role": "user", "content": "Your output style should strictly follow the XML-like format of the provided examples. "
                                "The intervention name must be (Imatinib), and you must refer to these reasons.\n"
                                "Write a report of a (successful) clinical trial of (Imatinib). Be creative."},
]


def _llm(srv, **kw):
    entries: list[dict] = []
    llm = get_llm("openai", base_url=srv.base_url, api_key=kw.pop("api_key", "sk-test"), on_call=entries.append, **kw)
    llm.backoff_base_s = 0.01   # keep the suite fast; the schedule itself is tested below
    llm.backoff_cap_s = 0.05
    return llm, entries


@pytest.mark.parametrize("fault,kind", [
    ("429", "rate_limit"), ("500", "server"), ("503", "server"), ("drop", "connection"),
    ("hang", "timeout"), ("malformed", "bad_response"),
])
def test_transient_faults_are_retried_then_succeed(fault, kind):
    with serve(faults=[fault, fault], hang_s=3) as srv:
        llm, entries = _llm(srv, timeout_s=0.5)
        resp = asyncio.run(llm.acomplete(LLMRequest(messages=REASONS_MSGS, purpose="reasoning", run_id="r1")))
        assert srv.count == 3                      # two failures at the server, then the answer
        assert [r["fault"] for r in srv.requests] == [fault, fault, "ok"]
    assert [e["attempt"] for e in entries] == [1, 2, 3]
    assert [e["error_kind"] for e in entries] == [kind, kind, None]
    assert entries[0]["error"] and entries[2]["error"] is None
    assert resp.backend == "openai" and resp.model == "gpt-4o-mini"
    assert re.findall(r"(?:^|\s)([1-5])\. ", resp.text) == ["1", "2", "3", "4", "5"]
    assert resp.prompt_tokens > 0 and resp.completion_tokens > 0
    assert resp.cost_usd == pytest.approx((resp.prompt_tokens * 0.15 + resp.completion_tokens * 0.60) / 1e6)


def test_sync_complete_retries_too():
    with serve(faults=["500", "429"]) as srv:
        llm, entries = _llm(srv)
        resp = llm.complete(LLMRequest(messages=TRIAL_MSGS, seed=7, purpose="generation"))
        assert srv.count == 3
    trial = json.loads(resp.text.removeprefix("```json").removesuffix("```"))
    assert {"type": "Drug", "name": "Imatinib"} == {k: trial["interventions"][0][k] for k in ("type", "name")}
    assert [e["error_kind"] for e in entries] == ["server", "rate_limit", None]


def test_gives_up_after_max_retries():
    with serve(faults=["429"] * 10) as srv:
        llm, entries = _llm(srv, max_retries=2)
        with pytest.raises(LLMError) as info:
            llm.complete(LLMRequest(messages=REASONS_MSGS))
        assert srv.count == 3
    err = info.value
    assert (err.kind, err.status, err.retryable, err.attempts) == ("rate_limit", 429, True, 3)
    assert len(entries) == 3 and all(e["error_kind"] == "rate_limit" for e in entries)


@pytest.mark.parametrize("fault,kind,status", [("400", "bad_request", 400), ("401", "auth", 401)])
def test_client_errors_fail_fast(fault, kind, status):
    with serve(faults=[fault]) as srv:
        llm, entries = _llm(srv)
        with pytest.raises(LLMError) as info:
            asyncio.run(llm.acomplete(LLMRequest(messages=REASONS_MSGS)))
        assert srv.count == 1
    assert (info.value.kind, info.value.status, info.value.retryable, info.value.attempts) == (kind, status, False, 1)
    assert len(entries) == 1 and entries[0]["status"] == status


def test_backoff_is_exponential_with_full_jitter():
    with serve() as srv:
        llm, _ = _llm(srv)
    llm.backoff_base_s, llm.backoff_cap_s = 1.0, 8.0
    err = LLMError("x", kind="server", retryable=True)
    for attempt, bound in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (6, 8.0)]:
        waits = [llm._backoff_s(attempt, err) for _ in range(400)]
        assert all(0.0 <= w <= bound for w in waits)
        assert max(waits) > 0.8 * bound and min(waits) < 0.2 * bound   # spread over the whole range
    told = LLMError("x", kind="rate_limit", retryable=True, retry_after_s=3.0)
    assert all(3.0 <= llm._backoff_s(1, told) <= 8.0 for _ in range(50))


def test_retry_loop_waits_the_backoff_between_attempts():
    with serve(faults=["500", "500", "500"]) as srv:
        llm, _ = _llm(srv)
        asked: list[int] = []
        llm._backoff_s = lambda attempt, err: asked.append(attempt) or 0.15   # type: ignore[method-assign]
        llm.complete(LLMRequest(messages=REASONS_MSGS))
        times = [r["t"] for r in srv.requests]
    assert asked == [1, 2, 3]
    assert all(b - a >= 0.15 for a, b in zip(times, times[1:]))


def test_api_key_never_reaches_store_logs_or_errors(tmp_path, caplog, monkeypatch):
    key = f"sk-test-{uuid.uuid4().hex}"
    db = tmp_path / "store.duckdb"
    caplog.set_level(logging.DEBUG)                 # the SDK's and httpx's debug logs included
    monkeypatch.setenv("OPENAI_LOG", "debug")
    with serve(faults=["429", None, "401"]) as srv:
        llm = get_llm("openai", base_url=srv.base_url, api_key=key, on_call=db_logger(db))
        llm.backoff_base_s = 0.01
        llm.complete(LLMRequest(messages=REASONS_MSGS, purpose="reasoning", run_id="leak"))
        with pytest.raises(LLMError) as info:
            llm.complete(LLMRequest(messages=[{"role": "user", "content": f"my key is {key}"}], run_id="leak"))
        assert {r["authorization"] for r in srv.requests} == {f"Bearer {key}"}   # it was used
    assert key not in str(info.value) and "***" in str(info.value)   # the server echoed it; we scrubbed it
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert key not in repr(llm)
    assert key not in caplog.text
    with connect(db) as con:
        rows = recent_calls(con, run_id="leak")
        dump = con.execute("SELECT string_agg(CAST(t AS VARCHAR), '|') FROM llm_calls t").fetchone()[0]
        con.execute("CHECKPOINT")
    assert len(rows) == 3 and [r["error_kind"] for r in reversed(rows)] == ["rate_limit", None, "auth"]
    assert key not in dump and "my key is ***" in dump
    assert key.encode() not in db.read_bytes()


def test_key_from_env_then_secrets_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "secrets.toml").write_text('OPENAI_API_KEY = "sk-from-secrets"\n')
    with serve() as srv:
        get_llm("openai", base_url=srv.base_url).complete(LLMRequest(messages=REASONS_MSGS))
        monkeypatch.delenv("OPENAI_API_KEY")
        get_llm("openai", base_url=srv.base_url).complete(LLMRequest(messages=REASONS_MSGS))
        get_llm("openai", base_url=srv.base_url, api_key="sk-arg").complete(LLMRequest(messages=REASONS_MSGS))
        assert [r["authorization"] for r in srv.requests] == ["Bearer sk-from-env", "Bearer sk-from-secrets", "Bearer sk-arg"]


def test_no_key_for_openai_itself_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setattr("core.config.PROJECT_ROOT", tmp_path)
    with pytest.raises(LLMError, match="OPENAI_API_KEY") as info:
        get_llm("openai")
    assert info.value.kind == "auth"


def test_document_form_uses_the_completions_endpoint():
    with serve() as srv:
        llm, entries = _llm(srv)
        resp = llm.complete(LLMRequest(document="Write 5 reasons leading Aspirin to succeed.\n1.", max_tokens=200))
        assert [r["path"] for r in srv.requests] == ["/v1/completions"]
        assert srv.requests[0]["body"]["prompt"].startswith("Write 5 reasons")
    assert "5. " in resp.text
    assert entries[0]["document"] and entries[0]["messages"] is None
    assert entries[0]["params"]["endpoint"] == "completions"


def test_requests_really_run_concurrently():
    async def batch(llm):
        try:
            return await asyncio.gather(*(llm.acomplete(LLMRequest(messages=REASONS_MSGS, seed=i)) for i in range(16)))
        finally:
            await llm.aclose()

    with serve(delay=0.4) as srv:
        llm, entries = _llm(srv)
        out = asyncio.run(batch(llm))
        assert srv.count == 16 and srv.max_in_flight == 16
    assert len({r.text for r in out}) > 10          # seeded, varied content
    assert len(entries) == 16


def test_request_parameters_reach_the_server():
    with serve() as srv:
        llm, _ = _llm(srv, model="gpt-4o")
        llm.complete(LLMRequest(messages=REASONS_MSGS, temperature=0.3, max_tokens=77, stop=["\n\n"], seed=5))
        body = srv.requests[0]["body"]
    assert (body["model"], body["temperature"], body["max_tokens"], body["stop"], body["seed"]) == \
        ("gpt-4o", 0.3, 77, ["\n\n"], 5)
    assert body["messages"] == REASONS_MSGS
