"""`generate --batch-api` against tests/servers/batch_server.py (a real local stand-in of /v1/files and
/v1/batches, driven through the openai SDK): success, a failed line, an expired batch, kill -9 and
resume. Reasoning and generation go as two batches; costs are at batch prices."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from core.llm.pricing import BATCH_DISCOUNT, estimate_cost
from core.pipeline.batch import run_batch
from core.store import connect
from core.store import llmlog
from core.store import synthetic as syn
from tests.servers.batch_server import serve

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-test-BATCH-7777"
N = 4


@pytest.fixture(autouse=True)
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CTGEN_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return tmp_path / "runs"


def _run(db: Path, srv, run_id: str, **kw):
    return run_batch(db, N, backend="openai", base_url=srv.base_url, api_key=KEY, seed=5, run_id=run_id,
                     max_tokens=1024, show_progress=False, batch_api=True, poll_s=0.02, **kw)


def _rows(db: Path, run_id: str) -> tuple[list[dict], list[dict], list[dict]]:
    with connect(db) as con:
        return (syn.list_synthetic(con, run_id=run_id), syn.list_failures(con, run_id),
                llmlog.recent_calls(con, run_id=run_id, limit=1000))


def test_two_batches_one_per_stage_at_batch_prices(mirror_db_copy, runs_dir):
    with serve(polls_to_finish=2) as srv:
        result = _run(mirror_db_copy, srv, "ok")
        batches = srv.batches
        answered = srv.answered
        lines = [json.loads(x) for b in batches for x in srv.state.content[b["input_file_id"]].decode().splitlines()]
    assert result["status"] == "done" and (result["done"], result["failed"]) == (N, 0)
    # the lines ask for structured output as the online path does (json_schema, strict)
    assert {ln["body"]["response_format"]["type"] for ln in lines} == {"json_schema"}
    assert all(ln["url"] == "/v1/chat/completions" and ln["body"]["seed"] is not None for ln in lines)
    assert [b["metadata"]["purpose"] for b in batches] == ["reasoning", "generation"]
    assert [b["request_counts"]["total"] for b in batches] == [N, N]
    assert len(answered) == len(set(answered)) == 2 * N
    trials, failures, calls = _rows(mirror_db_copy, "ok")
    assert sorted(t["item_index"] for t in trials) == list(range(N)) and not failures
    assert all(t["record"]["brief_title"] for t in trials)
    ok_calls = [c for c in calls if not c.get("error")]
    assert len(ok_calls) == 2 * N
    for c in ok_calls:  # half the standard price
        full = estimate_cost(c["model"], c["prompt_tokens"], c["completion_tokens"])
        assert c["cost_usd"] == pytest.approx(full * BATCH_DISCOUNT) and c["cost_usd"] > 0
    assert result["cost_usd"] == pytest.approx(sum(c["cost_usd"] for c in ok_calls))
    # the batch ids are kept with the run, and the key nowhere
    state = json.loads((runs_dir / "ok" / "batch-api" / "state.json").read_text())
    assert [b["id"] for b in state["batches"]] == [b["id"] for b in batches]
    assert KEY not in (runs_dir / "ok" / "batch-api" / "state.json").read_text()
    assert KEY not in json.dumps(calls, default=str)


def test_a_failed_line_is_sent_again_and_a_permanent_failure_is_recorded(mirror_db_copy):
    seen: Counter = Counter()
    first: list[str] = []

    def fail(cid: str) -> bool:
        seen[cid] += 1
        if not first and cid.startswith("reasoning"):
            first.append(cid)
        return cid == first[0] and seen[cid] == 1  # the first reasoning line fails once (HTTP 500)

    with serve(polls_to_finish=1, fail_lines=fail) as srv:
        result = _run(mirror_db_copy, srv, "retry")
        answered = srv.answered
    assert (result["done"], result["failed"]) == (N, 0)
    assert seen[first[0]] == 2 and answered.count(first[0]) == 1
    assert len(answered) == len(set(answered)) == 2 * N
    _, _, calls = _rows(mirror_db_copy, "retry")
    assert [c["error_kind"] for c in calls if c.get("error")] == ["server"]

    always: list[str] = []

    def fail_always(cid: str) -> bool:
        if not always and cid.startswith("reasoning"):
            always.append(cid)
        return cid == always[0]

    with serve(polls_to_finish=1, fail_lines=fail_always) as srv:
        result = _run(mirror_db_copy, srv, "broken", max_retries=1)
    assert (result["done"], result["failed"]) == (N - 1, 1)
    trials, (failure,), _ = _rows(mirror_db_copy, "broken")
    assert failure["stage"] == "reasoning" and "HTTP 500" in failure["reason"]
    assert failure["item_index"] not in {t["item_index"] for t in trials}


def test_an_expired_batch_keeps_its_answers_and_resends_the_rest(mirror_db_copy):
    with serve(polls_to_finish=1, expire_first=1, expire_after=2) as srv:
        result = _run(mirror_db_copy, srv, "expired")
        batches = srv.batches
        answered = srv.answered
    assert (result["done"], result["failed"]) == (N, 0)
    assert batches[0]["status"] == "expired" and batches[0]["request_counts"] == {"total": N, "completed": 2, "failed": 2}
    resent = [b for b in batches[1:] if b["metadata"]["purpose"] == "reasoning"]
    assert sum(b["request_counts"]["total"] for b in resent) == N - 2  # only the unanswered lines
    assert len(answered) == len(set(answered)) == 2 * N
    _, _, calls = _rows(mirror_db_copy, "expired")
    assert sum(1 for c in calls if c.get("error_kind") == "timeout") == N - 2


def _cli(db: Path, base_url: str, run_id: str, runs: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "core", "generate", "--db", str(db), "--n", str(N), "--backend", "openai",
         "--base-url", base_url, "--api-key", KEY, "--seed", "5", "--run-id", run_id, "--max-tokens", "1024",
         "--batch-api", "--poll-s", "0.05", "--no-progress"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "CTGEN_RUNS_DIR": str(runs)})


def _kill_when(proc: subprocess.Popen, cond, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "timed out waiting for the client"
        time.sleep(0.05)
    time.sleep(0.3)  # let it poll the held batch a few times
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_kill_9_during_each_batch_and_resume(mirror_db_copy, runs_dir):
    db = mirror_db_copy
    with serve(polls_to_finish=1, hold=lambda b: True) as srv:
        # 1: killed while the reasoning batch runs
        p = _cli(db, srv.base_url, "k9", runs_dir)
        _kill_when(p, lambda: len(srv.batches) == 1)
        assert p.returncode == -signal.SIGKILL
        state = json.loads((runs_dir / "k9" / "batch-api" / "state.json").read_text())
        assert state["batches"][0]["id"] == srv.batches[0]["id"]
        # 2: rerun; the reasoning batch is found again (not resent) and finishes; killed during generation
        srv.hold = lambda b: b["metadata"]["purpose"] == "generation"
        p = _cli(db, srv.base_url, "k9", runs_dir)
        _kill_when(p, lambda: len(srv.batches) == 2)
        # 3: rerun to the end
        srv.hold = None
        p = _cli(db, srv.base_url, "k9", runs_dir)
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        batches, answered = srv.batches, srv.answered
    assert json.loads(out.strip().splitlines()[-1])["done"] == N
    assert [b["metadata"]["purpose"] for b in batches] == ["reasoning", "generation"]  # none created twice
    assert len(answered) == len(set(answered)) == 2 * N                                  # none paid twice
    trials, failures, _ = _rows(db, "k9")
    assert sorted(t["item_index"] for t in trials) == list(range(N)) and not failures   # none lost or doubled


def test_kill_between_batch_create_and_state_save_finds_the_batch_again(mirror_db_copy, runs_dir):
    db = mirror_db_copy
    with serve(polls_to_finish=1, hold=lambda b: True) as srv:
        p = _cli(db, srv.base_url, "k9b", runs_dir)
        _kill_when(p, lambda: len(srv.batches) == 1)
        # as if the kill came right after batches.create, before its id was written down
        path = runs_dir / "k9b" / "batch-api" / "state.json"
        state = json.loads(path.read_text())
        state["batches"][0].update(id=None, status="creating")
        path.write_text(json.dumps(state))
        srv.hold = None
        p = _cli(db, srv.base_url, "k9b", runs_dir)
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        batches, answered = srv.batches, srv.answered
    assert [b["metadata"]["purpose"] for b in batches] == ["reasoning", "generation"]  # found, not recreated
    assert len(answered) == len(set(answered)) == 2 * N
    trials, failures, _ = _rows(db, "k9b")
    assert sorted(t["item_index"] for t in trials) == list(range(N)) and not failures
    assert json.loads(path.read_text())["batches"][0]["id"] == batches[0]["id"]
