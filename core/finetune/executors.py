"""Where the cells of a grid (the paper's Table 3) run: serially in this process, or as Ray tasks.

- `serial`: one cell after another, here (what `experiment table3` always did).
- `ray`: each cell is one Ray task. A transformer cell asks for 1 GPU where the cluster has GPUs
  (else CPUs); a TF-IDF cell asks for 1 CPU. With no address a local Ray is started (and stopped
  afterwards); `ray://host:10001` connects to a cluster through Ray Client, shipping the `core` package.

Both run the same function on the same inputs (the dataset, the cell, the seeds, a run id chosen by
the driver), so results, seeds and stored rows are the same whichever executor ran them. Only the
driver touches the store: it hands each finished cell to `on_result` (the CLI stores it in one short
transaction), so a crash keeps every cell that finished. `progress` gets plain dicts the job runner
can write to its progress file; `should_cancel` is polled and stops the grid (Ray tasks are
cancelled) with GridCancelled.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from core.finetune import protocol as X

EXECUTORS = ("serial", "ray")
ROOT = Path(__file__).resolve().parents[2]
# Environment the Ray workers need to behave like this process (offline models, same store/data paths).
_PASS_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "CTGEN_DATA_MIRROR", "CTGEN_BIOBERT_PATH",
             "CTGEN_DB", "TOKENIZERS_PARALLELISM")

Progress = Callable[[dict[str, Any]], None]


class GridCancelled(Exception):
    """The grid was cancelled (should_cancel returned True); finished cells were already handed over."""


class ExecutorError(RuntimeError):
    """The executor cannot run (Ray missing, cluster unreachable)."""


@dataclass(frozen=True)
class Cell:
    experiment: str
    train: str
    ratio: float | None = None

    def title(self) -> str:
        return f"{self.experiment}/{self.train}" + (f"/{self.ratio:.0%} synthetic" if self.ratio is not None else "")


@dataclass
class CellResult:
    cell: Cell
    run_id: str
    run: dict[str, Any] | None = None
    per_seed: list[dict[str, Any]] | None = None
    error: str | None = None      # the cell could not run (ExperimentError): why


@dataclass(frozen=True)
class GridSpec:
    """Everything a cell needs besides the dataset (the same for every cell of a grid)."""
    model: str
    seeds: tuple[int, ...]
    epochs: int = 7
    max_length: int = 512
    ratio_size: int | None = None
    grid_id: str | None = None


def run_one(ds: X.Dataset, cell: Cell, spec: GridSpec, run_id: str, progress: Progress | None = None) -> CellResult:
    """One cell, all seeds. The function both executors run (in a Ray worker: as a task)."""
    try:
        run, per_seed = X.run_cell(ds, cell.experiment, cell.train, spec.model, list(spec.seeds), ratio=cell.ratio,
                                   epochs=spec.epochs, max_length=spec.max_length,
                                   train_size=spec.ratio_size if cell.experiment == "ratio" else None,
                                   run_id=run_id, grid_id=spec.grid_id, progress=progress)
    except X.ExperimentError as exc:
        return CellResult(cell, run_id, error=str(exc))
    return CellResult(cell, run_id, run, per_seed)


def run_grid(ds: X.Dataset, cells: Sequence[Cell], spec: GridSpec, *, executor: str = "serial",
             address: str | None = None, on_result: Callable[[CellResult], None] | None = None,
             progress: Progress | None = None, should_cancel: Callable[[], bool] | None = None) -> list[CellResult]:
    """Run every cell; results in grid order. `on_result` is called in the driver as each cell finishes."""
    if executor not in EXECUTORS:
        raise ExecutorError(f"--executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    run_ids = [X.new_run_id(c.experiment, c.train, c.ratio) for c in cells]
    if executor == "ray":
        return _run_ray(ds, list(cells), spec, run_ids, address, on_result, progress, should_cancel)
    return _run_serial(ds, list(cells), spec, run_ids, on_result, progress, should_cancel)


def _cell_info(i: int, cells: list[Cell], done: int, **extra: Any) -> dict[str, Any]:
    return {"stage": "grid", "cell_index": i, "cell": cells[i].title(), "cells_done": done,
            "cells_total": len(cells), **extra}


def _run_serial(ds: X.Dataset, cells: list[Cell], spec: GridSpec, run_ids: list[str], on_result: Any,
                progress: Progress | None, should_cancel: Callable[[], bool] | None) -> list[CellResult]:
    out: list[CellResult] = []
    for i, cell in enumerate(cells):
        if should_cancel and should_cancel():
            raise GridCancelled(f"cancelled after {i} of {len(cells)} cells")

        def inner(info: dict[str, Any], _i: int = i) -> None:
            if should_cancel and should_cancel():
                raise GridCancelled(f"cancelled during cell {_i + 1} of {len(cells)}")
            if progress:
                progress({**info, **_cell_info(_i, cells, _i, cell_stage=info.get("stage"))})

        res = run_one(ds, cell, spec, run_ids[i], inner)
        if on_result:
            on_result(res)
        out.append(res)
        if progress:
            progress(_cell_info(i, cells, i + 1, run_id=res.run_id, skipped=res.error is not None))
    return out


# ---- Ray -----------------------------------------------------------------------------------------

def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pinned in requirements.txt; a clear message if someone skipped it
        raise ExecutorError(f"--executor ray needs the 'ray' package (pip install -r requirements.txt): {exc}")
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to `address` (ray:// via Ray Client, or a cluster address), or start a local Ray.
    Returns True when this call started/connected it (and so should shut it down)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
    try:
        if address:
            import core

            ray.init(address=address, runtime_env={"py_modules": [str(Path(core.__file__).parent)], "env_vars": env},
                     log_to_driver=False)
        else:
            env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
            n = num_cpus or int(os.environ.get("CTGEN_RAY_NUM_CPUS") or 0) or None
            ray.init(num_cpus=n, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env},
                     configure_logging=False)
    except Exception as exc:  # unreachable cluster, bad address: say which
        raise ExecutorError(f"cannot start or reach Ray{f' at {address}' if address else ' (local)'}: {exc}") from exc
    return True


def _resources(ray: Any, model: str) -> dict[str, Any]:
    from core.finetune import train

    kind = train.resolve_model(model).kind
    total = ray.cluster_resources()
    if kind == "hf" and total.get("GPU", 0) >= 1:
        return {"num_gpus": 1, "num_cpus": 1}
    if kind == "hf":  # an encoder on CPUs: give it a few cores (torch uses them all)
        return {"num_cpus": max(1, min(4, int(total.get("CPU", 1))))}
    return {"num_cpus": 1}


def _run_ray(ds: X.Dataset, cells: list[Cell], spec: GridSpec, run_ids: list[str], address: str | None,
             on_result: Any, progress: Progress | None, should_cancel: Callable[[], bool] | None) -> list[CellResult]:
    ray = _ray()
    started = init_ray(address)
    pending: dict[Any, int] = {}
    try:
        task = ray.remote(max_retries=1)(run_one).options(**_resources(ray, spec.model))
        ds_ref = ray.put(ds)  # once, shared by every task
        pending = {task.remote(ds_ref, cell, spec, run_ids[i]): i for i, cell in enumerate(cells)}
        results: list[CellResult | None] = [None] * len(cells)
        done = 0
        if progress:
            progress({"stage": "grid", "cells_done": 0, "cells_total": len(cells), "executor": "ray",
                      "resources": ray.cluster_resources()})
        while pending:
            if should_cancel and should_cancel():
                raise GridCancelled(f"cancelled after {done} of {len(cells)} cells")
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for ref in ready:
                i = pending.pop(ref)
                res = ray.get(ref)
                results[i] = res
                done += 1
                if on_result:
                    on_result(res)  # the driver writes the store; workers never do
                if progress:
                    progress(_cell_info(i, cells, done, run_id=res.run_id, skipped=res.error is not None,
                                        executor="ray"))
        return [r for r in results if r is not None]
    finally:
        for ref in pending:  # cancelled or failed: stop what is still queued or running
            try:
                ray.cancel(ref, force=True)
            except Exception:  # already finished or gone
                pass
        if started:
            ray.shutdown()
