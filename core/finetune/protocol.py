"""The paper's fine-tuning experiments (section 4.1, Table 3): datasets and protocol.

Set A: labelled real trials whose intervention is among the interventions of the chosen synthetic
set (with no synthetic set: the retrieval-eligible interventions); set B: every other labelled trial.

- in-distribution: A split 60/20/20 (stratified, seeded) into train/validation/test; training on
  none / real (A train) / synthetic (all synthetic) / hybrid (A train + synthetic).
- ratio: training size fixed (default: the synthetic count, capped by A train), a share R of it
  synthetic and the rest from A train; validation and test as in-distribution.
- generalization: validation and test from B, class-balanced by downsampling the majority class,
  split in half; training none / synthetic / real (all of A) / hybrid (A + synthetic).

Each seed draws its own splits and trains its own model; results are reported as mean ± sd.
"""
from __future__ import annotations

import random
import statistics
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from core import serialize
from core.store import runs as xstore
# The paper's grid (experiments, ratios, cell names) and Table 3's formatting are core.finetune.table3's;
# re-exported here for the commands and tests that read them from the protocol.
from core.finetune.table3 import (EXPERIMENTS, METRIC_TITLES, RATIOS, SECTION_TITLES, TRAIN_TITLES,  # noqa: F401
                                  cell_title, format_table3, ratio_train_name, table3_csv_rows, table3_grid,
                                  table3_rows)

TRAIN_SETS = ("none", "real", "synthetic", "hybrid")
DEFAULT_SEEDS = (40, 41, 42)
METRICS = xstore.METRICS


class ExperimentError(ValueError):
    """The experiment cannot run on this store as asked (shown to the user as is; CLI exit 2)."""


@dataclass
class Example:
    id: str
    text: str
    label: int
    synthetic: bool = False


@dataclass
class Dataset:
    """Everything an experiment needs, read once from the store (then the store is closed)."""
    set_a: list[Example]
    set_b: list[Example]
    synthetic: list[Example]
    interventions: list[str]          # the interventions that define set A
    interventions_from: str           # where they came from (synthetic set / retrieval rule)
    scrub_mode: str = "strict"
    synthetic_source: str | None = None
    removed: dict[str, str] = field(default_factory=dict)   # nct_id -> removed fields' text (leakage audit)


@dataclass
class Split:
    train: list[Example]
    val: list[Example]
    test: list[Example]


@contextmanager
def open_read(db: str | Path | None) -> Iterator[Any]:
    """A short read-only connection (so a long run never holds the write lock); migrates first
    through a brief write connection when the store is older than this program."""
    from core.store import SchemaError, connect

    try:
        with connect(db, read_only=True, wait_s=300) as con:
            yield con
            return
    except SchemaError:
        pass
    with connect(db, wait_s=300):
        pass
    with connect(db, read_only=True, wait_s=300) as con:
        yield con


def eligible_interventions(con: Any) -> tuple[list[str], str]:
    """Retrieval-eligible interventions (the pipeline's rule, core.pipeline.retrieval): DrugBank common names."""
    from core.pipeline import retrieval

    return [d["name"] for d in retrieval.eligible_interventions(con)], "retrieval-eligible interventions (core.pipeline.retrieval)"


