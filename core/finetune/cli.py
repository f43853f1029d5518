"""`python -m core finetune ...` (one experiment cell) and `python -m core experiment table3 ...`
(the paper's whole grid). Errors a user can fix: exit 2 with a message."""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import duckdb

from core import config
from core.finetune import protocol as X
from core.jobs import CANCELLED_RC


def _err(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def _progress_bar(total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, mininterval=1.0)


def run(args: argparse.Namespace) -> int:
    if args.command == "experiment":
        return _run_table3(args)
    return _run_finetune(args)


def _run_finetune(args: argparse.Namespace) -> int:
    from core.finetune.train import resolve_model
    from core.jobs import context_for
    from core.store import StoreLocked

    job = context_for(args)  # a no-op outside a background job; the runner owns the job's state
    bar = None
    try:
        train = args.train
        if train is None:
            if args.experiment != "ratio":
                return _fail(job, "--train is required (none, real, synthetic or hybrid)")
            train = "hybrid"
        try:
            ratio = X.normalize_ratio(args.synthetic_ratio)
            spec = resolve_model(args.model)
        except ValueError as exc:
            return _fail(job, str(exc))
        if spec.note:
            print(f"note: {spec.note}", file=sys.stderr)
        print(f"model: {spec.name}", file=sys.stderr)
        job.update(model_used=spec.name, model_note=spec.note)
        job.progress(stage="reading the store")
        try:
            ds = X.load_dataset(args.db, args.synthetic_source, args.scrub_mode)  # short read-only connection
            X.check_request(ds, args.experiment, train, ratio)
        except (FileNotFoundError, X.ExperimentError, StoreLocked) as exc:
            return _fail(job, str(exc))
        except duckdb.Error as exc:
            return _fail(job, f"{config.db_path(args.db)}: cannot be read as a store ({exc})")
        print(f"set A: {len(ds.set_a)} trials ({ds.interventions_from}: {len(ds.interventions)}); "
              f"set B: {len(ds.set_b)}; synthetic: {len(ds.synthetic)}", file=sys.stderr)
        state = {"seed_index": -1}

        def progress(info: dict[str, Any]) -> None:
            nonlocal bar
            job.progress(throttle_s=0.25 if info.get("stage") == "training" else 0.0, **info)
            if info["seed_index"] != state["seed_index"]:
                state["seed_index"] = info["seed_index"]
                if bar is not None:
                    bar.close()
                bar = _progress_bar(info.get("max_steps") or 1, f"seed {info['seed']} ({info['seed_index'] + 1}/{info['n_seeds']})")
            if bar is not None:
                bar.total = max(info.get("max_steps") or 1, 1)
                if info.get("loss") is not None:
                    bar.set_postfix(loss=f"{info['loss']:.4f}", epoch=info.get("epoch"), refresh=False)
                bar.update(max(0, (info.get("step") or 0) - bar.n))  # redraws at most once a second

        try:
            run_row, per_seed = X.run_cell(ds, args.experiment, train, args.model, args.seeds, ratio=ratio,
                                           epochs=args.epochs, max_length=args.max_length,
                                           train_size=args.ratio_size, run_id=args.run_id, progress=progress)
        except X.ExperimentError as exc:
            return _fail(job, str(exc))
        if bar is not None:
            bar.close()
        job.result({"run": run_row, "per_seed": per_seed})  # on disk first: nothing is lost if the store stays busy
        try:
            X.store_run(args.db, run_row, per_seed)
        except StoreLocked as exc:
            if not job:
                raise
            # Kept in result.json; the Fine-tune page stores it as soon as the store is free.
            print(f"warning: {exc}; results kept in {job.dir / 'result.json'}", file=sys.stderr)
            job.update(stored=False, model_used=run_row["model_used"])
            _print_summary(run_row, args.json)
            return 0
        job.update(stored=True, model_used=run_row["model_used"])
        _print_summary(run_row, args.json)
        return 0
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return CANCELLED_RC


def _fail(job: Any, msg: str) -> int:
    job.update(error=msg)
    return _err(msg)


def _print_summary(run_row: dict[str, Any], as_json: bool) -> None:
    s = run_row["summary"]
    print(f"run {run_row['run_id']}: {run_row['experiment']} / {X.cell_title(run_row)} / model {run_row['model_used']}"
          + (f" ({run_row['model_note']})" if run_row.get("model_note") else ""))
    print(f"n_train={run_row['n_train']} n_val={run_row['n_val']} n_test={run_row['n_test']} "
          f"seeds={','.join(map(str, run_row['seeds']))}")
    for m in X.METRICS:
        mean, sd = s[m]["mean"], s[m]["sd"]
        print(f"  {X.METRIC_TITLES[m]:<10} " + ("n/a" if mean is None else f"{mean:.3f} ± {sd:.3f}"))
    if as_json:
        print(json.dumps(X.json_summary(run_row)))


def _run_table3(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from core.finetune import executors as E
    from core.finetune.train import resolve_model
    from core.store import StoreLocked

    try:
        spec = resolve_model(args.model)
        ds = X.load_dataset(args.db, args.synthetic_source, args.scrub_mode)
    except (ValueError, FileNotFoundError, StoreLocked) as exc:
        return _err(str(exc))
    except duckdb.Error as exc:
        return _err(f"{config.db_path(args.db)}: cannot be read as a store ({exc})")
    if spec.note:
        print(f"note: {spec.note}", file=sys.stderr)
    from core.jobs import context_for

    job = context_for(args)  # cancel from the page (SIGTERM -> KeyboardInterrupt): Ray tasks are cancelled too
    job.update(model_used=spec.name)
    grid_id = time.strftime("table3-%Y%m%d-%H%M%S")
    cells = [E.Cell(*c) for c in X.table3_grid()]
    grid = E.GridSpec(args.model, tuple(args.seeds), args.epochs, args.max_length, args.ratio_size, grid_id)
    executor = getattr(args, "executor", "serial")
    bar = tqdm(total=len(cells), desc=f"table3 ({executor})", unit="cell", file=sys.stderr)

    def stored(res: E.CellResult) -> None:
        if res.run is not None:  # one short transaction per cell, by the driver: a crash keeps what finished
            X.store_run(args.db, res.run, res.per_seed)

    def progress(info: dict[str, Any]) -> None:
        job.progress(throttle_s=0.25 if info.get("cell_stage") == "training" else 0.0,
                     done=info.get("cells_done", 0), total=info.get("cells_total", len(cells)), **info)
        bar.update(max(0, info.get("cells_done", 0) - bar.n))

    try:
        results = E.run_grid(ds, cells, grid, executor=executor, address=getattr(args, "address", None),
                             on_result=stored, progress=progress)
    except E.ExecutorError as exc:
        job.update(error=str(exc))
        return _err(str(exc))
    except (KeyboardInterrupt, E.GridCancelled):
        print("cancelled (finished cells are stored)", file=sys.stderr)
        return CANCELLED_RC
    finally:
        bar.close()
    runs = [r.run for r in results if r.run is not None]
    skipped = [f"{r.cell.title()}: {r.error}" for r in results if r.error is not None]
    job.update(stored=True, model_used=spec.name)
    print(f"Table 3 ({grid_id}); model: {spec.name}; scrub mode: {args.scrub_mode}; seeds: "
          f"{','.join(map(str, args.seeds))}; executor: {executor}")
    if runs:
        print(X.format_table3(X.table3_rows(runs)))
    for s in skipped:
        print(f"skipped {s}", file=sys.stderr)
    if args.json:
        print(json.dumps({"grid_id": grid_id, "runs": [X.json_summary(r) for r in runs], "skipped": skipped}))
    if skipped:
        return _err(f"{len(skipped)} of {len(cells)} cells could not run (see above)")
    return 0
