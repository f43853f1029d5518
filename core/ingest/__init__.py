"""Real-data ingest: ClinicalTrials.gov (legacy XML, API v2 JSON), TOP CSVs, IQVIA outcome labels and
the DrugBank vocabulary, into the store in ONE transaction per command.

Everything is read and parsed first; only then is the store opened and written. Input that makes the
whole command unusable (a truncated archive, a wrong CSV header, non-UTF-8, an empty file, hostile
XML) raises IngestError before anything is written. Inside a bulk source (archive, directory, page
of studies, CSV) a single broken record is skipped, named and counted (summary and ingest_errors).
"""
from __future__ import annotations

import gc
import json
import multiprocessing
import os
import threading
import uuid
import zipfile
import zlib
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

from core.ingest import drugbank as drugbank_mod
from core.ingest import iqvia, json_ctgov, top as top_mod, xml_ctgov
from core.ingest.common import BadRecord, HostileInput, IngestError, decode_utf8

__all__ = ["ingest", "sample_data", "IngestError"]

Progress = Callable[[str, int, int], None]
_PARALLEL_MIN = 200     # below this many XML files, a process pool costs more than it saves
_CHUNK = 250


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise IngestError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _open_zip(path: Path) -> zipfile.ZipFile:
    if path.stat().st_size == 0:
        raise IngestError(f"{path}: file is empty")
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise IngestError(f"{path}: not a readable zip archive ({exc}); truncated or not a zip?") from None


MAX_MEMBER_BYTES = 64 << 20  # one study record is far below this; more is a zip bomb or not a study


def _zip_member(zf: zipfile.ZipFile, name: str, where: str) -> bytes:
    size = zf.getinfo(name).file_size
    if size > MAX_MEMBER_BYTES:
        raise BadRecord(f"{where}: member unpacks to {size} bytes, more than the {MAX_MEMBER_BYTES} allowed")
    try:
        return zf.read(name)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise BadRecord(f"{where}: cannot read archive member ({exc})") from None


# ---- XML: (kind, container, names) tasks so that workers read their own files ----

_ZIPS: dict[tuple[int, str], zipfile.ZipFile] = {}


def _worker_zip(path: str) -> zipfile.ZipFile:
    """One open archive per process: reading the central directory of a bulk zip costs ~0.1 s, too
    much to repeat for every chunk. Keyed by pid so a forked worker never shares its parent's handle."""
    key = (os.getpid(), path)
    if key not in _ZIPS:
        _ZIPS[key] = zipfile.ZipFile(path)
    return _ZIPS[key]


def _close_zips() -> None:
    for key in [k for k in _ZIPS if k[0] == os.getpid()]:
        _ZIPS.pop(key).close()


def _xml_task(task: tuple[str, str, list[str]]):
    """Worker: parse one chunk of files -> (Arrow table of good records,
    [(file, member, error, hostile)] for the others, number of files)."""
    kind, container, names = task
    records: list[dict] = []
    failed: list[tuple[str, str, str, bool]] = []
    # Parsed trees hold no reference cycles: the cyclic GC only re-scans the records being built
    # (about 15% of the parse time), so it is paused for the chunk.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _xml_chunk(kind, container, names, records, failed)
    finally:
        if gc_was_enabled:
            gc.enable()


def _xml_chunk(kind: str, container: str, names: list[str], records: list, failed: list):
    from core.store.trials import records_table

    for name in names:
        file, member = (container, name) if kind == "zip" else (name, name)
        where = f"{container}:{name}" if kind == "zip" else name
        try:
            data = _zip_member(_worker_zip(container), name, where) if kind == "zip" else Path(name).read_bytes()
            records.append(xml_ctgov.parse_xml(data, where))
        except HostileInput as exc:
            failed.append((file, member, str(exc), True))
        except BadRecord as exc:
            failed.append((file, member, str(exc), False))
        except OSError as exc:
            failed.append((file, member, f"{where}: cannot read ({exc})", False))
    # built here, in the worker, so that both cores share the Arrow conversion
    return records_table(records), failed, len(names)


def _dir_files(path: Path, pattern: str, what: str) -> list[Path] | None:
    """A path argument: IngestError when it does not exist; a directory's files matching `pattern`, at any
    depth (IngestError when there are none: 'directory holds no <what>'); None when it is not a directory."""
    if not path.exists():
        raise IngestError(f"{path}: no such file or directory")
    if not path.is_dir():
        return None
    files = sorted(path.rglob(pattern))
    if not files:
        raise IngestError(f"{path}: directory holds no {what}")
    return files


def _xml_tasks(path: Path) -> tuple[list[tuple[str, str, list[str]]], int]:
    """A --xml argument -> worker tasks and the number of files. Single files are parsed here."""
    files = _dir_files(path, "*.xml", "*.xml study records")
    if files is not None:
        names = sorted(map(str, files))
        kind, container = "dir", str(path)
    elif path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
        with _open_zip(path) as zf:
            names = [i.filename for i in zf.infolist() if not i.is_dir() and i.filename.lower().endswith(".xml")]
        if not names:
            raise IngestError(f"{path}: archive holds no *.xml study records")
        kind, container = "zip", str(path)
    else:
        return [("file", str(path), [str(path)])], 1
    return [(kind, container, names[i:i + _CHUNK]) for i in range(0, len(names), _CHUNK)], len(names)


