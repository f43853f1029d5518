"""`python -m core ingest ...`, `python -m core sample-data --db PATH` and `python -m core fetch-ctgov ...`."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from core import config


class _Bars:
    """tqdm bars per stage, fed by the ingest progress callback; also the job's progress when the
    command runs as a background job (the Home page polls it)."""

    def __init__(self, job: Any = None) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bars: dict[str, object] = {}
        self.job = job

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.job:
            self.job.progress(throttle_s=0.5 if 0 < done < total else 0.0, stage=stage, done=done, total=total)
        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = self._tqdm(total=total, desc=stage, unit="rec" if stage in ("xml", "json", "fetch") else "step",
                                                leave=False, file=sys.stderr, mininterval=0.5,
                                                disable=None)  # no bars when stderr is not a terminal
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _print_summary(summary: dict) -> None:
    parts = []
    for key, name in (("xml", "XML"), ("ctgov_json", "API v2 JSON"), ("top", "TOP")):
        if key in summary:
            s = summary[key]
            n = s.get("records", s.get("trials"))
            parts.append(f"{name}: {n} trials ({s['skipped']} skipped)")
    if "iqvia" in summary:
        parts.append(f"IQVIA: {summary['iqvia']['binary']} binary labels of {summary['iqvia']['trials']} trials")
    if "drugbank" in summary:
        parts.append(f"DrugBank: {summary['drugbank']['drugs']} drugs")
    print("; ".join(parts) or "nothing to import")
    print(f"intervention matches: {summary['intervention_matches']}; errors: {summary['errors']} "
          f"({summary['seconds']} s)")
    for e in summary.get("error_examples", []):
        print(f"  skipped: {e}")
    if summary["errors"] > len(summary.get("error_examples", [])):
        print(f"  ... see the ingest_errors table (command_id {summary['command_id']})")
    if summary.get("skipped_sources"):
        print("sources not available (no mirror copy, no upstream URL): " + ", ".join(summary["skipped_sources"]))


def _print_fetch_summary(s: dict) -> None:
    print(f"fetch-ctgov from {s['base_url']}: {s['requested']} trials without a full record; "
          f"fetched {s['fetched']}, from the cache of an earlier run {s['from_cache']}, "
          f"not found upstream {len(s['not_found'])}, failed {len(s['failed'])} "
          f"({s['requests']} requests, {s['seconds']} s)")
    if s["not_found"]:
        print("  not found upstream: " + ", ".join(s["not_found"][:20]) + (" ..." if len(s["not_found"]) > 20 else ""))
    for e in s["errors"][:10]:
        print(f"  error: {e}")
    if s["failed"]:
        print("  failed ids are still missing: run the same command again to retry them")


def _fetch(args: argparse.Namespace, db) -> int:
    from core.ingest import IngestError
    from core.ingest.fetch_ctgov import fetch_ctgov
    from core.store import SchemaError, StoreLocked

    if args.rate <= 0:
        print("error: --rate must be > 0", file=sys.stderr)
        return 2
    bars = _Bars()
    try:
        summary = fetch_ctgov(db, missing=args.missing, labelled=args.labelled, ids_file=args.ids,
                              base_url=args.base_url, page_size=args.page_size, rate=args.rate, progress=bars,
                              log=lambda msg: print(msg, file=sys.stderr))
    except (IngestError, SchemaError, StoreLocked) as exc:
        bars.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bars.close()
    _print_fetch_summary(summary)
    return 1 if summary["failed"] else 0


def run(args: argparse.Namespace) -> int:
    from core.ingest import IngestError, ingest, sample_data
    from core.store import SchemaError, StoreLocked

    from core.jobs import context_for

    db = config.db_path(args.db)
    if args.command == "fetch-ctgov":
        return _fetch(args, db)
    bars = _Bars(context_for(args))
    try:
        if args.command == "sample-data":
            summary = sample_data(db, progress=bars)
        else:
            if args.outcome_map and not args.outcomes:
                print("error: --outcome-map needs --outcomes", file=sys.stderr)
                return 2
            if not (args.xml or args.ctgov_json or args.top or args.outcomes or args.drugbank):
                print("error: nothing to import: give --xml, --ctgov-json, --top, --outcomes or --drugbank",
                      file=sys.stderr)
                return 2
            summary = ingest(db, xml=args.xml, ctgov_json=args.ctgov_json, top=args.top, outcomes=args.outcomes,
                             outcome_map=args.outcome_map, drugbank=args.drugbank, progress=bars)
    except (IngestError, SchemaError, StoreLocked) as exc:
        bars.close()
        print(f"error: {exc}", file=sys.stderr)
        print("the store was not changed", file=sys.stderr)
        return 2
    bars.close()
    _print_summary(summary)
    return 0