def load_dataset(db: str | Path | None, synthetic_source: str | None = None, scrub_mode: str = "strict") -> Dataset:
    """Read labelled real trials and the synthetic set with one short read-only connection, then
    serialize (scrubbed) after the store is closed."""
    from core.store.trials import labeled_trials

    serialize.removed_fields(scrub_mode)  # validates the mode
    with open_read(db) as con:
        real = labeled_trials(con)
        syn_rows = xstore.synthetic_rows(con, synthetic_source)
        if synthetic_source and not syn_rows:
            known = ", ".join(f"{s} ({n})" for s, n in xstore.synthetic_sources(con)) or "none"
            raise ExperimentError(f"--synthetic-source {synthetic_source!r}: no usable synthetic trials with this "
                                  f"source (sources in the store: {known})")
        keys = xstore.trial_intervention_keys(con)
        if syn_rows:
            interventions = sorted({(r["intervention"] or "").strip() for r in syn_rows if r["intervention"]})
            origin = f"interventions of the synthetic set ({synthetic_source or 'all sources'})"
        else:
            interventions, origin = eligible_interventions(con)
    wanted = {i.lower().strip() for i in interventions}
    set_a, set_b, removed = [], [], {}
    for rec in real:
        ex = Example(rec["nct_id"], serialize.classifier_text(rec, synthetic=False, mode=scrub_mode), int(rec["label"]))
        removed[rec["nct_id"]] = serialize.removed_text(rec, mode=scrub_mode)
        (set_a if keys.get(rec["nct_id"], set()) & wanted else set_b).append(ex)
    synthetic = [Example(r["id"], serialize.classifier_text(r["record"], synthetic=True, mode=scrub_mode), r["label"], True)
                 for r in syn_rows]
    return Dataset(set_a, set_b, synthetic, interventions, origin, scrub_mode, synthetic_source, removed)


# ---- splits -----------------------------------------------------------------------------------

def _stratified(items: list[Example], fractions: tuple[float, ...], seed: int) -> list[list[Example]]:
    """Split each class by the same fractions (seeded), so every part keeps the class balance."""
    rng = random.Random(seed)
    parts: list[list[Example]] = [[] for _ in fractions]
    for label in (0, 1):
        cls = [e for e in items if e.label == label]
        rng.shuffle(cls)
        start = 0
        for i, frac in enumerate(fractions):
            end = len(cls) if i == len(fractions) - 1 else start + round(frac * len(cls))
            parts[i].extend(cls[start:end])
            start = end
    for p in parts:
        rng.shuffle(p)
    return parts


def _need(items: list[Example], what: str, minimum: int = 5) -> None:
    for label, name in ((1, "successful"), (0, "failed")):
        n = sum(1 for e in items if e.label == label)
        if n < minimum:
            raise ExperimentError(f"{what}: only {n} {name} trials (need at least {minimum}); "
                                  "load more labelled trials or choose other interventions")


def _require_synthetic(ds: Dataset, train: str) -> None:
    if not ds.synthetic:
        src = f" with source {ds.synthetic_source!r}" if ds.synthetic_source else ""
        raise ExperimentError(f"--train {train}: the store has no usable synthetic trials{src} "
                              "(usable: validation status not 'invalid', not rejected in review, labelled; "
                              "table synthetic_trials; generate some with `python -m core generate` or "
                              "`python -m core import-synthetic`); --train real and --train none still work")


def normalize_ratio(ratio: float | None) -> float | None:
    """Accept 0..1 or a percentage (80 -> 0.8)."""
    if ratio is None:
        return None
    r = float(ratio)
    if r > 1:
        r /= 100.0
    if not 0 <= r <= 1:
        raise ExperimentError(f"--synthetic-ratio {ratio}: must be between 0 and 1 (or 0 and 100 %)")
    return r


def check_request(ds: Dataset, experiment: str, train: str, ratio: float | None = None) -> None:
    """Fail early, with a clear message, on requests this dataset cannot serve."""
    if experiment not in EXPERIMENTS:
        raise ExperimentError(f"--experiment {experiment!r}: choose one of {', '.join(EXPERIMENTS)}")
    if train not in TRAIN_SETS:
        raise ExperimentError(f"--train {train!r}: choose one of {', '.join(TRAIN_SETS)}")
    if experiment == "ratio":
        if ratio is None:
            raise ExperimentError("--experiment ratio needs --synthetic-ratio R (0..1: share of synthetic trials)")
        if train == "none":
            raise ExperimentError("--experiment ratio trains on a mix: --train none does not apply")
        if ratio > 0:
            _require_synthetic(ds, ratio_train_name(ratio))
    elif train in ("synthetic", "hybrid"):
        _require_synthetic(ds, train)
    _need(ds.set_a, f"set A ({ds.interventions_from})")
    if experiment == "generalization":
        _need(ds.set_b, "set B (labelled trials of the other interventions)")


