"""The Embeddings page's calls: analysis runs as background jobs (one job id per store and
parameters, so a rerun of the page finds the job it started) and the stored results."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from core import jobs
from core.analysis.quality import AnalysisParams


def job_id(db: str | os.PathLike, params: AnalysisParams, projections: Sequence[str], each_set: bool) -> str:
    body = json.dumps({"db": str(Path(db).resolve()), "p": asdict(params), "proj": sorted(projections),
                       "each": each_set}, sort_keys=True)
    return f"analysis-{hashlib.sha256(body.encode()).hexdigest()[:16]}"


def start(db: str | os.PathLike, params: AnalysisParams, projections: Sequence[str] = (),
          each_set: bool = False, recompute: bool = False) -> str:
    """`python -m core analyze` for these parameters as a job; one already running is not started twice."""
    p: dict[str, Any] = {"pairs": params.pairs, "seed": params.seed, "encoder": params.encoder,
                         "real": params.real_scope, "max_real": params.max_real,
                         "max_synthetic": params.max_synthetic, "copy_threshold": params.copy_threshold,
                         "synthetic_source": params.synthetic_source, "projection": list(projections),
                         "each_set": each_set, "recompute": recompute}
    return jobs.start(jobs.JobSpec(kind="analyze", db=db, params=p,
                                   job_id=job_id(db, params, projections, each_set)))


def state(job: str) -> dict[str, Any] | None:
    """{state (queued/running/done/failed/cancelled), stage, fraction, message}, or None if never run."""
    j = jobs.status(job)
    if j is None:
        return None
    message = j.progress.get("message") or ""
    if j.state == "failed":
        message = j.error or message
        tail = jobs.log_tail(job, 1500)
        if tail and "Traceback" in tail:
            message = f"{message}\n{tail}"
    return {"state": j.state, "active": j.active, "stage": j.progress.get("stage") or "",
            "fraction": j.fraction, "message": message}
