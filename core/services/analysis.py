"""The Embeddings page's calls: analysis runs as background jobs (one job id per store and
parameters, so a rerun of the page finds the job it started), the synthetic sets (with how many of each
are usable), the stored results, the quality table and the records a map selection shows."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from core import jobs
from core.analysis import quality as Q
from core.analysis.quality import AnalysisParams
from core.store import embeddings as astore
from core.store import connect

REAL_SCOPES = Q.REAL_SCOPES
SYNTHETIC_RULES = Q.SYNTHETIC_RULES
RULE_TEXT = Q.RULE_TEXT
PROJECTIONS = Q.PROJECTIONS
quality_table = Q.quality_table
READ_WAIT_S = 10


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
                         "synthetic_rule": params.synthetic_rule,
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


def running(job: str) -> bool:
    s = state(job)
    return bool(s and s["active"])


def synthetic_sets(db: str | os.PathLike) -> list[dict[str, Any]]:
    """Every synthetic set: {source, n (all of it), usable}."""
    with connect(db, read_only=True, wait_s=READ_WAIT_S) as con:
        usable = dict(astore.synthetic_sources(con, "usable"))
        return [{"source": s, "n": n, "usable": usable.get(s, 0)} for s, n in astore.synthetic_sources(con, "all")]


def stored(db: str | os.PathLike, params: AnalysisParams, projections: Sequence[str] = ()) -> dict[str, Any]:
    """What the store holds for these parameters: {"quality", "quality_row", "projections"}."""
    return Q.stored(db, params, projections)


def records_for(db: str | os.PathLike, real_ids: Sequence[str], synthetic_ids: Sequence[str]
                ) -> tuple[dict[str, dict], dict[str, dict]]:
    """Real records by NCT id and synthetic rows by id (what a selection on the map shows)."""
    from core.store.trials import get_records

    with connect(db, read_only=True, wait_s=READ_WAIT_S) as con:
        return get_records(con, list(real_ids)), astore.synthetic_by_ids(con, list(synthetic_ids))
