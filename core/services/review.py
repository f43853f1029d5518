"""What the Synthetic reports page calls: the filtered synthetic trials (filtered by the store), one
trial's few-shot examples, review decisions (saved with a check that nothing changed underneath, read
back, kept in the history) and the export."""
from __future__ import annotations

import getpass
import os
from typing import Any

from core import config, export
from core.store import StoreLocked, connect
from core.store import synthetic as syn

READ_WAIT_S = 5.0
REVIEW_OPTIONS = ("accepted", "rejected", "flagged", "not reviewed")
USABLE_RULE = syn.USABLE_RULE_TEXT

__all__ = ["StoreLocked", "ReviewConflict", "REVIEW_OPTIONS", "USABLE_RULE", "overview", "trials", "examples",
           "get_trial", "save_review", "history", "reviewer", "export_set"]

ReviewConflict = syn.ReviewConflict


def reviewer() -> str:
    """Who is reviewing: the OS user running the app (no login in this tool)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER") or "unknown"


def overview(db: str | os.PathLike) -> dict[str, Any]:
    """Runs and the filter choices (sources, interventions) with the total count."""
    with connect(db, read_only=True, wait_s=READ_WAIT_S) as con:
        return {"runs": syn.list_runs(con), **syn.filter_choices(con)}


def trials(db: str | os.PathLike, *, run_id: str | None = None, source: str | None = None,
           intervention: str | None = None, label: int | None = None, validation_status: str | None = None,
           review: str | None = None) -> list[dict[str, Any]]:
    """The synthetic trials matching the filters (the store filters; `review` 'not reviewed' = none yet)."""
    with connect(db, read_only=True, wait_s=READ_WAIT_S) as con:
        return syn.list_synthetic(con, run_id=run_id, source=source, intervention=intervention, label=label,
                                  validation_status=validation_status, review=review)


def get_trial(db: str | os.PathLike, synthetic_id: str) -> dict[str, Any] | None:
    with connect(db, read_only=True, wait_s=READ_WAIT_S) as con:
        return syn.get_synthetic(con, synthetic_id)


def examples(db: str | os.PathLike, nct_ids: list[str]) -> dict[str, dict]:
    """Canonical records of a trial's few-shot examples that are in the store."""
    from core.store.trials import get_records

    with connect(db, read_only=True, wait_s=READ_WAIT_S) as con:
        return get_records(con, list(nct_ids))


def save_review(db: str | os.PathLike, synthetic_id: str, decision: str, note: str | None,
                expected: tuple[str | None, str | None] | None) -> dict[str, Any]:
    """Store a decision ('not reviewed' clears it) for exactly this trial and return the stored row, read
    back. `expected` is the (status, note) the person saw: when the store holds something else (another
    window saved in between) nothing is written and ReviewConflict says what is there."""
    if decision not in REVIEW_OPTIONS:
        raise ValueError(f"decision must be one of {REVIEW_OPTIONS}, not {decision!r}")
    status = None if decision == "not reviewed" else decision
    with connect(db, wait_s=10) as con:
        syn.set_review(con, synthetic_id, status, (note or "").strip() or None, reviewer=reviewer(),
                       expected=expected)
        return syn.get_synthetic(con, synthetic_id)


def history(db: str | os.PathLike, synthetic_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    with connect(db, read_only=True, wait_s=READ_WAIT_S) as con:
        return syn.review_history(con, synthetic_id, limit=limit)


def export_set(rows: list[dict[str, Any]], name: str, slug: str, filters: dict[str, Any]) -> dict[str, Any]:
    """JSON Lines, Parquet and a Hugging Face dataset (written under data/exports/<slug>) of these trials."""
    out = export.export_rows(rows)
    hf_dir = export.write_hf_dataset(out, config.DATA_DIR / "exports" / slug, name, filters)
    return {"slug": slug, "n": len(out), "jsonl": export.to_jsonl(out), "parquet": export.to_parquet(out),
            "hf_zip": export.zip_dir(hf_dir), "dir": str(hf_dir)}
