"""Batch generation runs started from the app: each is its own process (`python -m core generate`),
detached in a new session so it outlives Streamlit reruns and page reloads; the page polls the
run's progress file (written by core.batch) and never waits on the process.

The API key, when the person typed one, reaches the child through its environment only: never its
command line (visible to every user of the machine), the launch file, the store or the log.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from core import config
from core.batch import new_run_id, read_progress, runs_dir

ACTIVE = ("starting", "running")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, default=str))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


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
        _write_json(d / "prompts.json", prompts)
        cmd += ["--prompts", str(d / "prompts.json")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_MININTERVAL": "2"}
    if api_key:
        env["OPENAI_API_KEY"] = api_key
    launch = {"run_id": rid, "db": str(Path(db).resolve()), "cmd": cmd, "created_at": time.time()}
    with open(d / "log.txt", "ab") as log:
        proc = subprocess.Popen(cmd, cwd=config.PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    launch["pid"] = proc.pid
    _write_json(d / "launch.json", launch)
    return rid


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.waitpid(pid, os.WNOHANG)  # reap our own finished child, else it lingers as a zombie
    except (ChildProcessError, OSError):
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except OSError:
        pass
    return True


def state(run_id: str) -> dict[str, Any]:
    """A run's live state: status ('starting', 'running', 'done', 'interrupted', 'failed'), n, done,
    failed, pending, cost_usd, fraction, and the log's tail when it failed."""
    launch = _read_json(runs_dir() / run_id / "launch.json")
    progress = read_progress(run_id) or {}
    out: dict[str, Any] = {"run_id": run_id, "n": progress.get("n"), "done": progress.get("done", 0),
                           "failed": progress.get("failed", 0), "pending": progress.get("pending"),
                           "cost_usd": progress.get("cost_usd", 0.0), "pid": launch.get("pid")}
    alive = _alive(launch.get("pid")) if launch else _alive(progress.get("pid"))
    status = progress.get("status")
    if status is None:
        status = "starting" if alive else ("failed" if launch else "unknown")
    elif status == "running" and not alive:
        status = "interrupted"   # killed, or crashed: re-running the same run id completes it
    out["status"] = status
    n = out["n"] or 0
    out["fraction"] = min(1.0, (out["done"] + out["failed"]) / n) if n else 0.0
    if status in ("failed", "interrupted"):
        out["log"] = log_tail(run_id)
    return out


def log_tail(run_id: str, max_chars: int = 4000) -> str:
    path = runs_dir() / run_id / "log.txt"
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - max_chars))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def cancel(run_id: str) -> bool:
    """Stop a run (SIGTERM to its process group). Its finished items stay; the same run id resumes it."""
    pid = _read_json(runs_dir() / run_id / "launch.json").get("pid")
    if not _alive(pid):
        return False
    try:
        os.killpg(pid, signal.SIGTERM)   # session leader: pgid == pid
    except ProcessLookupError:
        return False
    return True


def estimate(llm: Any, retrieval: Any, *, n: int, max_tokens: int, prompts: dict | None = None,
             reasons_tokens: int = 350) -> dict[str, Any]:
    """Cost estimate of n items like this one: exact prompt tokens of this retrieval's reasoning and
    generation prompts (with reasons of a typical length), replies at `max_tokens` at most."""
    from core.generation import build_prompt as generation_prompt
    from core.llm import LLMRequest, estimate_cost
    from core.reasoning import build_prompt as reasoning_prompt

    r_messages, r_document = reasoning_prompt(retrieval, prompts)
    typical = ["x " * (reasons_tokens // 5)] * 5
    g_messages, g_document, _ = generation_prompt(retrieval, typical, prompts)

    def prompt_tokens(messages: list[dict], document: str) -> int:
        req = LLMRequest(messages=messages) if llm.chat else LLMRequest(document=document)
        return llm.count_prompt_tokens(req)

    p_in = prompt_tokens(r_messages, r_document) + prompt_tokens(g_messages, g_document)
    typical_out = reasons_tokens + min(max_tokens, 1200)
    max_out = min(max_tokens, 1024) + max_tokens
    per_item = estimate_cost(llm.model, p_in, typical_out)
    per_item_max = estimate_cost(llm.model, p_in, max_out)
    return {
        "prompt_tokens_per_item": p_in, "completion_tokens_per_item": typical_out,
        "max_completion_tokens_per_item": max_out,
        "cost_per_item": per_item, "cost_total": None if per_item is None else per_item * n,
        "cost_total_max": None if per_item_max is None else per_item_max * n,
    }
