"""The one job runner (core.jobs): one process per job, one file layout, one status vocabulary,
for every kind of background work."""
from __future__ import annotations

import os
import time
import signal

import pytest

from conftest import wait_until
from core import jobs


def test_params_become_the_commands_flags():
    argv = jobs.argv_for("finetune", {"experiment": "ratio", "synthetic_ratio": 0.4, "seeds": [40, 41],
                                      "json": True, "train": None, "recompute": False})
    assert argv == ["finetune", "--experiment", "ratio", "--synthetic-ratio", "0.4", "--seeds", "40,41", "--json"]
    assert jobs.argv_for("analyze", {"projection": ["tsne", "umap"]}) == [
        "analyze", "--projection", "tsne", "--projection", "umap"]
    assert jobs.argv_for("table3", {"model": "tfidf"})[:2] == ["experiment", "table3"]
    with pytest.raises(jobs.JobError, match="unknown job kind"):
        jobs.argv_for("nope", {})


def test_a_failing_command_is_failed_with_its_message(tmp_path, runs_dir):
    db = tmp_path / "missing.duckdb"  # no store: the command exits 2 naming the file
    jid = jobs.start(jobs.JobSpec(kind="analyze", db=db, params={"pairs": 10}))
    job = wait_until(lambda: (j := jobs.status(jid)) and not j.active and j, 60, "the job to end")
    assert job.state == "failed"
    assert "missing.duckdb" in job.error and job.status["exit_code"] == 2
    assert {p.name for p in job.dir.iterdir()} >= {"job.json", "status.json", "log.txt"}
    assert [j.id for j in jobs.list_jobs(kind="analyze")] == [jid]
    assert jobs.list_jobs(kind="finetune") == []


def test_kill_9_is_reported_and_cancel_is_cancelled(mirror_db_copy, runs_dir):
    spec = jobs.JobSpec(kind="table3", db=mirror_db_copy, params={"model": "tfidf", "seeds": [40, 41, 42]})
    jid = jobs.start(spec)
    assert jobs.start(spec.__class__(**{**spec.__dict__, "job_id": jid})) == jid  # active: not started twice
    job = wait_until(lambda: (j := jobs.status(jid)) and j.state == "running" and j.progress.get("total") and j,
                120, "progress from the grid")
    assert job.progress["total"] == 14 and 0 <= job.fraction < 1
    os.killpg(job.pid, signal.SIGKILL)
    job = wait_until(lambda: (j := jobs.status(jid)) and not j.active and j, 30, "the runner to notice")
    assert job.state == "failed" and "without reporting" in job.error

    jid2 = jobs.start(jobs.JobSpec(kind="table3", db=mirror_db_copy, params={"model": "tfidf"}))
    wait_until(lambda: (j := jobs.status(jid2)) and j.state == "running", 60, "the second job to run")
    assert jobs.cancel(jid2) is True
    job = jobs.status(jid2)
    assert job.state == "cancelled" and job.status["finished_at"]
    assert jobs.cancel(jid2) is False


def test_cancel_is_cancelled_whenever_it_lands(mirror_db_copy, runs_dir):
    """SIGTERM at different moments of a Table 3 job (reading the store, training): always 'cancelled'. A
    KeyboardInterrupt that reaches a DuckDB query comes back as RuntimeError('Query interrupted'), which
    was reported as a failure (1 cancel in 4 of this job, at the start)."""
    for i in range(8):
        jid = jobs.start(jobs.JobSpec(kind="table3", db=mirror_db_copy, params={"model": "tfidf"}))
        wait_until(lambda: (j := jobs.status(jid)) and j.state == "running", 60, "the job to run")
        time.sleep(0.08 * i)
        assert jobs.cancel(jid) is True
        job = jobs.status(jid)
        assert job.state == "cancelled", (i, job.status, jobs.log_tail(jid)[-800:])
