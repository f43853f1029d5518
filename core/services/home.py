"""What the Home page calls: the sample-data import, and the offer to fetch full ClinicalTrials.gov records
for labelled trials that only have a TOP row (a quick probe of the API first; `fetch-ctgov` runs detached,
so the page never waits for it). Counts come from core.store.browse.overview through core.ui's cached reads."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from core import config
from core import jobs

PROBE_TIMEOUT_S = 2.0


def sample_data_job(db: str | os.PathLike) -> str:
    """The job id of this store's sample-data import: one per store, so a reload finds it."""
    return f"sample-data-{hashlib.sha256(str(Path(db).resolve()).encode()).hexdigest()[:12]}"


def start_sample_data(db: str | os.PathLike) -> str:
    """The whole data mirror into the store (`python -m core sample-data`) as a background job; the
    import is one transaction, so a failed or cancelled one leaves the store as it was."""
    return jobs.start(jobs.JobSpec(kind="sample-data", db=db, params={}, job_id=sample_data_job(db)))


def sample_data_status(db: str | os.PathLike) -> jobs.Job | None:
    """The store's sample-data job (state, progress: stage, done, total), or None if never started."""
    return jobs.status(sample_data_job(db))


@dataclass(frozen=True)
class FetchOffer:
    missing: int          # labelled trials without a full record
    reachable: bool       # the API answered the probe
    detail: str           # what the probe saw
    base_url: str
    command: str          # the same fetch from a terminal


def fetch_offer(db: str | os.PathLike, missing: int, timeout: float = PROBE_TIMEOUT_S) -> FetchOffer:
    """Whether full records for `missing` labelled trials can be fetched from here (one request, `timeout`
    seconds at most; no request when nothing is missing)."""
    from core.ingest.ctgov_api import probe

    base = config.ctgov_api_base()
    command = f"python -m core fetch-ctgov --db {db} --labelled"
    if missing == 0:
        return FetchOffer(0, False, "every labelled trial has a full record", base, command)
    ok, detail = probe(base, timeout)
    return FetchOffer(missing, ok, detail, base, command)


FETCH_JOB = "fetch-ctgov-labelled"  # one fetch at a time: a second click finds the running one


def start_fetch(db: str | os.PathLike) -> dict:
    """Start `fetch-ctgov --labelled` for this store as a background job (core.jobs)."""
    jobs.start(jobs.JobSpec(kind="fetch-ctgov", db=db, params={"labelled": True}, job_id=FETCH_JOB))
    return fetch_status(db) or {}


def fetch_status(db: str | os.PathLike, max_chars: int = 2_000) -> dict | None:
    """The latest fetch started from the app for this store: its job state plus `running` and `log_tail`;
    None if there is none."""
    j = jobs.status(FETCH_JOB)
    if j is None or str(j.db) != str(db):
        return None
    return {"state": j.state, "db": j.db, "pid": j.pid, "started": j.created_at, "error": j.error,
            "running": j.active, "log_tail": jobs.log_tail(FETCH_JOB, max_chars)}
