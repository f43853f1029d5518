"""`python -m core analyze`: embeddings, cosine-similarity statistics and quality metrics.

With `--json` the last line of stdout is one JSON object (cosine statistics of the three pair
types, detection_auc, nearest-record distances, diversity). With no synthetic trials in the store
(or an unknown --synthetic-source) it exits 2 with a message saying so: a comparison needs both
sides, and a real-only report would look like a result.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from core.analysis.corpus import AnalysisError


def run(args: argparse.Namespace) -> int:
    from core import config
    from core.analysis import quality as analysis

    from core.jobs import context_for

    job = context_for(args)
    db = config.db_path(args.db)
    if not db.exists():
        print(f"error: {db}: no store here (--db)", file=sys.stderr)
        return 2
    try:
        params = analysis.AnalysisParams(
            synthetic_source=args.synthetic_source, real_scope=args.real, pairs=args.pairs, seed=args.seed,
            encoder=args.encoder, max_real=args.max_real, max_synthetic=args.max_synthetic,
            copy_threshold=args.copy_threshold, synthetic_rule=args.synthetic_rule)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        job.update(error=str(exc))
        return 2
    sources: list[str | None] = [args.synthetic_source]
    if args.each_set:
        from core.store import embeddings as store
        from core.store import connect

        with connect(db) as con:
            sources = [s for s, _ in store.synthetic_sources(con, args.synthetic_rule)] or [None]
    code, failed = 0, []
    for k, source in enumerate(sources):
        p = params if source == params.synthetic_source else dataclasses.replace(params, synthetic_source=source)
        label = f"[{k + 1}/{len(sources)}: {source}] " if len(sources) > 1 else ""
        one = _run_one(args, db, p, label, job)
        if one:
            failed.append(str(source))
        code = max(code, one)
    if code == 0:
        job.progress(stage="Done", fraction=1.0)
    elif len(sources) > 1:  # one set's message alone would hide which sets failed
        job.update(error=f"failed for: {', '.join(failed)} (see the job's log.txt)")
    return code


def _run_one(args: argparse.Namespace, db, params, label: str, job: Any) -> int:
    from core.analysis import quality as analysis

    from tqdm import tqdm

    bar = tqdm(total=100, file=sys.stderr, disable=None, bar_format="{desc} {percentage:3.0f}%|{bar}|")
    state = {"stage": None}

    def progress(stage: str, frac: float) -> None:
        if stage != state["stage"]:
            state["stage"] = stage
            bar.set_description_str((label + stage)[:70])
        bar.n = int(round(frac * 100))
        bar.refresh()
        job.progress(stage=label + stage, fraction=frac)

    try:
        out = analysis.run(db, params, projections=args.projection, recompute=args.recompute, progress=progress)
    except AnalysisError as exc:
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        job.update(error=label + str(exc))
        return 2
    except Exception as exc:  # the page shows it; the traceback goes to the job's log
        bar.close()
        job.update(error=f"{label}{type(exc).__name__}: {exc}")
        raise
    bar.close()
    q = out["quality"]
    summary = analysis.cli_summary(q)
    if q.get("encoder_note"):
        print(f"note: {q['encoder_note']}", file=sys.stderr)
    if out["reused"]:
        print(f"reused stored results ({', '.join(out['reused'])}); --recompute to compute again", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
        return 0
    _print_table(summary, out)
    return 0


def _fmt(v) -> str:
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def _print_table(s: dict, out: dict) -> None:
    print(f"synthetic set: {s['synthetic_source'] or 'all'}   encoder: {s['encoder']}   "
          f"real: {s['n_real']}   synthetic: {s['n_synthetic']}")
    print("cosine similarity of sampled pairs:")
    for k, v in s["cosine"].items():
        print(f"  {k:<20} n={v['n']:<6} mean={_fmt(v['mean'])} sd={_fmt(v['sd'])}")
    print(f"detection AUC (0.5 = indistinguishable): {_fmt(s['detection_auc'])}")
    n = s["nearest_real_distance"]
    print(f"distance to closest real record: min={_fmt(n['min'])} median={_fmt(n['median'])} mean={_fmt(n['mean'])}"
          f"   (real to real: median={_fmt(s['real_nearest_real_distance']['median'])})")
    print(f"near copies (distance <= {s['copy_threshold']}): {s['near_copies']}")
    d = s["diversity"]
    print(f"diversity: synthetic mean pairwise cosine={_fmt(d['synthetic_mean_pairwise_cosine'])} "
          f"distinct-1={_fmt(d['synthetic_distinct_1'])} distinct-2={_fmt(d['synthetic_distinct_2'])}")
    print(f"intervention match rate: {_fmt(s['intervention_match_rate'])}   leakage rate: {_fmt(s['leakage_rate'])}")
    for m in out["projections"]:
        print(f"{m} projection stored ({len(out['projections'][m]['points'])} points)")
