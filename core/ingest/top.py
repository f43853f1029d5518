"""TOP benchmark CSVs (HINT; columns nctid,status,why_stop,label,phase,diseases,icdcodes,drugs,
smiless,criteria) -> canonical records and TOP labels.

List columns are Python literals: parsed with ast.literal_eval, never eval. A trial listed in
several files becomes one record: its fields and label come from the first file given (the
order of sources.toml for sample-data); `top_files` lists every file that has it.
"""
from __future__ import annotations

import ast
import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from core.ingest.common import NCT_ID, IngestError, clean, decode_utf8, dedent_block, dir_files
from core.record import empty_record

REQUIRED = ["nctid", "status", "why_stop", "label", "phase", "diseases", "drugs", "criteria"]
csv.field_size_limit(1 << 30)


@dataclass
class TopResult:
    records: dict[str, dict] = field(default_factory=dict)   # nct_id -> record (with top_files)
    labels: dict[str, tuple] = field(default_factory=dict)   # nct_id -> (nct_id, 'top', label, text)
    rows: int = 0
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # (file, member/row, message)


def _literal_list(value: str, column: str, where: str) -> list[str]:
    value = (value or "").strip()
    if not value:
        return []
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise ValueError(f"{where}: column {column!r} is not a Python literal list") from None
    if not isinstance(parsed, (list, tuple)):
        raise ValueError(f"{where}: column {column!r} is not a list")
    return [str(v).strip() for v in parsed if v is not None and str(v).strip()]


def _status(value: str) -> str | None:
    value = clean(value)
    return value[0].upper() + value[1:] if value else None


def _phase(value: str) -> str | None:
    value = clean(value)
    if not value:
        return None
    value = re.sub(r"\bphase\b", "Phase", value)  # 'phase 1/phase 2' -> 'Phase 1/Phase 2'
    return value[0].upper() + value[1:]              # 'early Phase 1' -> 'Early Phase 1


def outcome_text(status: str | None, why_stop: str | None) -> str | None:
    status, why_stop = clean(status), clean(why_stop)
    if status and why_stop:
        return f"{status}: {why_stop}"
    return status or why_stop


def map_row(row: dict[str, str], raw: str, display: str) -> tuple[dict[str, Any], tuple]:
    """One CSV row -> (record, label row). Raises ValueError naming the problem."""
    nct = (row.get("nctid") or "").strip()
    if not NCT_ID.fullmatch(nct):
        raise ValueError(f"invalid nctid {nct!r}")
    label = (row.get("label") or "").strip()
    if label not in ("0", "1"):
        raise ValueError(f"{nct}: label must be 0 or 1, got {label!r}")
    rec = empty_record(nct)
    rec["overall_status"] = _status(row.get("status"))
    rec["why_stopped"] = clean(row.get("why_stop"))
    rec["phase"] = _phase(row.get("phase"))
    rec["study_type"] = "Interventional"
    rec["conditions"] = _literal_list(row.get("diseases"), "diseases", nct)
    drugs = list(dict.fromkeys(_literal_list(row.get("drugs"), "drugs", nct)))  # repeated per arm in TOP
    rec["interventions"] = [{"type": "Drug", "name": d, "description": None, "other_names": []} for d in drugs]
    crit = row.get("criteria") or ""
    rec["eligibility_criteria"] = dedent_block(crit)
    rec["sources"] = ["top"]
    rec["source"] = "top"
    rec["raw_format"] = "csv"
    rec["raw_document"] = raw
    rec["top_files"] = [display]
    return rec, (nct, "top", int(label), outcome_text(row.get("status"), row.get("why_stop")))


def parse_top(data: bytes, display: str, result: TopResult) -> int:
    """Add one TOP CSV to `result`. Wrong header / empty / non-UTF-8 -> IngestError; a broken row is
    recorded in result.errors and skipped. Returns the number of rows read."""
    text = decode_utf8(data, display)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as exc:
        raise IngestError(f"{display}: no CSV header ({exc})") from None
    # Some published files carry a leading unnamed index column.
    names = [h.strip() for h in header]
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise IngestError(f"{display}: not a TOP CSV: header lacks {', '.join(missing)} (got {','.join(names)[:200]})")
    n = kept = 0
    errors_before = len(result.errors)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    head_cols = [h for h in names if h]
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            result.errors.append((display, f"line {reader.line_num}", f"{display}: line {reader.line_num}: {exc}"))
            continue
        if not values:
            continue
        n += 1
        where = f"row {n}"
        if len(values) != len(names):
            result.errors.append((display, where, f"{display}: {where}: {len(values)} fields, header has {len(names)}"))
            continue
        row = dict(zip(names, values))
        out.seek(0)
        out.truncate()
        writer.writerow(head_cols)
        writer.writerow([row[h] for h in head_cols])
        try:
            rec, label = map_row(row, out.getvalue(), display)
        except ValueError as exc:
            result.errors.append((display, where, f"{display}: {where}: {exc}"))
            continue
        kept += 1
        nct = rec["nct_id"]
        prev = result.records.get(nct)
        if prev is None:
            result.records[nct] = rec
            result.labels[nct] = label
        elif display not in prev["top_files"]:
            prev["top_files"].append(display)
    result.rows += n
    if n == 0:
        raise IngestError(f"{display}: TOP CSV has a header but no rows")
    if kept == 0:
        raise IngestError(f"{display}: none of its {n} rows is usable (first: {result.errors[errors_before][2]})")
    return n


def top_files(paths: Iterable[Path]) -> list[tuple[Path, str]]:
    """--top arguments (files or directories of *.csv) -> (file, name recorded in top_files), in order."""
    out = []
    for p in map(Path, paths):
        files = dir_files(p, "*.csv", "*.csv files")
        if files is not None:
            out.extend((f, str(f)) for f in files)
        else:
            out.append((p, str(p)))
    return out
