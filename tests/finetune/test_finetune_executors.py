"""The Table 3 grid on Ray (a real local Ray with 2 CPUs) gives the same results, seeds and stored
rows as the serial executor (TF-IDF model, the real mirror plus fixture synthetic trials)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.finetune import executors as E
from core.finetune import protocol as X

ROOT = Path(__file__).resolve().parents[2]
SEEDS = (40, 41)
# What legitimately differs between two runs of the same cell: ids, clocks and speeds.
VOLATILE = {"run_id", "grid_id", "started_at", "finished_at", "duration_s", "samples_per_s", "train_seconds",
            "created_at"}


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    assert E.init_ray(num_cpus=2)
    assert ray.cluster_resources()["CPU"] == 2
    yield ray
    ray.shutdown()


def _stable(obj):
    if isinstance(obj, dict):
        return {k: _stable(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_stable(v) for v in obj]
    return obj


def test_ray_grid_equals_serial_grid(syn_db, local_ray):
    ds = X.load_dataset(syn_db)
    cells = [E.Cell(*c) for c in X.table3_grid()]
    spec = E.GridSpec("tfidf", SEEDS, grid_id="g")
    seen_serial, seen_ray, progress = [], [], []
    serial = E.run_grid(ds, cells, spec, executor="serial", on_result=seen_serial.append)
    ray_res = E.run_grid(ds, cells, spec, executor="ray", on_result=seen_ray.append, progress=progress.append)
    assert len(serial) == len(ray_res) == len(cells) == 14
    assert all(r.error is None for r in serial), [r.error for r in serial if r.error]
    # each finished cell was handed to the driver exactly once
    assert sorted(r.run_id for r in seen_ray) == sorted(r.run_id for r in ray_res)
    for s, r in zip(serial, ray_res):
        assert s.cell == r.cell
        assert r.run["seeds"] == list(SEEDS) and [p["seed"] for p in r.per_seed] == list(SEEDS)
        assert _stable(s.run) == _stable(r.run), s.cell
        assert _stable(s.per_seed) == _stable(r.per_seed), s.cell
    assert progress[-1]["cells_done"] == 14 and progress[-1]["cells_total"] == 14
    assert {p.get("executor") for p in progress} == {"ray"}


def test_cancel_stops_the_ray_grid(syn_db, local_ray):
    ds = X.load_dataset(syn_db)
    cells = [E.Cell(*c) for c in X.table3_grid()]
    got = []
    with pytest.raises(E.GridCancelled):
        E.run_grid(ds, cells, E.GridSpec("tfidf", SEEDS), executor="ray", on_result=got.append,
                   should_cancel=lambda: len(got) >= 2)
    assert 2 <= len(got) < len(cells)


def _stored(db: Path) -> tuple[list[str], ...]:
    """Every stored row of the runs, per-seed results and curves, keyed by cell instead of run id."""
    runs = X.stored_runs(db)
    cell = {r["run_id"]: [r["experiment"], r["train"], r.get("synthetic_ratio")] for r in runs}
    seeds, curves = X.stored_details(db, list(cell))

    def norm(rows: list[dict]) -> list[str]:
        return sorted(json.dumps(_stable({**row, "cell": cell[row["run_id"]]}), sort_keys=True, default=str)
                      for row in rows)
    return norm(runs), norm(seeds), norm(curves)


def test_cli_table3_on_ray_stores_the_same_rows_as_serial(syn_db, tmp_path):
    dbs = {}
    for executor in ("serial", "ray"):
        db = tmp_path / f"{executor}.duckdb"
        shutil.copy(syn_db, db)
        p = subprocess.run([sys.executable, "-m", "core", "experiment", "table3", "--model", "tfidf", "--seeds", "40,41",
                            "--executor", executor, "--db", str(db), "--json"], cwd=ROOT, capture_output=True,
                           text=True, timeout=600, env={**os.environ, "CTGEN_RAY_NUM_CPUS": "2"})
        assert p.returncode == 0, p.stderr[-3000:]
        out = json.loads(p.stdout.strip().splitlines()[-1])
        assert len(out["runs"]) == 14 and not out["skipped"]
        assert f"executor: {executor}" in p.stdout
        dbs[executor] = db
    serial, ray_rows = _stored(dbs["serial"]), _stored(dbs["ray"])
    assert len(serial[0]) == 14 and len(serial[1]) == 28 and len(serial[2]) == 56
    assert serial == ray_rows


def test_bad_ray_address_is_a_clear_error(syn_db):
    p = subprocess.run([sys.executable, "-m", "core", "experiment", "table3", "--model", "tfidf", "--seeds", "40",
                        "--executor", "ray", "--address", "ray://127.0.0.1:1", "--db", str(syn_db)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2
    assert "cannot start or reach Ray at ray://127.0.0.1:1" in p.stderr
