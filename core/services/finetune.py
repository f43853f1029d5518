"""The Fine-tune page's calls: start a fine-tuning run or a Table 3 grid as a background job, list
them, and store results that finished while the store was busy."""
from __future__ import annotations

import os
from typing import Any

from core import jobs
from core.finetune import protocol as X


def start_run(db: str | os.PathLike, *, experiment: str, train: str | None, model: str,
              seeds: list[int] | tuple[int, ...] = X.DEFAULT_SEEDS, epochs: int | None = None,
              max_length: int | None = None, synthetic_ratio: float | None = None, ratio_size: int | None = None,
              synthetic_source: str | None = None, scrub_mode: str = "strict", json: bool = True) -> str:
    """One experiment cell (`python -m core finetune ...`) in the background; returns its run id,
    which is also its job id and the id of the stored run."""
    ratio = X.normalize_ratio(synthetic_ratio)
    if train is None:
        train = "hybrid" if ratio is None or 0 < ratio < 1 else "synthetic" if ratio >= 1 else "real"
    run_id = X.new_run_id(experiment, train, ratio)
    params = {"experiment": experiment, "train": train, "synthetic_ratio": synthetic_ratio,
              "ratio_size": ratio_size, "model": model, "seeds": list(seeds), "epochs": epochs,
              "max_length": max_length, "synthetic_source": synthetic_source, "scrub_mode": scrub_mode,
              "json": json, "run_id": run_id}
    return jobs.start(jobs.JobSpec(kind="finetune", db=db, params=params, job_id=run_id))


def start_table3(db: str | os.PathLike, *, model: str, seeds: list[int] | tuple[int, ...] = X.DEFAULT_SEEDS,
                 **options: Any) -> str:
    """The whole Table 3 grid (`python -m core experiment table3 ...`) in the background."""
    params = {"model": model, "seeds": list(seeds), **options}
    return jobs.start(jobs.JobSpec(kind="table3", db=db, params=params))


def list_runs(db: str | os.PathLike) -> list[jobs.Job]:
    """Fine-tuning and Table 3 jobs of this store, newest first."""
    return [j for j in jobs.list_jobs(db=db) if j.kind in ("finetune", "table3")]


def store_pending(db: str | os.PathLike) -> list[str]:
    """Store finished runs whose result file never reached the store (the store stayed busy past the
    child's wait). Idempotent: store_run replaces by run_id."""
    done = []
    for j in jobs.list_jobs(kind="finetune", db=db):
        if j.state == "done" and j.has_result and not j.status.get("stored"):
            data = jobs.read_result(j.id)
            if not data:
                continue
            X.store_run(db, data["run"], data["per_seed"], wait_s=10)
            jobs.JobContext(j.dir).update(stored=True)
            done.append(j.id)
    return done




def run_view(j: jobs.Job) -> dict[str, Any]:
    """A job as the runs table shows it."""
    p = j.params
    ratio = p.get("synthetic_ratio")
    return {"run_id": j.id, "kind": j.kind, "status": j.state, "progress": j.progress, "fraction": j.fraction,
            "model": j.status.get("model_used") or p.get("model") or "",
            "experiment": p.get("experiment") or ("table3" if j.kind == "table3" else ""),
            "training": (f"{float(ratio):.0%} synthetic" if ratio is not None else p.get("train") or ""),
            "started_at": j.status.get("started_at"), "finished_at": j.status.get("finished_at"),
            "duration_s": j.duration_s, "stored": bool(j.status.get("stored")), "error": j.error}


def run_views(db: str | os.PathLike) -> list[dict[str, Any]]:
    return [run_view(j) for j in list_runs(db)]


def any_active(db: str | os.PathLike) -> bool:
    return any(j.active for j in list_runs(db))


cancel = jobs.cancel
log_tail = jobs.log_tail
ACTIVE = jobs.ACTIVE
