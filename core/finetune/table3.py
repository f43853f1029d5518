"""Table 3 of the paper: its layout (three sections, every row), our runs in it, the paper's published
values beside them (data: paper_table3.toml), and the plain-text / Markdown / CSV formatting."""
from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.store.runs import METRICS

EXPERIMENTS = ("in-distribution", "ratio", "generalization")
RATIOS = (1.0, 0.8, 0.6, 0.4, 0.2, 0.0)  # the ratio test's shares of synthetic trials, in the paper's order

METRIC_TITLES = {"accuracy": "Accuracy", "precision": "Precision", "recall": "Recall", "f1": "F1",
                 "roc_auc": "ROC-AUC", "pr_auc": "PR-AUC"}
SECTION_TITLES = {"in-distribution": "In-distribution", "ratio": "Ratio", "generalization": "Generalization"}
TRAIN_TITLES = {"none": "No Fine-Tuning", "synthetic": "Synthetic", "real": "Real", "hybrid": "Hybrid"}
_ORDER = ("none", "synthetic", "real", "hybrid")
PAPER_FILE = Path(__file__).with_name("paper_table3.toml")
PAPER_NOTE = ("Paper: the published BioBERT values (Xu et al., Table 3), for reference only. Its data differ "
              "from this store's (its own synthetic set and labelled trials), so the numbers are not expected to match.")


def ratio_train_name(ratio: float) -> str:
    """What a ratio-test cell trains on: all synthetic, all real, or a mix."""
    return "synthetic" if ratio >= 1 else "real" if ratio <= 0 else "hybrid"


def table3_grid() -> list[tuple[str, str, float | None]]:
    """The paper's grid, in its row order: (experiment, train, synthetic ratio)."""
    grid: list[tuple[str, str, float | None]] = [("in-distribution", t, None) for t in _ORDER]
    grid += [("ratio", ratio_train_name(r), r) for r in RATIOS]
    grid += [("generalization", t, None) for t in _ORDER]
    return grid


def cell_key(experiment: str, train: str, ratio: float | None) -> tuple[str, str, float | None]:
    """What identifies a cell: the ratio test by its share of synthetic trials, the others by training set."""
    if experiment == "ratio" and ratio is not None:
        return (experiment, ratio_train_name(ratio), round(float(ratio), 4))
    return (experiment, train, None)


def cell_title(run: dict[str, Any]) -> str:
    if run["experiment"] == "ratio" and run.get("synthetic_ratio") is not None:
        r = run["synthetic_ratio"]
        if r >= 1:
            return "100% Synthetic"
        if r <= 0:
            return "100% Real"
        return f"{round(r * 100)}% Syn + {round((1 - r) * 100)}% Real"
    return TRAIN_TITLES.get(run["train"], run["train"])


