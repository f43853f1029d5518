"""The DuckDB store. All SQL of the project lives in this package.

Connections are short-lived on purpose: DuckDB lets one process hold a file for writing,
so the app, the CLI and background jobs (fine-tuning, batch generation) each open, work
and close, and retry briefly when another process holds the lock.

Schema changes are an ordered list of small named migration functions (see `migrations`),
each applied once and recorded in the `_migrations` table.
"""
from __future__ import annotations

import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb

from core import config
from core.store.migrations import SchemaError, all_migrations, migrate, pending

__all__ = ["connect", "SchemaError", "StoreLocked", "all_migrations", "pending"]


class StoreLocked(RuntimeError):
    """Another process kept the store's write lock for longer than we were willing to wait."""


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text and ("conflicting" in text or "could not set" in text or "locked" in text)


@contextmanager
def connect(
    path: str | Path | None = None,
    read_only: bool = False,
    wait_s: float = 30.0,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the store, migrating it when opened for writing; close it on exit.

    Waits up to `wait_s` seconds (with jittered back-off) while another process holds the file.
    """
    db = config.db_path(path)
    if not read_only:
        db.parent.mkdir(parents=True, exist_ok=True)
    elif not db.exists():
        raise FileNotFoundError(f"{db}: no store here yet (run `python -m core sample-data --db {db}`)")
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(str(db), read_only=read_only)
            break
        except duckdb.IOException as exc:  # the file lock is reported as an IOException
            if not _is_lock_error(exc) or time.monotonic() > deadline:
                if _is_lock_error(exc):
                    raise StoreLocked(f"{db}: another process holds the store ({exc})") from exc
                raise
            time.sleep(delay + random.uniform(0, delay))
            delay = min(delay * 2, 1.0)
    try:
        if read_only:
            todo = pending(con)
            if todo:
                raise SchemaError(
                    f"{db}: store schema is older than this program (missing: {', '.join(todo)}); "
                    "open it once for writing (e.g. `python -m core stats --db PATH --migrate`) to upgrade it"
                )
        else:
            migrate(con)
        yield con
    finally:
        con.close()
