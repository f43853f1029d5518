"""`ingest`: the given sources merged into the store in ONE transaction per command.

Everything that fits in memory is read and parsed first (legacy XML, TOP, IQVIA, DrugBank); input that
makes the whole command unusable (a truncated archive, a wrong CSV header, non-UTF-8, an empty file,
hostile XML) raises IngestError before anything is written. API v2 JSON is streamed batch by batch into a
scratch DuckDB file beside the store (bounded memory for the bulk archive), which the store then takes in
the same one transaction; an error anywhere leaves the store as it was.
Inside a bulk source a single broken record is skipped, named and counted (summary and ingest_errors).

How sources merge (the SQL is in core.store.trials): one row per NCT id; a full record (XML, then JSON:
a trial given in both takes the JSON record) supplies the structured fields, a TOP row adds its
provenance and, where the full record has none, its criteria; labels (TOP, IQVIA) are kept per source.
"""
from __future__ import annotations

import json
import os
import uuid
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from core import config
from core.ingest import drugbank as drugbank_mod
from core.ingest import iqvia, json_ctgov, top as top_mod, xml_ctgov
from core.ingest.common import IngestError, Progress, read_file


# DuckDB's buffer cache for an import that streams (it would take up to 80% of RAM)
INGEST_MEMORY_LIMIT = os.environ.get("CTGEN_INGEST_MEMORY_LIMIT", "512MB")


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _outcome_map_path(outcomes: Path, outcome_map: str | os.PathLike | None) -> Path:
    """--outcome-map; else a map beside the outcomes CSV (the file it was published with); else the map
    data/sources.toml names."""
    if outcome_map:
        path = Path(outcome_map)
        if not path.exists():
            raise IngestError(f"{path}: outcome map not found")
        return path
    beside = outcomes.parent / "outcome2label.txt"
    return beside if beside.exists() else iqvia.default_outcome_map()


def ingest(
    db_path: str | os.PathLike | None,
    xml: Iterable[str | os.PathLike] = (),
    ctgov_json: Iterable[str | os.PathLike] = (),
    top: Iterable[str | os.PathLike | tuple[Path, str]] = (),
    outcomes: str | os.PathLike | None = None,
    outcome_map: str | os.PathLike | None = None,
    drugbank: str | os.PathLike | None = None,
    progress: Progress | None = None,
    command: str = "ingest",
    workers: int | None = None,
) -> dict:
    """Import the given sources in one transaction; return a summary dict. Raises IngestError."""
    from core.store import connect
    from core.store import trials as store

    started = _now()
    summary: dict = {"command": command}
    errors: list[tuple[str, str, str]] = []

    # 1. read and parse what is not streamed (nothing written yet)
    xml_table = None
    xml = [Path(p) for p in xml]
    if xml:
        xml_table, errs, n = xml_ctgov.parse_xml_sources(xml, progress, workers)
        errors += errs
        summary["xml"] = {"files": n, "records": xml_table.num_rows, "skipped": len(errs)}
    ctgov_json = [Path(p) for p in ctgov_json]
    for p in ctgov_json:   # a missing path is an error before anything is written
        if not p.exists():
            raise IngestError(f"{p}: no such file or directory")
    top_result = top_mod.TopResult()
    top_pairs: list[tuple[Path, str]] = []   # (file, name recorded in top_files), in the order given
    for t in top:
        top_pairs.extend([t] if isinstance(t, tuple) else top_mod.top_files([t]))
    for i, (path, display) in enumerate(top_pairs, 1):
        top_mod.parse_top(read_file(path), display, top_result)
        if progress:
            progress("top", i, len(top_pairs))
    if top_pairs:
        errors += top_result.errors
        summary["top"] = {"files": len(top_pairs), "rows": top_result.rows, "trials": len(top_result.records),
                          "skipped": len(top_result.errors)}
    label_rows: list[tuple] = list(top_result.labels.values())
    if outcomes is not None:
        outcomes = Path(outcomes)
        map_path = _outcome_map_path(outcomes, outcome_map)
        omap = iqvia.parse_outcome_map(read_file(map_path), str(map_path))
        rows, counts, errs = iqvia.parse_outcomes(read_file(outcomes), str(outcomes), omap)
        label_rows += rows
        errors += errs
        summary["iqvia"] = {**counts, "skipped": len(errs), "outcome_map": str(map_path)}
        if progress:
            progress("iqvia", 1, 1)
    db_rows = None
    if drugbank is not None:
        db_rows, errs = drugbank_mod.parse_drugbank(read_file(Path(drugbank)), str(drugbank))
        errors += errs
        summary["drugbank"] = {"drugs": len(db_rows), "skipped": len(errs)}
        if progress:
            progress("drugbank", 1, 1)

    # 2. write, all or nothing (the JSON is read while it is staged)
    parsed = _now()
    summary["parse_seconds"] = round((parsed - started).total_seconds(), 2)
    command_id = f"{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    summary["command_id"] = command_id
    if progress:
        progress("store", 0, 1)
    db_file = config.db_path(db_path)
    existed, opened = db_file.exists(), False
    try:
        with connect(db_path) as con:
            opened = True
            with ExitStack() as stack:
                staged = None
                if ctgov_json:
                    staged = stack.enter_context(store.Staging(con, db_file.parent))
                    _stage_json(con, staged, ctgov_json, progress, summary, errors)
                _merge(con, store, summary, errors, command, command_id, started, parsed, xml_table, staged,
                       top_result, label_rows, db_rows)
    except BaseException:
        if opened and not existed:   # a failed import into a store it created leaves no store behind
            for f in (db_file, Path(str(db_file) + ".wal")):
                f.unlink(missing_ok=True)
        raise
    if progress:
        progress("store", 1, 1)
    return summary