def make_split(ds: Dataset, experiment: str, train: str, seed: int, ratio: float | None = None,
               train_size: int | None = None) -> Split:
    """The seeded train/validation/test split of one experiment cell."""
    check_request(ds, experiment, train, ratio)
    rng = random.Random(seed)
    if experiment in ("in-distribution", "ratio"):
        a_train, val, test = _stratified(ds.set_a, (0.6, 0.2, 0.2), seed)
        if experiment == "in-distribution":
            tr = {"none": [], "real": a_train, "synthetic": list(ds.synthetic),
                  "hybrid": a_train + list(ds.synthetic)}[train]
        else:
            n = train_size or (min(len(ds.synthetic), len(a_train)) if ds.synthetic else len(a_train))
            n_syn = round(ratio * n)
            n_real = n - n_syn
            if n_syn > len(ds.synthetic) or n_real > len(a_train):
                raise ExperimentError(f"ratio test: training size {n} at {ratio:.0%} synthetic needs {n_syn} synthetic "
                                      f"and {n_real} real trials; the store has {len(ds.synthetic)} synthetic and "
                                      f"{len(a_train)} in A's training part")
            tr = rng.sample(ds.synthetic, n_syn) + rng.sample(a_train, n_real)
    else:
        pos = [e for e in ds.set_b if e.label == 1]
        neg = [e for e in ds.set_b if e.label == 0]
        k = min(len(pos), len(neg))
        balanced = rng.sample(pos, k) + rng.sample(neg, k)
        val, test = _stratified(balanced, (0.5, 0.5), seed)
        tr = {"none": [], "real": list(ds.set_a), "synthetic": list(ds.synthetic),
              "hybrid": list(ds.set_a) + list(ds.synthetic)}[train]
    tr = list(tr)
    rng.shuffle(tr)
    return Split(tr, val, test)


# ---- protocol ---------------------------------------------------------------------------------

