"""`python -m core import-synthetic`: load a published synthetic trial set (the paper's format).

The set is a directory of `synthetic_clinical_report_{i}.txt` files (JSON-like trial reports; the
directory may hold only some indices), a label file whose line i (from 0) is the label of report i
(1 success, 0 failure) and optionally an intervention list whose line i belongs to report i.

Every report is parsed and validated like a generated trial and stored under its source name
(`<source>:<i>`), apart from generated runs. All or nothing: bad input (unreadable file, bad label,
a report without a label line) stops the import with exit 2 and stores nothing.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from core import config
from core.pipeline.generation import generated_intervention, parse_trial, to_record
from core.pipeline.reasoning import FormatError
from core.store import connect
from core.store import synthetic as store
from core.pipeline.validation import validate

REPORT_RE = re.compile(r"^synthetic_clinical_report_(\d+)\.txt$")


class ImportInputError(ValueError):
    """Bad input; the message names the file (and line)."""


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImportInputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportInputError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def read_labels(path: Path) -> list[int]:
    lines = _read_text(path).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    labels = []
    for no, line in enumerate(lines, 1):
        value = line.strip()
        if value not in ("0", "1"):
            raise ImportInputError(f"{path}: line {no}: label must be 0 or 1, not {value!r}")
        labels.append(int(value))
    if not labels:
        raise ImportInputError(f"{path}: no labels")
    return labels


def read_interventions(path: Path) -> list[str]:
    lines = _read_text(path).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.strip() for line in lines]


def find_reports(directory: Path) -> dict[int, Path]:
    if not directory.is_dir():
        raise ImportInputError(f"{directory}: not a directory")
    reports = {}
    for p in sorted(directory.iterdir()):
        m = REPORT_RE.match(p.name)
        if m and p.is_file():
            reports[int(m.group(1))] = p
    if not reports:
        raise ImportInputError(f"{directory}: no synthetic_clinical_report_{{i}}.txt files")
    return reports


def build_rows(reports: dict[int, Path], labels: list[int], interventions: list[str] | None, source: str,
               labels_path: Path, interventions_path: Path | None, synonyms_for=None) -> list[dict[str, Any]]:
    rows = []
    for i, path in sorted(reports.items()):
        if i >= len(labels):
            raise ImportInputError(f"{path.name}: no label for report {i} ({labels_path} has {len(labels)} lines; "
                                   f"line {i + 1} would be its label)")
        if interventions is not None and (i >= len(interventions) or not interventions[i]):
            raise ImportInputError(f"{path.name}: no intervention for report {i} ({interventions_path} line {i + 1} "
                                   "is missing or empty)")
        text = _read_text(path)
        if not text.strip():
            raise ImportInputError(f"{path}: empty report")
        intended = interventions[i] if interventions is not None else None
        record, how, error = None, None, None
        try:
            parsed, how = parse_trial(text)
            record = to_record(parsed)
        except FormatError as exc:
            error = f"{path.name}: {exc}"
        synonyms = synonyms_for(intended) if (synonyms_for and intended) else []
        status, checks = validate(record, intended_intervention=intended, synonyms=synonyms, examples=None,
                                  parse_error=error)
        gen = generated_intervention(record) if record else None
        sid = f"{source}:{i}"
        rows.append({
            "id": sid, "run_id": None, "source": source, "item_index": i, "intended_intervention": intended or gen,
            "intended_label": labels[i], "generated_intervention": gen,
            "intervention_match": bool(checks.get("intervention", {}).get("ok")) if intended else None,
            "record": dict(record, nct_id=sid) if record else None, "raw_text": text, "reasons": None,
            "example_nct_ids": None, "validation": checks, "validation_status": status, "parse_format": how,
            "meta": {"file": path.name},
        })
    return rows


def import_synthetic(db: str | Path | None, reports_dir: str | Path, labels_file: str | Path,
                     interventions_file: str | Path | None = None, source: str | None = None) -> dict[str, Any]:
    reports_dir, labels_path = Path(reports_dir), Path(labels_file)
    interventions_path = Path(interventions_file) if interventions_file else None
    source = source or reports_dir.resolve().name
    if source.startswith("run:") or ":" in source:
        raise ImportInputError(f"--source {source!r}: may not contain ':' (generated runs are 'run:<id>')")
    reports = find_reports(reports_dir)
    labels = read_labels(labels_path)
    interventions = read_interventions(interventions_path) if interventions_path else None

    with connect(db) as con:
        from core.pipeline.retrieval import normalize_name
        from core.store.retrieval import drug_synonyms, find_drug

        cache: dict[str, list[str]] = {}

        def synonyms_for(name: str) -> list[str]:
            if name not in cache:
                drug = find_drug(con, name, normalize_name(name))
                cache[name] = drug_synonyms(con, drug["drugbank_id"]) if drug else []
            return cache[name]

        rows = build_rows(reports, labels, interventions, source, labels_path, interventions_path, synonyms_for)
        con.execute("BEGIN TRANSACTION")
        try:
            for row in rows:
                store.save_synthetic(con, row)
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    counts = {s: sum(1 for r in rows if r["validation_status"] == s) for s in ("ok", "warning", "invalid")}
    return {"source": source, "imported": len(rows), **counts, "indices": [min(reports), max(reports)],
            "db": str(config.db_path(db))}


def run(args: argparse.Namespace) -> int:
    try:
        result = import_synthetic(args.db, args.reports, args.labels, args.interventions, args.source)
    except ImportInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0
