"""IQVIA-style outcome annotations (`studyid,trialOutcome`) mapped to binary labels through
outcome2label.txt (tab-separated: outcome text, 1 success / 0 failure / -1 not usable -> NULL).

A trial annotated more than once takes its last binary annotation (else its last annotation).
Labels are kept for every annotated trial, in the store or not: a trial may be ingested later.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from core.ingest.common import NCT_ID, IngestError, decode_utf8



def parse_outcome_map(data: bytes, display: str) -> dict[str, int]:
    text = decode_utf8(data, display)
    out: dict[str, int] = {}
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rstrip("\r\n").split("\t")
        if len(parts) != 2 or parts[1].strip() not in ("1", "0", "-1"):
            raise IngestError(f"{display}: line {i}: expected '<trialOutcome>\\t<1|0|-1>', got {line[:120]!r}")
        out[parts[0].strip()] = int(parts[1])
    return out


def parse_outcomes(data: bytes, display: str, outcome_map: dict[str, int]) -> tuple[list[tuple], dict, list[tuple]]:
    """-> (label rows (nct_id, 'iqvia', label|None, text), counts, errors)."""
    text = decode_utf8(data, display)
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip() for h in next(reader, [])]
    if header[:2] != ["studyid", "trialOutcome"]:
        raise IngestError(f"{display}: not an outcomes CSV: header must be 'studyid,trialOutcome' (got {','.join(header)[:200]})")
    per: dict[str, tuple[int | None, str]] = {}
    errors, unmapped, rows = [], set(), 0
    for values in reader:
        if not values:
            continue
        rows += 1
        if len(values) < 2 or not NCT_ID.fullmatch(values[0].strip()):
            errors.append((display, f"row {rows}", f"{display}: row {rows}: invalid studyid or missing trialOutcome"))
            continue
        nct, outcome = values[0].strip(), values[1].strip()
        label = outcome_map.get(outcome)
        if outcome not in outcome_map:
            unmapped.add(outcome)
        label = label if label in (0, 1) else None
        prev = per.get(nct)
        if prev is None or label is not None or prev[0] is None:
            per[nct] = (label, outcome)
    if rows == 0:
        raise IngestError(f"{display}: outcomes CSV has a header but no rows")
    labels = [(nct, "iqvia", lab, text_) for nct, (lab, text_) in per.items()]
    counts = {"rows": rows, "trials": len(per), "binary": sum(1 for r in labels if r[2] is not None),
              "unmapped_outcomes": sorted(unmapped)}
    return labels, counts, errors


def default_outcome_map() -> Path:
    """The outcome map named by the data-source configuration ([iqvia_outcome_map] in data/sources.toml:
    the IQVIA outcome2label.txt), from the mirror or the download cache; so an outcomes CSV in any folder
    imports without --outcome-map."""
    from core.ingest import sources

    entries = sources.load_sources().get("iqvia_outcome_map") or []
    if not entries:
        raise IngestError(f"{sources.config.SOURCES_FILE}: names no [iqvia_outcome_map]; give --outcome-map TXT")
    path = sources.resolve(entries[0])
    if path is None:
        raise IngestError(f"{entries[0].path}: the outcome map is not available (no mirror copy, no upstream "
                          "URL); give --outcome-map TXT")
    return path