def _can_fork() -> bool:
    """A process pool by fork only where this process is single-threaded (the CLI, the benchmark):
    in a threaded host (the Streamlit server) a fork could copy a lock held by another thread, and
    spawn/forkserver would re-run the host's __main__. There the XML is parsed in-process."""
    return "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1


def _parse_xml_sources(paths: Iterable[Path], progress: Progress | None, workers: int | None = None):
    """-> (Arrow table of records, skipped [(container, member, error)], files seen)."""
    import pyarrow as pa

    from core.store.trials import TRIALS_ARROW_SCHEMA, dedupe_last

    tables: list = []
    errors: list[tuple[str, str, str]] = []
    tasks, total, singles = [], 0, set()
    for p in paths:
        t, n = _xml_tasks(Path(p))
        if t and t[0][0] == "file":
            singles.add(str(p))
            if not _read(Path(p)).strip():
                raise IngestError(f"{p}: file is empty")
        tasks.extend(t)
        total += n
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    done = 0

    def collect(result):
        nonlocal done
        table, failed, n = result
        done += n
        for file, member, err, hostile in failed:
            if hostile or file in singles:
                raise IngestError(err)
            errors.append((file, member, err))
        tables.append(table)
        if progress:
            progress("xml", done, total)

    if workers > 1 and total >= _PARALLEL_MIN and _can_fork():
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
            for result in pool.map(_xml_task, tasks):
                collect(result)
    else:
        try:
            for task in tasks:
                collect(_xml_task(task))
        finally:
            _close_zips()
    table = dedupe_last(pa.concat_tables(tables)) if tables else TRIALS_ARROW_SCHEMA.empty_table()
    if table.num_rows == 0 and errors:
        raise IngestError(f"{errors[0][0]}: no usable study record ({len(errors)} skipped; first: {errors[0][2]})")
    return table, errors, total


# ---- API v2 JSON ----

def _parse_json_sources(paths: Iterable[Path], progress: Progress | None):
    records: dict[str, dict] = {}
    errors: list[tuple[str, str, str]] = []
    files = 0

    def one(text: str, where: str, container: str, bulk: bool, member: str | None = None):
        try:
            recs, errs = json_ctgov.parse_json_text(text, where)
        except BadRecord as exc:
            if not bulk:
                raise IngestError(str(exc)) from None
            errors.append((container, member or where, str(exc)))
            return
        if not bulk and errs and not recs and len(errs) == 1 and errs[0][0] == where:
            raise IngestError(errs[0][1])  # a single-study file whose study is unusable
        for w, e in errs:
            errors.append((container, w if member is None else member + w[len(where):], e))
        for r in recs:
            records[r["nct_id"]] = r

    for p in map(Path, paths):
        names = _dir_files(p, "*.json", "*.json studies")
        if names is not None:
            for i, f in enumerate(names, 1):
                try:
                    text = decode_utf8(_read(f), str(f))
                except IngestError as exc:
                    errors.append((str(p), str(f), str(exc)))
                    continue
                one(text, str(f), str(p), True)
                if progress and i % 200 == 0:
                    progress("json", i, len(names))
            files += len(names)
        elif p.suffix.lower() == ".zip" or zipfile.is_zipfile(p):
            with _open_zip(p) as zf:
                names = [i.filename for i in zf.infolist() if not i.is_dir() and i.filename.lower().endswith(".json")]
                if not names:
                    raise IngestError(f"{p}: archive holds no *.json studies")
                for i, name in enumerate(names, 1):
                    where = f"{p}:{name}"
                    try:
                        text = decode_utf8(_zip_member(zf, name, where), where)
                    except (BadRecord, IngestError) as exc:
                        errors.append((str(p), name, str(exc)))
                        continue
                    one(text, where, str(p), True, name)
                    if progress and i % 200 == 0:
                        progress("json", i, len(names))
            files += len(names)
        else:
            text = decode_utf8(_read(p), str(p))
            # a page of studies is bulk (one broken study is skipped); a single study file is not
            one(text, str(p), str(p), False)
            files += 1
    if files and not records:
        first = f" ({len(errors)} skipped; first: {errors[0][2]})" if errors else ""
        raise IngestError(f"{', '.join(map(str, paths))}: no usable study record{first}")
    return records, errors, files


# ---- TOP ----

