"""`python -m core stats --db PATH [--json]`: what is in the store."""
from __future__ import annotations

import argparse
import json
import sys

from core import config


def collect(db, migrate: bool = False) -> dict:
    """Read-only where possible (other processes may read at the same time); an older store is
    opened for writing once, which migrates it."""
    from core.store import SchemaError, connect
    from core.store.synthetic import counts_by_status
    from core.store.trials import store_stats

    def read(con) -> dict:
        return {**store_stats(con), "synthetic_by_status": counts_by_status(con)}

    if not migrate:
        try:
            with connect(db, read_only=True) as con:
                return read(con)
        except SchemaError as exc:
            if "newer version" in str(exc):
                raise
    with connect(db, read_only=False) as con:
        return read(con)


def _readable(s: dict) -> str:
    from core.store.retrieval import MIN_EACH

    src = s["sources"]
    lines = [
        f"trials:                 {s['trials']:,} (XML {src['ctgov_xml']:,}, API v2 JSON {src['ctgov_json']:,}, "
        f"TOP {src['top']:,}; TOP and a full record {src['top_and_full_record']:,})",
        f"labelled:               {s['labeled']:,} ({s['positive']:,} success, {s['negative']:,} failure)",
        f"labelled, full record:  {s['labelled_full_records']:,} (a full ClinicalTrials.gov record, not only a TOP row)",
        f"label conflicts:        {s['label_conflicts']:,} (TOP vs IQVIA; effective label by preference "
        f"{','.join(config.label_preference())})",
        f"DrugBank drugs:         {s['drugbank_drugs']:,}",
        f"intervention matches:   {s['intervention_matches']['interventions']:,} interventions in "
        f"{s['intervention_matches']['trials']:,} trials, {s['intervention_matches']['drugs']:,} drugs",
        f"eligible interventions: {s['eligible_interventions']:,} in {s['eligible_trials']:,} trials "
        f"(>= {MIN_EACH} success and >= {MIN_EACH} failure trials; "
        f"first drug only: {s['eligible_interventions_first_drug']:,} in {s['eligible_first_drug_trials']:,} trials)",
        f"synthetic trials:       {s['synthetic']:,} (generation failures: {s['generation_failures']:,})",
        f"ingest errors:          {s['ingest_errors']:,}",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from core.store import SchemaError, StoreLocked

    db = config.db_path(args.db)
    if not db.exists():
        print(f"error: {db}: no store here yet (run `python -m core sample-data --db {db}`)", file=sys.stderr)
        return 2
    try:
        stats = collect(db, migrate=args.migrate)
    except (SchemaError, StoreLocked) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(stats) if args.json else _readable(stats))
    return 0
