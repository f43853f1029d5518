"""The Generate page's calls: batches of the pipeline as background jobs (the job id is the run id,
so starting the same run id again resumes it)."""
from __future__ import annotations

import os
from typing import Any

from core import jobs
from core.jobs.background import write_json_atomic
from core.pipeline.batch import new_run_id

ACTIVE = jobs.ACTIVE


def start_batch(db: str | os.PathLike, *, api_key: str | None = None, run_id: str | None = None,
                prompts: dict[str, dict[str, Any]] | None = None, **options: Any) -> str:
    """`python -m core generate ...` in the background; returns the run id. `options` are the
    command's flags (n, backend, model, concurrency, seed, ...). `prompts`: overrides of the paper's
    prompts ({stage: {part: text}}), handed over as a file. The API key reaches the child through its
    environment only."""
    rid = run_id or new_run_id()
    params = {k: v for k, v in options.items() if v not in (None, "")}
    params["run_id"] = rid
    if prompts:
        d = jobs.job_dir(rid)
        d.mkdir(parents=True, exist_ok=True)
        write_json_atomic(d / "prompts.json", prompts)
        params["prompts"] = str(d / "prompts.json")
    env = {"OPENAI_API_KEY": api_key} if api_key else None
    return jobs.start(jobs.JobSpec(kind="generate", db=db, params=params, job_id=rid, env=env))


def batch_state(run_id: str) -> dict[str, Any]:
    """A batch's live state: status (the job's: queued/running/done/failed/cancelled), n, done, failed,
    pending, cost_usd, fraction, and the log's tail when it failed."""
    j = jobs.status(run_id)
    p = j.progress if j else {}
    out: dict[str, Any] = {"run_id": run_id, "status": j.state if j else "unknown", "n": p.get("n"),
                           "done": p.get("done", 0), "failed": p.get("failed", 0), "pending": p.get("pending"),
                           "cost_usd": p.get("cost_usd", 0.0), "error": j.error if j else None}
    n = out["n"] or 0
    out["fraction"] = min(1.0, (out["done"] + out["failed"]) / n) if n else 0.0
    if out["status"] in ("failed", "cancelled"):
        out["log"] = jobs.log_tail(run_id, 4000)
    return out


def list_batches(db: str | os.PathLike) -> list[dict[str, Any]]:
    """Every batch of this store started as a job, newest first (they survive page reloads)."""
    return [batch_state(j.id) for j in jobs.list_jobs(kind="generate", db=db)]


def cancel(run_id: str) -> bool:
    """Stop a batch. Its finished items stay; the same run id resumes it."""
    return jobs.cancel(run_id)
