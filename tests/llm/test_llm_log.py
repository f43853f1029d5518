"""The llm_calls table: migration, log_call, recent_calls, usage_summary on a real DuckDB file."""
from __future__ import annotations

from core.store import connect
from core.store.llmlog import log_call, log_calls, recent_calls, usage_summary
from core.store.migrations import applied


def _entry(**kw):
    base = {"backend": "openai", "model": "gpt-4o-mini", "purpose": "reasoning", "run_id": "r1",
            "messages": [{"role": "user", "content": "Write 5 reasons"}], "document": None,
            "params": {"temperature": 1.0, "max_tokens": 64}, "response_text": "1. a 2. b 3. c 4. d 5. e",
            "prompt_tokens": 10, "completion_tokens": 20, "latency_s": 0.5, "cost_usd": 1.35e-5,
            "finish_reason": "stop", "error": None, "error_kind": None, "status": None, "attempt": 1,
            "created_at": "2026-01-02T03:04:05.678+00:00"}
    base.update(kw)
    return base


def test_migration_and_round_trip(tmp_path):
    db = tmp_path / "s.duckdb"
    with connect(db) as con:
        assert "020_llm_calls" in applied(con)
        log_call(con, _entry(attempt=1, error="RateLimitError: 429", error_kind="rate_limit", status=429,
                             response_text=None, prompt_tokens=None, completion_tokens=None, cost_usd=None))
        log_call(con, _entry(attempt=2))
        log_calls(con, [_entry(run_id="r2", purpose="generation", backend="local", model="gemma-3-270m-q4_k_m",
                               messages=None, document="Successful clinical trial example:", cost_usd=0.0,
                               created_at="2026-01-02T05:04:05+02:00")])
    with connect(db, read_only=True) as con:
        rows = recent_calls(con, run_id="r1")
        assert [r["attempt"] for r in rows] == [2, 1]           # newest first
        assert rows[1]["error_kind"] == "rate_limit" and rows[1]["status"] == 429
        assert rows[0]["messages"] == [{"role": "user", "content": "Write 5 reasons"}]
        assert rows[0]["params"] == {"temperature": 1.0, "max_tokens": 64}
        assert str(rows[0]["created_at"]) == "2026-01-02 03:04:05.678000"
        local = recent_calls(con, purpose="generation")
        assert len(local) == 1 and local[0]["document"].startswith("Successful") and local[0]["messages"] is None
        assert str(local[0]["created_at"]) == "2026-01-02 03:04:05"   # stored in UTC
        assert len(recent_calls(con, limit=2)) == 2
        summary = {(s["backend"], s["purpose"]): s for s in usage_summary(con)}
        r1 = summary[("openai", "reasoning")]
        assert (r1["calls"], r1["failed"], r1["prompt_tokens"], r1["completion_tokens"]) == (2, 1, 10, 20)
        assert r1["cost_usd"] == 1.35e-5 and r1["mean_latency_s"] == 0.5
        only = usage_summary(con, run_id="r2")
        assert [(s["backend"], s["purpose"], s["calls"], s["cost_usd"]) for s in only] == [("local", "generation", 1, 0.0)]