def mean_sd(values: list[float]) -> dict[str, float | None]:
    vals = [v for v in values if v is not None and v == v]
    if not vals:
        return {"mean": None, "sd": None}
    return {"mean": statistics.fmean(vals), "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0}


def new_run_id(experiment: str, train: str, ratio: float | None = None) -> str:
    tag = f"{experiment}-{train}" + (f"-{round(ratio * 100)}syn" if ratio is not None else "")
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{tag}-{uuid.uuid4().hex[:6]}"


def run_cell(ds: Dataset, experiment: str, train: str, model: str, seeds: list[int] | tuple[int, ...] = DEFAULT_SEEDS,
             ratio: float | None = None, epochs: int = 7, max_length: int = 512, train_size: int | None = None,
             run_id: str | None = None, grid_id: str | None = None,
             progress: Callable[[dict[str, Any]], None] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train and evaluate one cell of the grid for every seed. Returns (run row, per-seed rows)."""
    from core.finetune import train as finetune

    ratio = normalize_ratio(ratio)
    if experiment == "ratio" and ratio is not None and train != "none":
        train = ratio_train_name(ratio)  # the composition decides what the training set is
    check_request(ds, experiment, train, ratio)
    spec = finetune.resolve_model(model)
    started = time.time()
    per_seed: list[dict[str, Any]] = []
    split = None
    for i, seed in enumerate(seeds):
        split = make_split(ds, experiment, train, seed, ratio, train_size)

        def seed_progress(info: dict[str, Any], _i: int = i, _seed: int = seed) -> None:
            if progress:
                progress({"seed": _seed, "seed_index": _i, "n_seeds": len(seeds), **info})

        out = finetune.fit_predict(spec, split, seed, train_mode=train, epochs=epochs, max_length=max_length,
                                   progress=seed_progress)
        metrics, curves = finetune.compute_metrics([e.label for e in split.test], out.probs)
        per_seed.append({"seed": seed, "metrics": metrics, "curves": curves, "n_train": len(split.train),
                         "n_val": len(split.val), "n_test": len(split.test), "train_seconds": out.train_seconds,
                         "samples_per_s": out.samples_per_s, "device": out.device})
    finished = time.time()
    summary = {m: mean_sd([r["metrics"][m] for r in per_seed]) for m in METRICS}
    sps = [r["samples_per_s"] for r in per_seed if r["samples_per_s"]]
    run = {
        "run_id": run_id or new_run_id(experiment, train, ratio), "grid_id": grid_id, "experiment": experiment,
        "train": train, "synthetic_ratio": ratio, "model_requested": model, "model_used": spec.name,
        "model_note": spec.note_for(train), "seeds": list(seeds), "epochs": epochs if spec.kind == "hf" else None,
        "max_length": max_length if spec.kind == "hf" else None, "scrub_mode": ds.scrub_mode,
        "synthetic_source": ds.synthetic_source, "n_train": per_seed[0]["n_train"], "n_val": per_seed[0]["n_val"],
        "n_test": per_seed[0]["n_test"], "device": per_seed[0]["device"],
        "samples_per_s": statistics.fmean(sps) if sps else None,
        "started_at": started, "finished_at": finished, "duration_s": finished - started, "summary": summary,
    }
    return run, per_seed


def store_run(db: str | Path | None, run: dict[str, Any], per_seed: list[dict[str, Any]], wait_s: float = 600) -> None:
    """Write one run in one short transaction (connect waits while another process holds the lock)."""
    from core.store import connect

    with connect(db, wait_s=wait_s) as con:
        xstore.save_run(con, run, per_seed)


def json_summary(run: dict[str, Any]) -> dict[str, Any]:
    """The CLI's --json object: per metric {mean, sd}, plus sizes and what ran."""
    out: dict[str, Any] = {m: run["summary"][m] for m in METRICS}
    out.update({"n_train": run["n_train"], "n_test": run["n_test"], "n_val": run["n_val"], "run_id": run["run_id"],
                "model": run["model_used"], "experiment": run["experiment"], "train": run["train"],
                "synthetic_ratio": run["synthetic_ratio"]})
    return out


# ---- leakage audit ----------------------------------------------------------------------------

def leakage_audit(ds: Dataset, seed: int = 40) -> dict[str, Any]:
    """How much the REMOVED fields alone would leak: a TF-IDF + logistic regression trained on only
    the text scrubbing removed (real labelled trials), ROC-AUC on a held-out 40 %. 0.5 = no signal."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    items = [Example(e.id, ds.removed.get(e.id, ""), e.label) for e in ds.set_a + ds.set_b]
    train, test = _stratified(items, (0.6, 0.4), seed)
    result = {"fields": serialize.removed_fields(ds.scrub_mode), "n_train": len(train), "n_test": len(test),
              "non_empty": sum(1 for e in items if e.text.strip()), "n": len(items), "roc_auc": 0.5}
    if len({e.label for e in train}) < 2 or len({e.label for e in test}) < 2 or not any(e.text.strip() for e in train):
        return result
    vec = TfidfVectorizer(token_pattern=r"(?u)\b\w+\b", min_df=1)
    x_train = vec.fit_transform([e.text or "(none)" for e in train])
    clf = LogisticRegression(max_iter=1000).fit(x_train, [e.label for e in train])
    probs = clf.predict_proba(vec.transform([e.text or "(none)" for e in test]))[:, 1]
    result["roc_auc"] = float(roc_auc_score([e.label for e in test], probs))
    return result


# ---- reading stored results (pages, tests) ----------------------------------------------------

def stored_runs(db: str | Path | None) -> list[dict[str, Any]]:
    with open_read(db) as con:
        return xstore.list_runs(con)


def stored_details(db: str | Path | None, ids: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(per-seed results, curve points) of the given runs."""
    with open_read(db) as con:
        return xstore.seed_results(con, ids), xstore.curves(con, ids)


def synthetic_sources(db: str | Path | None) -> list[tuple[str, int]]:
    with open_read(db) as con:
        return xstore.synthetic_sources(con)
