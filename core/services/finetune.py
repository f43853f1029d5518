"""The Fine-tune and Experiments pages' calls: the dataset a run would see (with how many synthetic trials
exist, how many are usable and why the rest are not), the leakage audit, the model that would run,
fine-tuning runs and Table 3 grids as background jobs (start, list, cancel, store results that finished
while the store was busy), and the stored results in the paper's Table 3 layout."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from core import jobs
from core.finetune import protocol as X
from core.finetune import table3 as T3
from core.finetune.train import BIOBERT  # noqa: F401  (the page's default for "other model")
from core.services.wording import plural
from core.store import synthetic as syn

EXPERIMENTS = X.EXPERIMENTS
TRAIN_SETS = X.TRAIN_SETS
METRICS = X.METRICS
DEFAULT_SEEDS = X.DEFAULT_SEEDS
USABLE_RULE = syn.USABLE_RULE_TEXT
ratio_train_name = X.ratio_train_name
EXPERIMENT_HELP = {
    "in-distribution": "validation and test from set A (60/20/20 split)",
    "ratio": "fixed training size, a share of it synthetic; validation and test from set A",
    "generalization": "validation and test from set B (other interventions), class-balanced",
}

@dataclass(frozen=True)
class RunRequest:
    """One cell of the grid with its settings: what a background fine-tuning run is asked to do."""

    experiment: str
    train: str
    model: str = "tfidf"
    seeds: tuple[int, ...] = X.DEFAULT_SEEDS
    synthetic_ratio: float | None = None
    epochs: int = 7
    max_length: int = 512
    scrub_mode: str = "strict"
    synthetic_source: str | None = None


def dataset(db: str | os.PathLike, source: str | None, mode: str) -> X.Dataset:
    return X.load_dataset(db, source, mode)


def leakage_audit(ds: X.Dataset) -> dict[str, Any]:
    return X.leakage_audit(ds)


def model_info(model: str) -> tuple[str, str]:
    """(name of the model that would run, note); name '' when the model cannot run here."""
    from core.finetune import train

    try:
        spec = train.resolve_model(model)
    except ValueError as exc:
        return "", str(exc)
    return spec.name, spec.note


def synthetic_sources(db: str | os.PathLike) -> list[tuple[str, int]]:
    """(source, usable trials) of every synthetic set with usable trials."""
    return X.synthetic_sources(db)


def synthetic_counts(db: str | os.PathLike, source: str | None = None) -> dict[str, int]:
    """How many synthetic trials exist, how many are usable, and the count of each reason the rest are not."""
    with X.open_read(db) as con:
        return syn.usable_counts(con, source)


def synthetic_message(counts: dict[str, int]) -> str:
    """The counts in words, for a person: how many exist, how many can be used and why the others cannot."""
    total, usable = counts["total"], counts["usable"]
    if total == 0:
        return ("There are no synthetic trials in this store yet: generate some on the Generate page or import a "
                "published set. Until then only the real-data and no-fine-tuning runs can start.")
    head = f"{plural(total, 'synthetic trial')} in the store; {usable:,} can be used for training"
    why = [f"{counts[k]:,} {text}" for k, text in (
        ("invalid", "failed validation (status invalid)"), ("rejected", "rejected in review"),
        ("unlabelled", "without an intended success/failure label"), ("no_record", "without a record"))
        if counts.get(k)]
    if usable == total or not why:
        return head + "."
    return f"{head}. Not usable: {'; '.join(why)}."


def request_problem(ds: X.Dataset, req: RunRequest, counts: dict[str, int] | None = None) -> str | None:
    """Why this run cannot start on this dataset, in words for a person (None: it can)."""
    try:
        X.check_request(ds, req.experiment, req.train, req.synthetic_ratio)
    except X.ExperimentError as exc:
        needs_synthetic = (req.train in ("synthetic", "hybrid") if req.experiment != "ratio"
                           else (req.synthetic_ratio or 0) > 0)
        if needs_synthetic and not ds.synthetic:
            where = f" of the set {req.synthetic_source}" if req.synthetic_source else ""
            return ("This run trains on synthetic trials, but none" + where + " can be used. "
                    + (synthetic_message(counts) if counts else "")
                    + " Real-data and no-fine-tuning runs still work.").replace("  ", " ")
        return str(exc)
    return None


def stored_runs(db: str | os.PathLike) -> list[dict[str, Any]]:
    return X.stored_runs(db)


def stored_details(db: str | os.PathLike, ids: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return X.stored_details(db, ids)


def blocked_cells(db: str | os.PathLike, source: str | None, mode: str = "strict") -> dict[tuple, str | None]:
    """For every cell of Table 3: why it cannot run on this store (None: it can)."""
    ds = dataset(db, source, mode)
    counts = synthetic_counts(db, source)
    return {T3.cell_key(e, t, r): request_problem(ds, RunRequest(e, t, synthetic_ratio=r, synthetic_source=source),
                                                  counts)
            for e, t, r in T3.table3_grid()}


def table3_layout(db: str | os.PathLike, runs: list[dict[str, Any]], settings: RunRequest,
                  blocked: dict[tuple, str | None]) -> list[dict[str, Any]]:
    """Every row of the paper's Table 3: our newest run of the cell (or none), the paper's values, the
    background run now working on it (`job`), the request that would run it and why it cannot (`blocked`)."""
    rows = T3.full_layout(runs)
    active = {}
    for j in list_runs(db):
        p = j.params
        if j.active and j.kind == "finetune" and p.get("experiment"):
            ratio = X.normalize_ratio(p.get("synthetic_ratio"))
            train = p.get("train") or X.ratio_train_name(ratio or 0)
            active[T3.cell_key(p["experiment"], train, ratio)] = j.id
    for r in rows:
        key = T3.cell_key(r["experiment"], r["train"], r["synthetic_ratio"])
        r["request"] = RunRequest(r["experiment"], r["train"], settings.model, settings.seeds, r["synthetic_ratio"],
                                  settings.epochs, settings.max_length, settings.scrub_mode, settings.synthetic_source)
        r["job"] = active.get(key)
        r["blocked"] = blocked.get(key)
        r["blocked_short"] = (None if not r["blocked"] else "needs usable synthetic trials"
                              if r["blocked"].startswith("This run trains on synthetic") else r["blocked"][:90])
    return rows


def start(db: str | os.PathLike, req: RunRequest) -> str:
    """Start one cell (a RunRequest) in the background; returns its run id."""
    return start_run(db, experiment=req.experiment, train=None if req.experiment == "ratio" else req.train,
                     model=req.model, seeds=req.seeds, epochs=req.epochs, max_length=req.max_length,
                     synthetic_ratio=req.synthetic_ratio if req.experiment == "ratio" else None,
                     synthetic_source=req.synthetic_source, scrub_mode=req.scrub_mode)


def start_run(db: str | os.PathLike, *, experiment: str, train: str | None, model: str,
              seeds: list[int] | tuple[int, ...] = X.DEFAULT_SEEDS, epochs: int | None = None,
              max_length: int | None = None, synthetic_ratio: float | None = None, ratio_size: int | None = None,
              synthetic_source: str | None = None, scrub_mode: str = "strict", json: bool = True) -> str:
    """One experiment cell (`python -m core finetune ...`) in the background; returns its run id,
    which is also its job id and the id of the stored run."""
    ratio = X.normalize_ratio(synthetic_ratio)
    if train is None:
        train = "hybrid" if ratio is None or 0 < ratio < 1 else "synthetic" if ratio >= 1 else "real"
    run_id = X.new_run_id(experiment, train, ratio)
    params = {"experiment": experiment, "train": train, "synthetic_ratio": synthetic_ratio,
              "ratio_size": ratio_size, "model": model, "seeds": list(seeds), "epochs": epochs,
              "max_length": max_length, "synthetic_source": synthetic_source, "scrub_mode": scrub_mode,
              "json": json, "run_id": run_id}
    return jobs.start(jobs.JobSpec(kind="finetune", db=db, params=params, job_id=run_id))


def start_table3(db: str | os.PathLike, *, model: str, seeds: list[int] | tuple[int, ...] = X.DEFAULT_SEEDS,
                 **options: Any) -> str:
    """The whole Table 3 grid (`python -m core experiment table3 ...`) in the background."""
    params = {"model": model, "seeds": list(seeds), **options}
    return jobs.start(jobs.JobSpec(kind="table3", db=db, params=params))


def list_runs(db: str | os.PathLike) -> list[jobs.Job]:
    """Fine-tuning and Table 3 jobs of this store, newest first."""
    return [j for j in jobs.list_jobs(db=db) if j.kind in ("finetune", "table3")]


def store_pending(db: str | os.PathLike) -> list[str]:
    """Store finished runs whose result file never reached the store (the store stayed busy past the
    child's wait). Idempotent: store_run replaces by run_id."""
    done = []
    for j in jobs.list_jobs(kind="finetune", db=db):
        if j.state == "done" and j.has_result and not j.status.get("stored"):
            data = jobs.read_result(j.id)
            if not data:
                continue
            X.store_run(db, data["run"], data["per_seed"], wait_s=10)
            jobs.JobContext(j.dir).update(stored=True)
            done.append(j.id)
    return done




def run_view(j: jobs.Job) -> dict[str, Any]:
    """A job as the runs table shows it."""
    p = j.params
    ratio = p.get("synthetic_ratio")
    return {"run_id": j.id, "kind": j.kind, "status": j.state, "progress": j.progress, "fraction": j.fraction,
            "model": j.status.get("model_used") or p.get("model") or "",
            "experiment": p.get("experiment") or ("table3" if j.kind == "table3" else ""),
            "training": (f"{float(ratio):.0%} synthetic" if ratio is not None else p.get("train") or ""),
            "started_at": j.status.get("started_at"), "finished_at": j.status.get("finished_at"),
            "duration_s": j.duration_s, "stored": bool(j.status.get("stored")), "error": j.error}


def run_views(db: str | os.PathLike) -> list[dict[str, Any]]:
    return [run_view(j) for j in list_runs(db)]


def any_active(db: str | os.PathLike) -> bool:
    return any(j.active for j in list_runs(db))


cancel = jobs.cancel
log_tail = jobs.log_tail
ACTIVE = jobs.ACTIVE
