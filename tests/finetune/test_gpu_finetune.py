"""benchmarks/gpu_finetune.py: the clear refusal without CUDA, and its code path run once on the CPU
(a tiny BERT, a few steps: proves the script runs end to end; it measures nothing)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_finetune.py"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def test_without_cuda_it_says_so_and_exits_3():
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so this holds on a GPU machine too
    p = _run("--json", env={"CUDA_VISIBLE_DEVICES": ""})
    assert p.returncode == 3, p.stderr
    assert "error: no CUDA device" in p.stderr
    assert "needs an NVIDIA GPU" in p.stderr and "Nothing was measured" in p.stderr
    last = json.loads(p.stdout.strip().splitlines()[-1])
    assert last == {"error": "no CUDA device", "cuda": False, "measured": False}


def test_cpu_smoke_run_of_both_setups():
    p = _run("--allow-cpu", "--tiny-model", "--samples", "160", "--val", "32", "--steps", "2", "--warmup", "1",
             "--eval-batches", "1", "--max-length", "64", "--json", env={"CUDA_VISIBLE_DEVICES": ""})
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["measured"] is False and out["goal_met"] is False  # a CPU run is never a measurement
    paper, ours = out["paper"], out["ours"]
    assert paper["steps"] == ours["steps"] == 2
    assert paper["batch"] == 8 and ours["batch"] == 32 and paper["dtype"] == "fp32" and ours["dtype"] == "bf16"
    assert paper["mean_padded_tokens_per_sample"] == 64  # padded to max length
    assert ours["mean_padded_tokens_per_sample"] <= 64
    for r in (paper, ours):
        assert r["train_samples_per_s"] > 0 and r["eval_samples_per_s"] > 0 and r["minutes_per_run"] > 0
    assert out["ratio"] == round(ours["train_samples_per_s"] / paper["train_samples_per_s"], 2)
