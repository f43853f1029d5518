"""Background runs: a separate process that reports progress, can be cancelled, never holds the store
against the app, and lands its results even when the store is busy."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from core.finetune import protocol as X
from core import jobs
from core.services import finetune as services
from core.store import connect
from conftest import wait_until


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            state, _ppid, pgrp = (p / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except OSError:
            continue
        if int(pgrp) == pgid and state != "Z":
            out.append(int(p.name))
    return out




def test_progress_cancel_and_the_app_keeps_the_store(mirror_db_copy, runs_dir):
    db = mirror_db_copy
    rid = services.start_run(db, experiment="in-distribution", train="real", model="minilm", epochs=3,
                             max_length=32, seeds=[40], json=False)
    job = jobs.status(rid)
    assert job.state in jobs.ACTIVE and job.pid and (runs_dir / rid / "log.txt").exists()
    first = wait_until(lambda: (jobs.status(rid).progress.get("step") or 0) > 0 and jobs.status(rid).progress,
                  240, "training progress")
    assert first["max_steps"] > first["step"] and first["seed"] == 40 and "epoch" in first
    # While it trains the app reads and writes the store without waiting on the run.
    for read_only in (True, False):
        t0 = time.monotonic()
        with connect(db, read_only=read_only, wait_s=2) as con:
            assert con.execute("SELECT count(*) FROM trials").fetchone()[0] > 0
        assert time.monotonic() - t0 < 2
    later = wait_until(lambda: (jobs.status(rid).progress.get("step") or 0) > first["step"] and jobs.status(rid).progress,
                  120, "progress to advance")
    assert later["step"] > first["step"]
    assert jobs.status(rid).state == "running"
    assert any(j.id == rid and j.state == "running" for j in services.list_runs(db))

    assert jobs.cancel(rid) is True
    job = jobs.status(rid)
    assert job.state == "cancelled" and job.status["finished_at"]
    assert _group_members(job.pid) == []  # the whole process group is gone (zombies aside)
    assert rid not in {r["run_id"] for r in X.stored_runs(db)}
    assert "seed 40" in jobs.log_tail(rid)


def test_results_land_even_when_the_store_is_busy(mirror_db_copy, runs_dir):
    db = mirror_db_copy
    # The "app" holds the write lock while the run starts: the run waits instead of failing.
    with connect(db) as con:
        rid = services.start_run(db, experiment="generalization", train="real", model="tfidf", seeds=[40, 41],
                                 json=True)
        time.sleep(3)
        con.execute("SELECT 1").fetchone()
        assert jobs.status(rid).state in jobs.ACTIVE
    job = wait_until(lambda: jobs.status(rid).state not in jobs.ACTIVE and jobs.status(rid), 180, "the run to finish")
    assert job.state == "done", jobs.log_tail(rid)
    assert job.status["stored"] is True and job.status["model_used"] == "tfidf-logreg" and job.duration_s > 0
    result = json.loads((runs_dir / rid / "result.json").read_text())
    stored = {r["run_id"]: r for r in X.stored_runs(db)}[rid]
    for m in X.METRICS:
        assert stored["summary"][m]["mean"] == pytest.approx(result["run"]["summary"][m]["mean"])
    per_seed, curves = X.stored_details(db, [rid])
    assert [r["seed"] for r in per_seed] == [40, 41] and len(curves) == 4
    assert "database is locked" not in jobs.log_tail(rid).lower()
    # The last line of the log is the --json summary.
    assert json.loads(jobs.log_tail(rid).strip().splitlines()[-1])["n_test"] == stored["n_test"]


def test_store_pending_saves_results_left_on_disk(mirror_db_copy, runs_dir, tmp_path):
    """A finished run whose store write never happened (e.g. the store stayed busy past the wait) is
    stored later from its result file: nothing is lost."""
    ds = X.load_dataset(mirror_db_copy)
    run, per_seed = X.run_cell(ds, "in-distribution", "none", "tfidf", [40], run_id="pending-run")
    d = runs_dir / "pending-run"
    d.mkdir(parents=True)
    (d / "job.json").write_text(json.dumps({"id": "pending-run", "kind": "finetune", "params": {},
                                            "db": str(Path(mirror_db_copy).resolve()),
                                            "argv": [], "created_at": time.time(), "pid": None}))
    (d / "status.json").write_text(json.dumps({"state": "done", "stored": False, "started_at": time.time(),
                                               "finished_at": time.time()}))
    jobs.JobContext(d).result({"run": run, "per_seed": per_seed})
    assert services.store_pending(mirror_db_copy) == ["pending-run"]
    assert jobs.status("pending-run").status["stored"] is True
    assert "pending-run" in {r["run_id"] for r in X.stored_runs(mirror_db_copy)}
    assert services.store_pending(mirror_db_copy) == []
