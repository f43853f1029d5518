"""Background fine-tuning runs: each is its own process (`python -m core finetune ...`), detached in a
new session so it survives Streamlit reruns and page reloads, and cancellable as a process group.

State lives in files under RUNS_DIR/<run_id>/ (never in the store, so the app can poll freely):
  job.json       what was asked (argv, db, pid, created_at)
  status.json    queued/running/done/failed/cancelled, timings, error, whether results reached the store
  progress.json  seed, step, max_steps, epoch, loss (written by a Trainer callback)
  result.json    the finished run (kept even after it is stored: nothing is lost if the store is busy)
  log.txt        stdout + stderr of the process
RUNS_DIR is core.config.runs_dir() (CTGEN_RUNS_DIR when set); file and process helpers: core.jobs.background.
"""
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

from core.jobs import background
from core.jobs.background import alive, read_json, signal_group, spawn, write_json_atomic
from core.config import runs_dir

ACTIVE = ("queued", "running")


class JobFiles:
    """The child's side: progress, status and result files of one run."""

    def __init__(self, job_dir: str | Path):
        self.dir = Path(job_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._last = 0.0

    def status(self, status: str, **extra: Any) -> None:
        data = read_json(self.dir / "status.json")
        data.update({"status": status, "updated_at": time.time(), **extra})
        write_json_atomic(self.dir / "status.json", data)

    def progress(self, info: dict[str, Any]) -> None:
        # At most ~4 writes a second: the Trainer calls back on every step.
        now = time.monotonic()
        if now - self._last < 0.25 and info.get("stage") == "training":
            return
        self._last = now
        write_json_atomic(self.dir / "progress.json", {**info, "updated_at": time.time()})

    def result(self, run: dict[str, Any], per_seed: list[dict[str, Any]]) -> None:
        write_json_atomic(self.dir / "result.json", {"run": run, "per_seed": per_seed})


def start(db: str | Path, argv: list[str], run_id: str | None = None) -> str:
    """Launch `python -m core finetune <argv>` in the background; returns the run id."""
    from core.finetune.protocol import new_run_id

    args = list(argv)
    def _opt(name: str) -> str | None:
        return args[args.index(name) + 1] if name in args and args.index(name) + 1 < len(args) else None

    ratio = float(_opt("--synthetic-ratio")) if _opt("--synthetic-ratio") else None
    if ratio is not None and ratio > 1:
        ratio /= 100
    train = _opt("--train") or ("hybrid" if ratio is None or 0 < ratio < 1 else "synthetic" if ratio >= 1 else "real")
    rid = run_id or new_run_id(_opt("--experiment") or "run", train, ratio)
    d = runs_dir() / rid
    d.mkdir(parents=True, exist_ok=False)
    cmd = [sys.executable, "-m", "core", "finetune", *args, "--db", str(Path(db).resolve()),
           "--run-id", rid, "--job-dir", str(d)]
    job = {"run_id": rid, "db": str(Path(db).resolve()), "argv": args, "cmd": cmd, "created_at": time.time()}
    write_json_atomic(d / "job.json", job)
    JobFiles(d).status("queued")
    pid = spawn(cmd, d / "log.txt")
    job["pid"] = pid
    write_json_atomic(d / "job.json", job)
    return rid


def read(run_id: str) -> dict[str, Any]:
    """One run's merged state (job, status, progress)."""
    d = runs_dir() / run_id
    job = read_json(d / "job.json")
    status = read_json(d / "status.json")
    out = {**job, **status, "progress": read_json(d / "progress.json"), "dir": str(d),
           "has_result": (d / "result.json").exists()}
    out.setdefault("status", "queued")
    if out["status"] in ACTIVE and not alive(job.get("pid")) and time.time() - job.get("created_at", 0) > 5:
        out["status"] = "failed"
        out.setdefault("error", "the process ended without reporting (see the log)")
    if out.get("started_at"):
        end = out.get("finished_at") or time.time()
        out["duration_s"] = end - out["started_at"]
    return out


def list_jobs(db: str | Path | None = None) -> list[dict[str, Any]]:
    """Every background run (newest first), optionally only those of one store."""
    root = runs_dir()
    if not root.is_dir():
        return []
    want = str(Path(db).resolve()) if db else None
    jobs = []
    for d in root.iterdir():
        if not (d / "job.json").exists():
            continue
        j = read(d.name)
        if want and j.get("db") != want:
            continue
        jobs.append(j)
    return sorted(jobs, key=lambda j: j.get("created_at", 0), reverse=True)


def cancel(run_id: str, grace_s: float = 5.0) -> bool:
    """Stop a run: SIGTERM to its process group, SIGKILL after `grace_s`. True if it was running."""
    d = runs_dir() / run_id
    job = read_json(d / "job.json")
    pid = job.get("pid")
    if not alive(pid):
        return False
    if not signal_group(pid, signal.SIGTERM):
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.1)
    if alive(pid):
        signal_group(pid, signal.SIGKILL)
    JobFiles(d).status("cancelled", finished_at=time.time())
    return True


def log_tail(run_id: str, max_chars: int = 6000) -> str:
    return background.log_tail(runs_dir() / run_id / "log.txt", max_chars)


def store_pending(db: str | Path) -> list[str]:
    """Store finished runs whose result file never reached the store (e.g. the store stayed busy
    past the child's wait). Idempotent: save_run replaces by run_id."""
    from core.finetune.protocol import store_run

    done = []
    for j in list_jobs(db):
        if j.get("status") == "done" and j.get("has_result") and not j.get("stored"):
            data = read_json(Path(j["dir"]) / "result.json")
            if not data:
                continue
            store_run(db, data["run"], data["per_seed"], wait_s=10)
            JobFiles(j["dir"]).status("done", stored=True)
            done.append(j["run_id"])
    return done
