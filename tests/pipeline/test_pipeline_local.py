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

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.mark.slow
def test_schema_mode_end_to_end_with_the_embedded_model(mirror_db_copy, tmp_path, monkeypatch):
    """Schema mode (the default) on the real model: the trial parses, names the intended drug (the schema
    fixes it; the grammar enforces the schema) and carries no status field."""
    from core.pipeline.batch import run_batch
    from core.pipeline.schema import conformance, trial_schema
    from core.record import OUTCOME_FIELDS, SYNTHETIC_FIELDS

    monkeypatch.setenv("CTGEN_RUNS_DIR", str(tmp_path / "runs"))
    db = mirror_db_copy
    result = run_batch(db, 1, backend="local", seed=5, run_id="local-schema", example_budget_cap=700,
                       max_tokens=1024, timeout_s=600, valid_only=True, show_progress=False)
    with connect(db) as con:
        trials = syn.list_synthetic(con, run_id="local-schema")
        calls = llmlog.recent_calls(con, run_id="local-schema", limit=50)
    assert trials, f"no trial in {result['done'] + result['failed']} items: {syn.list_failures(con, 'local-schema')}"
    assert all(c["output_mode"] == "grammar" for c in calls if c["error"] is None)
    for t in trials:
        rec = t["record"]
        assert t["parse_format"] == "schema" and t["meta"]["output_mode"] == {"reasoning": "grammar",
                                                                              "generation": "grammar"}
        assert rec["interventions"][0]["name"] == t["intended_intervention"] and t["intervention_match"]
        assert all(rec.get(f) in (None, []) for f in OUTCOME_FIELDS)
        reply = json.loads(t["raw_text"])
        assert list(reply) == SYNTHETIC_FIELDS and conformance(reply, trial_schema(t["intended_intervention"])) == []
        assert len(t["reasons"]) == 5 and len(set(t["reasons"])) == 5
