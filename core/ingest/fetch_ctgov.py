"""`fetch-ctgov`: full study records from the ClinicalTrials.gov API v2, merged into the canonical records.

Resumable by construction: every received study's raw JSON is cached first (an atomic file per study
under <data cache>/ctgov-api-v2/), then each page is committed in its own transaction. A rerun (after
kill -9, say) takes what the cache holds without asking again, and asks upstream only for the ids
that still have no full record. A TOP row that gets its full record stays one trial and keeps its
TOP and IQVIA labels (core.store.trials.upsert_full_records merges by nct_id; labels live apart).
"""
from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from core import config
from core.ingest import json_ctgov
from core.ingest.common import NCT_ID, BadRecord, IngestError
from core.ingest.ctgov_api import DEFAULT_RATE, ApiClient, FetchError
from core.ingest.sources import cache_dir

Progress = Callable[[str, int, int], None]
DEFAULT_PAGE_SIZE = 100   # ids per request (the API's pageSize allows up to 1000; long URLs are fragile)


def raw_cache_dir() -> Path:
    return cache_dir() / "ctgov-api-v2"


def read_ids_file(path: str | os.PathLike) -> list[str]:
    """One NCT id per line (blank lines and # comments ignored); IngestError names the file and line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise IngestError(f"{p}: cannot read the id list ({exc})") from None
    ids: list[str] = []
    for i, line in enumerate(text.splitlines(), 1):
        value = line.split("#", 1)[0].strip().upper()
        if not value:
            continue
        if not NCT_ID.fullmatch(value):
            raise IngestError(f"{p}: line {i}: not an NCT id ({line.strip()[:60]!r}; expected NCT + 8 digits)")
        ids.append(value)
    if not ids:
        raise IngestError(f"{p}: holds no NCT ids")
    return list(dict.fromkeys(ids))


def _cache_write(nct_id: str, raw: str) -> None:
    folder = raw_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{nct_id}.{os.getpid()}.tmp"
    tmp.write_text(raw, encoding="utf-8")
    os.replace(tmp, folder / f"{nct_id}.json")


def _cache_read(nct_id: str) -> str | None:
    try:
        raw = (raw_cache_dir() / f"{nct_id}.json").read_text(encoding="utf-8")
        json.loads(raw)
        return raw
    except (OSError, ValueError):
        return None   # absent or damaged: fetch again


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _commit(db, records: list[dict], errors: list[tuple[str, str, str]], command_id: str) -> None:
    """One page: its records (and the errors met in it) in one transaction."""
    from core.store import connect
    from core.store import trials as store

    with connect(db) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            if records:
                store.upsert_full_records(con, records)
                store.recompute_matches(con, [r["nct_id"] for r in records])
            store.add_ingest_errors(con, command_id, errors)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise


def fetch_ctgov(
    db: str | os.PathLike | None,
    *,
    missing: bool = False,
    labelled: bool = False,
    ids_file: str | os.PathLike | None = None,
    base_url: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    rate: float = DEFAULT_RATE,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
    client: ApiClient | None = None,
) -> dict:
    """Fetch the full records the selection still lacks; return the summary
    (requested, from_cache, fetched, not_found [ids], failed [ids], requests, errors)."""
    from core.store import connect
    from core.store import trials as store

    if not (missing or labelled or ids_file):
        raise IngestError("nothing selected: give --missing, --labelled or --ids FILE")
    if not 1 <= page_size <= 1000:
        raise IngestError(f"--page-size must be 1..1000 (got {page_size})")
    started = _now()
    wanted = read_ids_file(ids_file) if ids_file else None
    with connect(db) as con:   # migrates a new or older store; closed before any request
        todo = store.lacking_full_record(con, wanted, labelled_only=labelled)
    base = config.ctgov_api_base(base_url)
    client = client or ApiClient(base, rate=rate, log=log)
    command_id = f"{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    summary: dict = {"command": "fetch-ctgov", "command_id": command_id, "base_url": base,
                     "requested": len(todo), "from_cache": 0, "fetched": 0, "not_found": [], "failed": [],
                     "errors": []}
    done = 0

    def tick() -> None:
        if progress:
            progress("fetch", done, len(todo))

    tick()
    # 1. what an interrupted run received but did not commit: from the cache, no request
    cached, errors, remaining = [], [], []
    for nct in todo:
        raw = _cache_read(nct)
        if raw is None:
            remaining.append(nct)
            continue
        try:
            cached.append(json_ctgov.map_study(json.loads(raw), raw, f"cache:{nct}"))
        except BadRecord as exc:
            remaining.append(nct)   # an unusable cached copy is asked for again
            errors.append((str(raw_cache_dir()), nct, str(exc)))
    if cached or errors:
        _commit(db, cached, errors, command_id)
        summary["from_cache"] = len(cached)
        done += len(cached)
        tick()

    # 2. the rest from upstream, page by page
    for start in range(0, len(remaining), page_size):
        chunk = remaining[start:start + page_size]
        wanted_set, got = set(chunk), set()
        try:
            pages = ([[s] for s in [client.study(chunk[0])] if s is not None] if len(chunk) == 1
                     else client.study_pages(chunk, page_size))
            for studies in pages:
                records, errs = [], []
                for i, study in enumerate(studies):
                    raw = json.dumps(study, ensure_ascii=False)
                    try:
                        rec = json_ctgov.map_study(study, raw, f"{base}/studies#{i}")
                    except BadRecord as exc:
                        errs.append((base, f"page item {i}", str(exc)))
                        continue
                    if rec["nct_id"] not in wanted_set or rec["nct_id"] in got:
                        continue   # not asked for (or twice): never let upstream widen the selection
                    _cache_write(rec["nct_id"], raw)
                    records.append(rec)
                    got.add(rec["nct_id"])
                _commit(db, records, errs, command_id)
                summary["fetched"] += len(records)
                summary["errors"] += [e[2] for e in errs]
                done += len(records)
                tick()
        except FetchError as exc:
            lost = [n for n in chunk if n not in got]
            summary["failed"] += lost
            summary["errors"].append(str(exc))
            _commit(db, [], [(base, n, str(exc)) for n in lost], command_id)
            done += len(lost)
            tick()
            continue
        not_found = [n for n in chunk if n not in got]
        summary["not_found"] += not_found
        done += len(not_found)
        tick()
    summary["requests"] = client.requests
    summary["seconds"] = round((_now() - started).total_seconds(), 2)
    with connect(db) as con:
        store.log_ingest(con, command_id, "fetch-ctgov", started, _now(), json.dumps(summary))
    return summary
