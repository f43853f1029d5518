"""The one job runner: every background job (batch generation, fine-tuning, Table 3 grids, analysis) is
one detached process with one file layout and one status vocabulary.

    spec = JobSpec(kind="finetune", db=db, params={"experiment": "ratio", "synthetic_ratio": 0.4, ...})
    job_id = start(spec); status(job_id).state   # queued -> running -> done | failed | cancelled

A kind names the CLI command that does the work (KINDS); `params` are that command's options by
their flag names (`run_id` is `--run-id`), so a job does exactly what the same command line does.
The child is `python -m core.jobs <job dir>`: it marks the job running, runs the command in-process
with `--job-dir`, and records how it ended. The command reports progress and results through
`JobContext` (a no-op outside a job). Secrets (an API key) reach the child through its environment
only: never its command line, the job files, the store or the log.

Files under runs_dir()/<job id>/ (never in the store, so a page can poll freely, and written
atomically so a reader never sees half a file):
  job.json       kind, params, db, argv, pid, created_at
  status.json    state, started_at, finished_at, error, and what the command adds (update())
  progress.json  done, total, stage, message, fraction, and whatever else the command reports
  result.json    the finished result, when the command writes one (kept even once stored)
  log.txt        stdout + stderr of the process
"""
from __future__ import annotations

import os
import secrets
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import runs_dir
from core.jobs.background import alive, log_tail as _tail, read_json, signal_group, spawn, write_json_atomic

STATES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")
CANCELLED_RC = 130

# kind -> the command line it runs (before its options). The same contract as `python -m core`.
KINDS: dict[str, list[str]] = {
    "generate": ["generate"],
    "finetune": ["finetune"],
    "table3": ["experiment", "table3"],
    "analyze": ["analyze"],
    "sample-data": ["sample-data"],
    "fetch-ctgov": ["fetch-ctgov"],
}
# A job that does not reach 'running' within this long after its start has died before saying so.
_START_GRACE_S = 20.0


class JobError(ValueError):
    """A job cannot be started as asked (unknown kind, bad parameter)."""


@dataclass(frozen=True)
class JobSpec:
    kind: str
    params: dict[str, Any]
    db: str | os.PathLike
    job_id: str | None = None
    # Extra environment for the child (e.g. OPENAI_API_KEY): passed to the process, never written down.
    env: dict[str, str] | None = field(default=None, repr=False)


@dataclass
class Job:
    id: str
    kind: str
    state: str
    params: dict[str, Any]
    db: str
    dir: Path
    progress: dict[str, Any]
    status: dict[str, Any]           # the whole status.json (state, timings, error, what the command added)
    pid: int | None = None
    created_at: float = 0.0
    has_result: bool = False

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def error(self) -> str | None:
        return self.status.get("error")

    @property
    def fraction(self) -> float:
        """0..1 from the progress the command reported (done/total, or its own fraction)."""
        p = self.progress
        if self.state == "done":
            return 1.0
        if p.get("fraction") is not None:
            return max(0.0, min(1.0, float(p["fraction"])))
        total = p.get("total") or p.get("n")
        if total:
            return max(0.0, min(1.0, float(p.get("done") or 0) / float(total)))
        return 0.0

    @property
    def duration_s(self) -> float | None:
        start = self.status.get("started_at")
        if not start:
            return None
        return (self.status.get("finished_at") or time.time()) - start


def argv_for(kind: str, params: dict[str, Any]) -> list[str]:
    """The command line of a job: KINDS[kind] then one flag per parameter (`x_y` -> `--x-y`);
    True -> the bare flag, False/None -> left out, a list -> the flag repeated."""
    if kind not in KINDS:
        raise JobError(f"unknown job kind {kind!r}: one of {', '.join(KINDS)}")
    argv = list(KINDS[kind])
    for key, value in params.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            if key == "seeds":  # the one option that takes a comma-separated list
                argv += [flag, ",".join(str(v) for v in value)]
            else:
                for v in value:
                    argv += [flag, str(v)]
        else:
            argv += [flag, str(value)]
    return argv