def _top_files(paths: Iterable[Path]) -> list[tuple[Path, str]]:
    out = []
    for p in map(Path, paths):
        files = _dir_files(p, "*.csv", "*.csv files")
        if files is not None:
            out.extend((f, str(f)) for f in files)
        else:
            out.append((p, str(p)))
    return out


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

    started = datetime.now(timezone.utc).replace(tzinfo=None)
    summary: dict = {"command": command}
    errors: list[tuple[str, str, str]] = []

    # 1. read and parse everything (nothing written yet)
    full_tables = []   # XML first, then JSON: a trial given in both takes the JSON record
    xml = [Path(p) for p in xml]
    if xml:
        table, errs, n = _parse_xml_sources(xml, progress, workers)
        full_tables.append(table)
        errors += errs
        summary["xml"] = {"files": n, "records": table.num_rows, "skipped": len(errs)}
    ctgov_json = [Path(p) for p in ctgov_json]
    if ctgov_json:
        recs, errs, n = _parse_json_sources(ctgov_json, progress)
        full_tables.append(store.records_table(list(recs.values())))
        errors += errs
        summary["ctgov_json"] = {"files": n, "records": len(recs), "skipped": len(errs)}
    top_result = top_mod.TopResult()
    top_pairs: list[tuple[Path, str]] = []   # (file, name recorded in top_files), in the order given
    for t in top:
        top_pairs.extend([t] if isinstance(t, tuple) else _top_files([t]))
    for i, (path, display) in enumerate(top_pairs, 1):
        top_mod.parse_top(_read(path), display, top_result)
        if progress:
            progress("top", i, len(top_pairs))
    if top_pairs:
        errors += top_result.errors
        summary["top"] = {"files": len(top_pairs), "rows": top_result.rows, "trials": len(top_result.records),
                          "skipped": len(top_result.errors)}
    label_rows: list[tuple] = list(top_result.labels.values())
    if outcomes is not None:
        outcomes = Path(outcomes)
        map_path = Path(outcome_map) if outcome_map else outcomes.parent / "outcome2label.txt"
        if not map_path.exists():
            raise IngestError(f"{map_path}: outcome map not found (give --outcome-map TXT)")
        omap = iqvia.parse_outcome_map(_read(map_path), str(map_path))
        rows, counts, errs = iqvia.parse_outcomes(_read(outcomes), str(outcomes), omap)
        label_rows += rows
        errors += errs
        summary["iqvia"] = {**counts, "skipped": len(errs)}
        if progress:
            progress("iqvia", 1, 1)
    db_rows = None
    if drugbank is not None:
        db_rows, errs = drugbank_mod.parse_drugbank(_read(Path(drugbank)), str(drugbank))
        errors += errs
        summary["drugbank"] = {"drugs": len(db_rows), "skipped": len(errs)}
        if progress:
            progress("drugbank", 1, 1)

    # 2. write, all or nothing
    parsed = datetime.now(timezone.utc).replace(tzinfo=None)
    summary["parse_seconds"] = round((parsed - started).total_seconds(), 2)
    command_id = f"{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    summary["command_id"] = command_id
    summary["errors"] = len(errors)
    summary["error_examples"] = [e[2] for e in errors[:10]]
    if progress:
        progress("store", 0, 1)
    with connect(db_path) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            for table in full_tables:
                store.upsert_full_records(con, table)
            store.upsert_top_records(con, list(top_result.records.values()))
            store.upsert_labels(con, label_rows)
            if db_rows is not None:
                store.replace_drugbank(con, db_rows)
            summary["intervention_matches"] = store.recompute_matches(con)
            store.add_ingest_errors(con, command_id, errors)
            finished = datetime.now(timezone.utc).replace(tzinfo=None)
            summary["seconds"] = round((finished - started).total_seconds(), 2)
            summary["store_seconds"] = round((finished - parsed).total_seconds(), 2)
            store.log_ingest(con, command_id, command, started, finished, json.dumps(summary))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    if progress:
        progress("store", 1, 1)
    return summary


def sample_data(db_path: str | os.PathLike | None, progress: Progress | None = None) -> dict:
    """Load the whole data mirror (or, without one, what upstream serves) in one transaction:
    all XML, every TOP CSV, IQVIA outcomes through outcome2label.txt, DrugBank.
    Sources are resolved through data/sources.toml (path under the mirror, URL, sha256)."""
    from core import config
    from core.ingest import sources

    mirror = config.data_mirror()
    srcs = sources.load_sources()
    skipped: list[str] = []

    def get(name: str) -> list[tuple[Path, str]]:
        out = []
        for s in srcs.get(name, []):
            p = sources.resolve(s, mirror)
            if p is None:
                skipped.append(s.path)
            else:
                out.append((p, s.path))
        return out

    xml = [p for p, _ in get("ctgov_xml")]
    ctj = [p for p, _ in get("ctgov_json")]
    top = get("top")
    out_csv = get("iqvia_outcomes")
    out_map = get("iqvia_outcome_map")
    dbk = get("drugbank")
    if out_csv and not out_map:
        raise IngestError("iqvia/outcome2label.txt: needed to map the IQVIA outcomes and not available")
    summary = ingest(
        db_path, xml=xml, ctgov_json=ctj, top=top,
        outcomes=out_csv[0][0] if out_csv else None, outcome_map=out_map[0][0] if out_map else None,
        drugbank=dbk[0][0] if dbk else None, progress=progress, command="sample-data",
    )
    summary["mirror"] = str(mirror) if mirror else None
    summary["skipped_sources"] = skipped
    return summary
