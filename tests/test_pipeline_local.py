"""The real embedded model (Gemma 3 270M GGUF via llama.cpp) end to end for one item."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.store import connect
from core.store import llmlog
from core.store import synthetic as syn

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_generate_one_item_with_the_embedded_model(mirror_db_copy, tmp_path):
    db = mirror_db_copy
    # small budgets: the model runs at ~35 tokens/s on CI's CPUs
    cmd = [sys.executable, "-m", "core", "generate", "--db", str(db), "--n", "1", "--backend", "local",
           "--seed", "3", "--max-tokens", "48", "--example-budget", "900", "--run-id", "local1", "--no-progress"]
    env = {"CTGEN_RUNS_DIR": str(tmp_path / "runs")}
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, **env})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == "done" and result["done"] + result["failed"] == 1
    with connect(db) as con:
        trials = syn.list_synthetic(con, run_id="local1")
        failures = syn.list_failures(con, "local1")
        calls = llmlog.recent_calls(con, run_id="local1", limit=50)
    # the base model continued the rendered documents: every call is logged with its document
    assert calls and all(c["backend"] == "local" and c["document"] and c["messages"] is None for c in calls)
    assert all(c["completion_tokens"] <= 48 for c in calls if c["completion_tokens"] is not None)
    assert any(c["document"].rstrip().endswith("1.") for c in calls if c["purpose"] == "reasoning")
    if trials:
        (t,) = trials
        assert t["backend"] == "local" and len(t["reasons"]) == 5 and t["validation_status"] in ("ok", "warning", "invalid")
        assert t["meta"]["example_budget"] <= 900 and sum(e["tokens"] for e in t["meta"]["examples"]) <= 900
    else:
        (f,) = failures
        assert f["stage"] in ("reasoning", "generation") and f["reason"]