def new_job_id(kind: str) -> str:
    return f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def job_dir(job_id: str) -> Path:
    if not job_id or "/" in job_id or job_id.startswith("."):
        raise JobError(f"bad job id {job_id!r}")
    return runs_dir() / job_id


def start(spec: JobSpec) -> str:
    """Start the job in its own detached process; returns its id. A job with the same id that is
    still active is not started twice (its id is returned); a finished one is started afresh in the
    same folder (that is how a generation run resumes)."""
    job_id = spec.job_id or new_job_id(spec.kind)
    argv = argv_for(spec.kind, spec.params)
    current = status(job_id)
    if current is not None and current.active:
        return job_id
    d = job_dir(job_id)
    d.mkdir(parents=True, exist_ok=True)
    for name in ("status.json", "result.json"):
        (d / name).unlink(missing_ok=True)
    db = str(Path(spec.db).resolve())
    argv += ["--db", db]
    job = {"id": job_id, "kind": spec.kind, "params": spec.params, "db": db, "argv": argv,
           "created_at": time.time()}
    write_json_atomic(d / "job.json", job)
    write_json_atomic(d / "status.json", {"state": "queued", "updated_at": time.time()})
    job["pid"] = spawn([sys.executable, "-m", "core.jobs", str(d)], d / "log.txt", spec.env)
    write_json_atomic(d / "job.json", job)
    return job_id


def status(job_id: str) -> Job | None:
    """A job's current state, or None when there is no such job. A job whose process is gone while it
    still says queued/running is reported failed (killed, or crashed before it could say so)."""
    d = job_dir(job_id)
    job = read_json(d / "job.json")
    if not job:
        return None
    st = read_json(d / "status.json")
    state = st.get("state", "queued")
    if state in ACTIVE and not alive(job.get("pid")):
        started = st.get("started_at") or job.get("created_at", 0)
        if state == "running" or time.time() - started > _START_GRACE_S:
            state = "failed"
            st = {**st, "state": state,
                  "error": st.get("error") or "the process ended without reporting (see the log)"}
    return Job(id=job_id, kind=job.get("kind", "?"), state=state, params=job.get("params", {}),
               db=job.get("db", ""), dir=d, progress=read_json(d / "progress.json"), status=st,
               pid=job.get("pid"), created_at=job.get("created_at", 0.0),
               has_result=(d / "result.json").exists())


def list_jobs(kind: str | None = None, db: str | os.PathLike | None = None) -> list[Job]:
    """Every job (newest first), optionally of one kind and one store."""
    root = runs_dir()
    if not root.is_dir():
        return []
    want = str(Path(db).resolve()) if db else None
    out = []
    for d in root.iterdir():
        if not (d / "job.json").exists():
            continue
        j = status(d.name)
        if j is None or (kind and j.kind != kind) or (want and j.db != want):
            continue
        out.append(j)
    return sorted(out, key=lambda j: j.created_at, reverse=True)


def cancel(job_id: str, grace_s: float = 5.0) -> bool:
    """Stop a job: SIGTERM to its process group (the command stops cleanly: a generation run keeps
    its finished items), SIGKILL after `grace_s`. True if it was running."""
    j = status(job_id)
    if j is None or not alive(j.pid):
        return False
    if not signal_group(j.pid, signal.SIGTERM):
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and alive(j.pid):
        time.sleep(0.1)
    if alive(j.pid):
        signal_group(j.pid, signal.SIGKILL)
    st = read_json(j.dir / "status.json")
    if st.get("state") in ACTIVE:
        _write_status(j.dir, "cancelled", finished_at=time.time())
    return True


def log_tail(job_id: str, max_chars: int = 6000) -> str:
    return _tail(job_dir(job_id) / "log.txt", max_chars)


