"""Ordered, named schema migrations; each applied once and recorded in `_migrations`.

Append only: never edit or reorder a migration that has shipped. Each area of the store
keeps its own list in its module; the order below is the order they are applied in.
"""
from __future__ import annotations

from typing import Callable

import duckdb

Migration = tuple[str, Callable[[duckdb.DuckDBPyConnection], None]]


class SchemaError(RuntimeError):
    """The store's schema cannot be used by this program as it is."""


def all_migrations() -> list[Migration]:
    """Every migration, in the order applied. Imported lazily so area modules can import this one."""
    from core.store import analysis, experiments, llmlog, synthetic, trials

    return [*trials.MIGRATIONS, *synthetic.MIGRATIONS, *llmlog.MIGRATIONS,
            *experiments.MIGRATIONS, *analysis.MIGRATIONS]


def _ensure_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP DEFAULT current_timestamp)"
    )


def applied(con: duckdb.DuckDBPyConnection) -> list[str]:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = '_migrations'"
    ).fetchone()[0]
    if not exists:
        return []
    return [r[0] for r in con.execute("SELECT name FROM _migrations ORDER BY applied_at, name").fetchall()]


def pending(con: duckdb.DuckDBPyConnection) -> list[str]:
    done = set(applied(con))
    known = {name for name, _ in all_migrations()}
    unknown = done - known
    if unknown:
        raise SchemaError(
            f"store was written by a newer version of this program (unknown migrations: {', '.join(sorted(unknown))}); "
            "upgrade the program or use another --db"
        )
    return [name for name, _ in all_migrations() if name not in done]


def migrate(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Apply every pending migration, each in its own transaction. Returns their names."""
    _ensure_table(con)
    todo = set(pending(con))
    ran = []
    for name, fn in all_migrations():
        if name not in todo:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            fn(con)
            con.execute("INSERT INTO _migrations (name) VALUES (?)", [name])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        ran.append(name)
    return ran