@lru_cache(maxsize=1)
def paper_values() -> dict[tuple[str, str, float | None], dict[str, dict[str, float]]]:
    """The paper's published Table 3: cell key -> {metric: {mean, sd}} (no F1: the paper has none)."""
    try:
        data = tomllib.loads(PAPER_FILE.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{PAPER_FILE}: cannot read the paper's Table 3 values: {exc}") from exc
    out = {}
    for i, row in enumerate(data.get("row", [])):
        try:
            key = cell_key(row["experiment"], row["train"], row.get("synthetic_ratio"))
            out[key] = {m: {"mean": float(row[m][0]), "sd": float(row[m][1])} for m in data["metrics"]}
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ValueError(f"{PAPER_FILE}: row {i + 1} ({row.get('experiment')}/{row.get('train')}): "
                             f"missing or malformed field {exc}") from exc
    return out


def _row_order(run: dict[str, Any]) -> tuple:
    sec = EXPERIMENTS.index(run["experiment"]) if run["experiment"] in EXPERIMENTS else 9
    if run["experiment"] == "ratio":
        return (sec, -(run.get("synthetic_ratio") or 0), run["run_id"])
    return (sec, _ORDER.index(run["train"]) if run["train"] in _ORDER else 9, run["run_id"])


def _cells(summary: dict[str, Any] | None, metrics: list[str]) -> dict[str, dict[str, Any]]:
    cells = {}
    for m in metrics:
        s = (summary or {}).get(m) or {}
        mean, sd = s.get("mean"), s.get("sd")
        cells[m] = {"mean": mean, "sd": sd, "text": "n/a" if mean is None else f"{mean:.3f} ± {sd:.3f}",
                    "best": False}
    return cells


def _mark_best(rows: list[dict[str, Any]], metrics: list[str]) -> None:
    for section in {r["experiment"] for r in rows}:
        sec = [r for r in rows if r["experiment"] == section]
        for m in metrics:
            vals = [r["cells"][m]["mean"] for r in sec if r["cells"][m]["mean"] is not None]
            if not vals:
                continue
            best = max(vals)
            for r in sec:
                if r["cells"][m]["mean"] is not None and round(r["cells"][m]["mean"], 3) == round(best, 3):
                    r["cells"][m]["best"] = True


def table3_rows(runs: list[dict[str, Any]], metrics: list[str] | None = None) -> list[dict[str, Any]]:
    """Rows of the Table 3 layout for these runs: testing section, fine-tuning label, per metric
    mean/sd/text and whether it is the best of its section (bold in the paper)."""
    metrics = metrics or METRICS
    rows = [{"run_id": run["run_id"], "testing": SECTION_TITLES.get(run["experiment"], run["experiment"]),
             "experiment": run["experiment"], "fine_tuning": cell_title(run), "model": run.get("model_used"),
             "synthetic_ratio": run.get("synthetic_ratio"), "cells": _cells(run.get("summary"), metrics)}
            for run in sorted(runs, key=_row_order)]
    _mark_best(rows, metrics)
    return rows


def full_layout(runs: list[dict[str, Any]], metrics: list[str] | None = None) -> list[dict[str, Any]]:
    """Every row of the paper's Table 3, always: the newest of `runs` in each cell (or none: `run` None),
    the paper's published values beside it (`paper`, None for a metric it does not report)."""
    metrics = metrics or METRICS
    newest: dict[tuple, dict[str, Any]] = {}
    for run in sorted(runs, key=lambda r: (r.get("finished_at") is None, str(r.get("finished_at") or "")), reverse=True):
        newest.setdefault(cell_key(run["experiment"], run["train"], run.get("synthetic_ratio")), run)
    paper = paper_values()
    rows = []
    for experiment, train, ratio in table3_grid():
        key = cell_key(experiment, train, ratio)
        run = newest.get(key)
        ref = paper.get(key, {})
        rows.append({
            "experiment": experiment, "train": train, "synthetic_ratio": ratio,
            "testing": SECTION_TITLES[experiment],
            "fine_tuning": cell_title({"experiment": experiment, "train": train, "synthetic_ratio": ratio}),
            "run": run, "run_id": run["run_id"] if run else None, "model": run.get("model_used") if run else None,
            "cells": _cells(run.get("summary") if run else None, metrics),
            "paper": {m: ({**ref[m], "text": f"{ref[m]['mean']:.3f} ± {ref[m]['sd']:.3f}"} if m in ref else None)
                      for m in metrics},
        })
    _mark_best(rows, metrics)
    return rows


def format_table3(rows: list[dict[str, Any]], metrics: list[str] | None = None, markdown: bool = False) -> str:
    """Plain text (CLI; best marked with *) or Markdown (page; best in bold)."""
    metrics = metrics or METRICS
    head = ["Testing", "Fine-Tuning"] + [METRIC_TITLES[m] for m in metrics]
    body = []
    last = None
    for r in rows:
        cells = []
        for m in metrics:
            c = r["cells"][m]
            cells.append((f"**{c['text']}**" if markdown else f"{c['text']}*") if c["best"] else c["text"])
        section = r["testing"] if r["testing"] != last else ""
        last = r["testing"]
        body.append([section, r["fine_tuning"]] + cells)
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = lambda row: "  ".join(str(x).ljust(w) for x, w in zip(row, widths))  # noqa: E731
    lines = [fmt(head), "  ".join("-" * w for w in widths)] + [fmt(row) for row in body]
    return "\n".join(lines) + "\n(* best of its section)"


def table3_csv_rows(rows: list[dict[str, Any]], metrics: list[str] | None = None) -> list[dict[str, Any]]:
    metrics = metrics or METRICS
    out = []
    for r in rows:
        d = {"run_id": r["run_id"], "testing": r["testing"], "fine_tuning": r["fine_tuning"], "model": r["model"]}
        for m in metrics:
            d[f"{m}_mean"] = r["cells"][m]["mean"]
            d[f"{m}_sd"] = r["cells"][m]["sd"]
            if "paper" in r:
                p = r["paper"].get(m)
                d[f"{m}_paper_mean"] = p["mean"] if p else None
                d[f"{m}_paper_sd"] = p["sd"] if p else None
        out.append(d)
    return out