def read_result(job_id: str) -> dict[str, Any]:
    return read_json(job_dir(job_id) / "result.json")


def _write_status(d: Path, state: str, **extra: Any) -> None:
    if state not in STATES:
        raise ValueError(f"unknown job state {state!r}")
    data = read_json(d / "status.json")
    data.update({"state": state, "updated_at": time.time(), **extra})
    write_json_atomic(d / "status.json", data)


class JobContext:
    """What a command sees of the job it runs in: progress, extra status fields, the result.
    `JobContext(None)` does nothing, so a command runs the same from the shell."""

    def __init__(self, job_dir: str | os.PathLike | None):
        self.dir = Path(job_dir) if job_dir else None
        self._last = 0.0

    def __bool__(self) -> bool:
        return self.dir is not None

    def progress(self, throttle_s: float = 0.0, **info: Any) -> None:
        """Replace progress.json (done, total, stage, message, fraction, ...). `throttle_s` drops
        writes closer together than that (a Trainer calls back on every step)."""
        if self.dir is None:
            return
        now = time.monotonic()
        if throttle_s and now - self._last < throttle_s:
            return
        self._last = now
        write_json_atomic(self.dir / "progress.json", {**info, "updated_at": time.time()})

    def update(self, **extra: Any) -> None:
        """Add fields to status.json without changing the state (the runner owns the state)."""
        if self.dir is None:
            return
        data = read_json(self.dir / "status.json")
        data.update({**extra, "updated_at": time.time()})
        write_json_atomic(self.dir / "status.json", data)

    def result(self, data: dict[str, Any]) -> None:
        if self.dir is not None:
            write_json_atomic(self.dir / "result.json", data)


def _last_error(d: Path) -> str:
    lines = [ln.strip() for ln in _tail(d / "log.txt", 4000).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.lower().startswith("error")]
    return (errors or lines or ["the command failed (see the log)"])[-1][:500]


_CANCEL_ASKED = threading.Event()


def _on_sigterm(signum: int, frame: Any) -> None:
    # Remembered as well as raised: a DuckDB query that the KeyboardInterrupt reaches re-raises it as
    # RuntimeError("Query interrupted"), and a cancel must still end as cancelled, not failed.
    _CANCEL_ASKED.set()
    raise KeyboardInterrupt("cancelled")


def run_child(d: Path) -> int:
    """The child process: run the job's command in-process and record how it ended."""
    from core.cli import main

    job = read_json(d / "job.json")
    signal.signal(signal.SIGTERM, _on_sigterm)
    _write_status(d, "running", started_at=time.time(), pid=os.getpid())
    try:
        rc = main([*job["argv"], "--job-dir", str(d)])
    except KeyboardInterrupt:
        rc = CANCELLED_RC
    except SystemExit as exc:  # argparse: a bad parameter
        rc = exc.code if isinstance(exc.code, int) else 2
    except BaseException as exc:
        if _CANCEL_ASKED.is_set():
            _write_status(d, "cancelled", finished_at=time.time())
            return CANCELLED_RC
        traceback.print_exc()
        _write_status(d, "failed", finished_at=time.time(), error=f"{type(exc).__name__}: {exc}")
        return 1
    if rc not in (0, CANCELLED_RC) and _CANCEL_ASKED.is_set():
        rc = CANCELLED_RC   # the command caught the interrupt and exited with its own error code
    if rc == 0:
        _write_status(d, "done", finished_at=time.time())
    elif rc == CANCELLED_RC:
        _write_status(d, "cancelled", finished_at=time.time())
    else:
        said = read_json(d / "status.json").get("error")  # what the command reported, else its last error line
        _write_status(d, "failed", finished_at=time.time(), error=said or _last_error(d), exit_code=rc)
    return rc


def context_for(args: Any) -> JobContext:
    """The JobContext of a command's parsed arguments (its hidden --job-dir)."""
    return JobContext(getattr(args, "job_dir", None))
