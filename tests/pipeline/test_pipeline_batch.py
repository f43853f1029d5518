"""`generate` end to end through the openai SDK against tests/servers/openai_server.py (a real HTTP server):
injected faults, recorded failures, kill -9 and resume, the key never stored."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.pipeline.batch import read_progress, run_batch
from core.cli import main as cli_main
from core.store import connect
from core.store import llmlog
from core.store import synthetic as syn
from tests.servers.openai_server import serve

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-test-SECRET-4242"


@pytest.fixture(autouse=True)
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CTGEN_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return tmp_path / "runs"


def _store_text(db: Path) -> str:
    """Everything the pipeline wrote, as text (to look for the key)."""
    with connect(db) as con:
        parts = [syn.list_synthetic(con), syn.list_failures(con), syn.list_runs(con),
                 llmlog.recent_calls(con, limit=10_000)]
    return json.dumps(parts, default=str)


def test_faults_are_retried_and_malformed_replies_recorded(mirror_db_copy, runs_dir):
    db = mirror_db_copy
    # concurrency 1 makes the plan hit known requests: 429 and 500 are retried by the client; then
    # three replies in a row without reasons make item 0 fail at the reasoning stage (3 attempts).
    plan = ["429", "500", "bad_content", "bad_content", "bad_content"]
    with serve(delay=0.0, faults=plan) as srv:
        result = run_batch(db, 3, backend="openai", base_url=srv.base_url, api_key=KEY, concurrency=1, seed=2,
                           run_id="faulty", max_tokens=1024, show_progress=False)
    assert result["status"] == "done" and (result["done"], result["failed"]) == (2, 1)
    with connect(db) as con:
        (failure,) = syn.list_failures(con, "faulty")
        trials = syn.list_synthetic(con, run_id="faulty")
        calls = llmlog.recent_calls(con, run_id="faulty", limit=100)
    assert failure["item_index"] == 0 and failure["stage"] == "reasoning" and failure["attempts"] == 3
    assert "malformed" in failure["reason"] and failure["error_kind"] == "format"
    assert failure["intended_intervention"] and len(failure["example_nct_ids"]) == 3
    assert sorted(t["item_index"] for t in trials) == [1, 2]
    kinds = [c.get("error_kind") for c in calls]
    assert "rate_limit" in kinds and "server" in kinds
    assert {c["purpose"] for c in calls} == {"reasoning", "generation"}
    for t in trials:
        assert t["validation_status"] in ("ok", "warning", "invalid") and set(t["validation"]) >= {
            "parses", "required_fields", "intervention", "label_leak", "near_copy"}
        assert t["intervention_match"] and t["generated_intervention"] == t["intended_intervention"]
        assert len(t["reasons"]) == 5 and len(t["example_nct_ids"]) == 3
        assert t["prompt_hash"] == result_run(db, "faulty")["prompt_hash"]
        assert t["record"]["brief_title"]
    assert KEY not in _store_text(db)
    assert KEY not in json.dumps(read_progress("faulty"))


def result_run(db: Path, run_id: str) -> dict:
    with connect(db) as con:
        return syn.get_run(con, run_id)


def test_transient_faults_under_concurrency_lose_nothing(mirror_db_copy):
    db = mirror_db_copy
    plan = ["429", "500", "502", "503", "drop", "malformed", "hang", "429"]
    with serve(delay=0.05, faults=plan, hang_s=20) as srv:
        result = run_batch(db, 10, backend="openai", base_url=srv.base_url, api_key=KEY, concurrency=4, seed=9,
                           run_id="busy", timeout_s=2.0, show_progress=False)
        assert srv.max_in_flight > 1
    assert (result["done"], result["failed"]) == (10, 0)
    with connect(db) as con:
        trials = syn.list_synthetic(con, run_id="busy")
        run = syn.get_run(con, "busy")
    assert sorted(t["item_index"] for t in trials) == list(range(10))
    assert run["status"] == "done" and run["done"] == 10 and run["params"]["concurrency"] == 4
    assert "api_key" not in run["params"] and run["prompts"]["reasoning"]["context"].startswith("You are now")
    assert read_progress("busy")["done"] == 10


def _generate_cmd(db: Path, base_url: str, run_id: str, n: int, concurrency: int) -> list[str]:
    return [sys.executable, "-m", "core", "generate", "--db", str(db), "--n", str(n), "--backend", "openai",
            "--base-url", base_url, "--api-key", KEY, "--concurrency", str(concurrency), "--seed", "4",
            "--run-id", run_id, "--max-tokens", "1024", "--no-progress"]


def test_kill_9_then_resume_completes_without_duplicates(mirror_db_copy, tmp_path, runs_dir):
    db = mirror_db_copy
    n = 12
    env = {**os.environ, "CTGEN_RUNS_DIR": str(runs_dir)}
    with serve(delay=0.25) as srv:
        proc = subprocess.Popen(_generate_cmd(db, srv.base_url, "crash", n, 2), cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            p = read_progress("crash")
            if p and p["done"] >= 3:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        with connect(db) as con:
            before = syn.done_items(con, "crash")
            assert syn.get_run(con, "crash")["status"] == "running"   # it never got to say otherwise
        assert 3 <= len(before) < n
        again = subprocess.run(_generate_cmd(db, srv.base_url, "crash", n, 4), cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr[-2000:]
        assert json.loads(again.stdout.strip().splitlines()[-1])["done"] == n
    with connect(db) as con:
        trials = syn.list_synthetic(con, run_id="crash")
        run = syn.get_run(con, "crash")
    ids = [t["id"] for t in trials]
    assert len(ids) == n and len(set(ids)) == n
    assert sorted(t["item_index"] for t in trials) == list(range(n))
    assert run["status"] == "done" and run["done"] == n and run["failed"] == 0
    stats = subprocess.run([sys.executable, "-m", "core", "stats", "--db", str(db), "--json"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert stats.returncode == 0 and json.loads(stats.stdout)["synthetic"] == n


def test_items_are_deterministic_per_run_seed(mirror_db_copy):
    db = mirror_db_copy
    with serve() as srv:
        a = run_batch(db, 4, backend="openai", base_url=srv.base_url, api_key=KEY, concurrency=4, seed=21,
                      run_id="a", show_progress=False)
        b = run_batch(db, 4, backend="openai", base_url=srv.base_url, api_key=KEY, concurrency=1, seed=21,
                      run_id="b", show_progress=False)
    assert a["done"] == b["done"] == 4
    with connect(db) as con:
        def plan(run_id):
            return sorted((t["item_index"], t["intended_intervention"], t["intended_label"], tuple(t["example_nct_ids"]))
                          for t in syn.list_synthetic(con, run_id=run_id))
        assert plan("a") == plan("b")


def test_cli_usage_errors_exit_2(mirror_db_copy, capsys):
    db = str(mirror_db_copy)
    with serve() as srv:
        base = ["generate", "--db", db, "--backend", "openai", "--base-url", srv.base_url, "--api-key", KEY]
        assert cli_main(base + ["--n", "1", "--intervention", "not a drug at all"]) == 2
        assert "not a DrugBank drug" in capsys.readouterr().err
        assert cli_main(base + ["--n", "1", "--intervention", "Cisplatin", "--label", "0", "--seed", "1",
                                "--run-id", "r"]) == 0
        capsys.readouterr()
        assert cli_main(base + ["--n", "2", "--seed", "2", "--run-id", "r"]) == 2
        assert "started with seed=1" in capsys.readouterr().err
        assert cli_main(base + ["--n", "0"]) == 2
    with pytest.raises(SystemExit) as exc:
        cli_main(["generate", "--db", db, "--n", "1", "--label", "5"])
    assert exc.value.code == 2
    assert cli_main(["generate", "--db", db, "--n", "1", "--backend", "openai"]) == 2   # no key, no base URL
    assert "API key" in capsys.readouterr().err
    with connect(db) as con:
        (t,) = syn.list_synthetic(con, run_id="r")
    assert (t["intended_intervention"], t["intended_label"]) == ("Cisplatin", 0)


def test_page_api_one_trial_and_cost_estimate(mirror_db_copy):
    """What the Generate page calls: retrieve, reason, generate (blocking forms), and the estimate."""
    from core.pipeline.batch import estimate
    from core.pipeline.generation import generate
    from core.llm import get_llm
    from core.pipeline.reasoning import reason
    from core.pipeline.retrieval import retrieve

    est = estimate(mirror_db_copy, 100, model="gpt-4o-mini", intervention="Cisplatin", label=1, max_tokens=1000)
    assert est["prompt_tokens"] > 100 * 3 * 50 and est["completion_tokens_max"] == 100 * 2000
    assert est["cost_usd"] > 0 and est["sampled_items"] == 5
    with serve() as srv:
        llm = get_llm("openai", base_url=srv.base_url, api_key=KEY)
        with connect(mirror_db_copy) as con:
            r = retrieve(con, intervention="Cisplatin", label=1, seed=1, count_tokens=llm.count_tokens)
        reasoning = reason(llm, r, seed=1)
        gen = generate(llm, r, reasoning.reasons, seed=2)
    assert len(reasoning.reasons) == 5 and gen.intervention_match and gen.generated_intervention == "Cisplatin"
    prompt = srv.requests[-1]["body"]["messages"][-1]["content"]
    assert "Here are five reasons that could lead to the success of clinical trials of Cisplatin:" in prompt
    assert reasoning.reasons[0] in prompt and prompt.count("Successful clinical trial example: {") == 3
