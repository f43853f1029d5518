"""What the Home page calls: the sample-data import, and the offer to fetch full ClinicalTrials.gov records
for labelled trials that only have a TOP row (a quick probe of the API first; `fetch-ctgov` runs detached,
so the page never waits for it). Counts come from core.store.browse.overview through core.ui's cached reads."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core import config
from core.jobs import background

PROBE_TIMEOUT_S = 2.0


def load_sample_data(db: str | os.PathLike, progress: Callable[[str, int, int], None] | None = None) -> dict:
    """The whole data mirror into the store (`python -m core sample-data`), reporting progress."""
    from core.ingest import sample_data

    return sample_data(db, progress=progress)


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


def _state_file() -> Path:
    return config.runs_dir() / "fetch-ctgov.json"


def start_fetch(db: str | os.PathLike) -> dict:
    """Start `fetch-ctgov --labelled` for this store, detached; its state (pid, log) is kept under runs_dir."""
    runs = config.runs_dir()
    runs.mkdir(parents=True, exist_ok=True)
    current = fetch_status()
    if current and current["running"]:
        return current
    log = runs / f"fetch-ctgov-{time.strftime('%Y%m%dT%H%M%S')}.log"
    cmd = [sys.executable, "-m", "core", "fetch-ctgov", "--db", str(db), "--labelled"]
    pid = background.spawn(cmd, log)
    state = {"pid": pid, "db": str(db), "log": str(log), "started": time.time(), "base_url": config.ctgov_api_base()}
    background.write_json_atomic(_state_file(), state)
    return {**state, "running": True, "log_tail": ""}


def fetch_status(max_chars: int = 2_000) -> dict | None:
    """The latest fetch started from the app: its state plus `running` and `log_tail`; None if there is none."""
    state = background.read_json(_state_file())
    if not state:
        return None
    return {**state, "running": background.alive(state.get("pid")),
            "log_tail": background.log_tail(Path(state["log"]), max_chars)}
