"""Batch generation runs started from the app: each is its own process (`python -m core generate`),
detached in a new session so it outlives Streamlit reruns and page reloads; the page polls the
run's progress file (written by core.pipeline.batch) and never waits on the process.

The API key, when the person typed one, reaches the child through its environment only: never its
command line (visible to every user of the machine), the launch file, the store or the log.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from core.jobs import background
from core.jobs.background import alive, read_json, signal_group, spawn, write_json_atomic
from core.pipeline.batch import new_run_id, read_progress
from core.config import runs_dir

ACTIVE = ("starting", "running")


def command(db: str | Path, *, n: int, run_id: str, intervention: str | None = None, label: int | None = None,
            backend: str = "local", base_url: str | None = None, model: str | None = None, concurrency: int = 1,
            seed: int | None = None, max_tokens: int | None = None, temperature: float | None = None,
            rule: str | None = None) -> list[str]:
    """The `python -m core generate ...` command line (flags exactly as the CLI names them)."""
    cmd = [sys.executable, "-m", "core", "generate", "--db", str(Path(db).resolve()), "--n", str(int(n)),
           "--run-id", run_id, "--backend", backend, "--concurrency", str(int(concurrency))]
    for flag, value in (("--intervention", intervention), ("--label", label), ("--base-url", base_url),
                        ("--model", model), ("--seed", seed), ("--max-tokens", max_tokens),
                        ("--temperature", temperature), ("--rule", rule)):
        if value not in (None, ""):
            cmd += [flag, str(value)]
    return cmd


def start(db: str | Path, *, api_key: str | None = None, run_id: str | None = None,
          prompts: dict[str, dict[str, Any]] | None = None, **options: Any) -> str:
    """Launch a batch in the background; returns its run id. `prompts`: overrides of the paper's
    prompts ({stage: {part: text}}), handed over as a file (`--prompts`)."""
    rid = run_id or new_run_id()
    d = runs_dir() / rid
    d.mkdir(parents=True, exist_ok=True)
    cmd = command(db, run_id=rid, **options)
    if prompts:
        write_json_atomic(d / "prompts.json", prompts)
        cmd += ["--prompts", str(d / "prompts.json")]
    env = {"OPENAI_API_KEY": api_key} if api_key else None
    launch = {"run_id": rid, "db": str(Path(db).resolve()), "cmd": cmd, "created_at": time.time()}
    launch["pid"] = spawn(cmd, d / "log.txt", env)
    write_json_atomic(d / "launch.json", launch)
    return rid


def state(run_id: str) -> dict[str, Any]:
    """A run's live state: status ('starting', 'running', 'done', 'interrupted', 'failed'), n, done,
    failed, pending, cost_usd, fraction, and the log's tail when it failed."""
    launch = read_json(runs_dir() / run_id / "launch.json")
    progress = read_progress(run_id) or {}
    out: dict[str, Any] = {"run_id": run_id, "n": progress.get("n"), "done": progress.get("done", 0),
                           "failed": progress.get("failed", 0), "pending": progress.get("pending"),
                           "cost_usd": progress.get("cost_usd", 0.0), "pid": launch.get("pid")}
    running = alive(launch.get("pid")) if launch else alive(progress.get("pid"))
    status = progress.get("status")
    if status is None:
        status = "starting" if running else ("failed" if launch else "unknown")
    elif status == "running" and not running:
        status = "interrupted"   # killed, or crashed: re-running the same run id completes it
    out["status"] = status
    n = out["n"] or 0
    out["fraction"] = min(1.0, (out["done"] + out["failed"]) / n) if n else 0.0
    if status in ("failed", "interrupted"):
        out["log"] = log_tail(run_id)
    return out


def log_tail(run_id: str, max_chars: int = 4000) -> str:
    return background.log_tail(runs_dir() / run_id / "log.txt", max_chars)


def cancel(run_id: str) -> bool:
    """Stop a run (SIGTERM to its process group). Its finished items stay; the same run id resumes it."""
    pid = read_json(runs_dir() / run_id / "launch.json").get("pid")
    if not alive(pid):
        return False
    return signal_group(pid)