def _stage_json(con, staged, paths: list[Path], progress: Progress | None, summary: dict, errors: list) -> None:
    """Stream the API v2 JSON into the scratch table, batch by batch (bounded memory: a transaction's new
    rows stay in memory until it commits, so the stream is committed there and the store then takes it
    in one statement)."""
    # DuckDB caches written blocks up to its memory limit (80% of RAM by default)
    con.execute(f"SET memory_limit = '{INGEST_MEMORY_LIMIT}'")
    stream = json_ctgov.JsonStream(paths, progress)
    seen: set[str] = set()
    for batch in stream:
        ids = [r["nct_id"] for r in batch]
        staged.add(batch, [i for i in ids if i in seen])
        seen.update(ids)
    stream.check()
    errors += stream.errors
    summary["ctgov_json"] = {"files": stream.files, "records": stream.unique, "skipped": len(stream.errors)}


def _merge(con, store, summary: dict, errors: list, command: str, command_id: str, started, parsed,
           xml_table, staged, top_result, label_rows: list, db_rows) -> None:
    """Everything into the store in one transaction."""
    con.execute("BEGIN TRANSACTION")
    try:
        if xml_table is not None:
            store.upsert_full_records(con, xml_table)
        if staged is not None:   # after the XML: a trial given in both takes the JSON record
            store.upsert_full_records(con, staged.table)
        store.upsert_top_records(con, list(top_result.records.values()))
        store.upsert_labels(con, label_rows)
        if db_rows is not None:
            store.replace_drugbank(con, db_rows)
        summary["intervention_matches"] = store.recompute_matches(con)
        summary["errors"] = len(errors)
        summary["error_examples"] = [e[2] for e in errors[:10]]
        store.add_ingest_errors(con, command_id, errors)
        finished = _now()
        summary["seconds"] = round((finished - started).total_seconds(), 2)
        summary["store_seconds"] = round((finished - parsed).total_seconds(), 2)
        store.log_ingest(con, command_id, command, started, finished, json.dumps(summary))
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
