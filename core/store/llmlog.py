"""Every LLM call (each attempt, success or failure): prompt, response, model, parameters, usage,
latency, cost estimate. Filled from core.llm's `on_call` entries; never holds an API key
(core.llm scrubs the key out of every string before it gets here)."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import duckdb


_COLUMNS = ["created_at", "backend", "model", "purpose", "run_id", "attempt", "messages", "document", "params",
            "response_text", "prompt_tokens", "completion_tokens", "latency_s", "cost_usd", "finish_reason",
            "error", "error_kind", "status", "output_mode"]
_JSON = {"messages", "params"}


def _row(entry: dict[str, Any]) -> list[Any]:
    row = []
    for col in _COLUMNS:
        value = entry.get(col)
        if col in _JSON and value is not None:
            value = json.dumps(value)
        elif col == "created_at":
            value = _utc(value)
        row.append(value)
    return row


def _utc(value: Any) -> datetime:
    if value is None:
        return datetime.now(timezone.utc).replace(tzinfo=None)
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def log_call(con: duckdb.DuckDBPyConnection, entry: dict[str, Any]) -> None:
    """Store one `on_call` entry from core.llm (unknown keys are ignored)."""
    log_calls(con, [entry])


def log_calls(con: duckdb.DuckDBPyConnection, entries: list[dict[str, Any]]) -> None:
    if not entries:
        return
    # One INSERT of many rows: DuckDB's executemany runs a statement per row (~1.7 ms each).
    one = "(" + ", ".join("?" for _ in _COLUMNS) + ")"
    for start in range(0, len(entries), 200):
        chunk = entries[start:start + 200]
        con.execute(f"INSERT INTO llm_calls ({', '.join(_COLUMNS)}) VALUES {', '.join([one] * len(chunk))}",
                    [v for e in chunk for v in _row(e)])


def _dicts(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    out = []
    for values in cur.fetchall():
        rec = dict(zip(names, values))
        for col in _JSON:
            if isinstance(rec.get(col), str):
                rec[col] = json.loads(rec[col])
        out.append(rec)
    return out


def recent_calls(con: duckdb.DuckDBPyConnection, run_id: str | None = None, limit: int = 100,
                 purpose: str | None = None) -> list[dict[str, Any]]:
    """The latest calls, newest first (optionally of one run and/or purpose)."""
    where, params = [], []
    if run_id is not None:
        where.append("run_id = ?")
        params.append(run_id)
    if purpose is not None:
        where.append("purpose = ?")
        params.append(purpose)
    sql = "SELECT * FROM llm_calls" + (f" WHERE {' AND '.join(where)}" if where else "")
    sql += " ORDER BY id DESC LIMIT ?"
    return _dicts(con.execute(sql, [*params, int(limit)]))


def usage_summary(con: duckdb.DuckDBPyConnection, run_id: str | None = None) -> list[dict[str, Any]]:
    """Per backend/model/purpose: calls, failed attempts, tokens, cost, mean latency."""
    where = "WHERE run_id = ?" if run_id is not None else ""
    sql = f"""
        SELECT backend, model, purpose,
               count(*) AS calls,
               count(*) FILTER (WHERE error IS NOT NULL) AS failed,
               coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
               coalesce(sum(completion_tokens), 0) AS completion_tokens,
               sum(cost_usd) AS cost_usd,
               avg(latency_s) FILTER (WHERE error IS NULL) AS mean_latency_s
        FROM llm_calls {where}
        GROUP BY ALL ORDER BY backend, model, purpose
    """
    return _dicts(con.execute(sql, [run_id] if run_id is not None else []))


def db_logger(db: str | Path | None = None) -> Callable[[dict[str, Any]], None]:
    """An `on_call` hook that writes each entry to the store with its own short connection
    (the store is single-writer across processes: never hold it between calls)."""
    from core.store import connect

    def hook(entry: dict[str, Any]) -> None:
        with connect(db) as con:
            log_call(con, entry)

    return hook
