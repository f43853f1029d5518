"""Schema versioning of the store file: an old file is migrated on open; a file written by a newer
program (an unknown migration recorded) is refused with a clear SchemaError."""
from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from core.cli import main
from core.ingest import ingest
from core.store import SchemaError, all_migrations, connect
from core.store.migrations import _ensure_table, applied

FIX = Path(__file__).parents[1] / "fixtures" / "ingest"


def _old_store(path: Path, n: int = 1) -> list[str]:
    """A store file as an older program left it: only the first `n` migrations applied."""
    con = duckdb.connect(str(path))
    _ensure_table(con)
    names = []
    for name, fn in all_migrations()[:n]:
        fn(con)
        con.execute("INSERT INTO _migrations (name) VALUES (?)", [name])
        names.append(name)
    con.close()
    return names


def _tables(path: Path) -> set[str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    finally:
        con.close()


def test_old_store_is_migrated_on_open_and_keeps_its_data(tmp_path):
    db = tmp_path / "old.duckdb"
    first = _old_store(db, 1)
    assert first == ["001_trials_labels_drugbank"]
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO trials (nct_id, brief_title, sources, source) VALUES ('NCT90000001', 'kept', ['top'], 'top')")
    con.close()
    assert "synthetic_trials" not in _tables(db)
    # read-only opening cannot migrate: it says what to do
    with pytest.raises(SchemaError, match="older than this program"):
        with connect(db, read_only=True):
            pass
    # `stats` upgrades the file (one writable open) and reports it
    assert main(["stats", "--db", str(db), "--json"]) == 0
    assert {"synthetic_trials", "generation_failures"} <= _tables(db)
    with connect(db, read_only=True) as con:
        assert applied(con) and set(applied(con)) == {n for n, _ in all_migrations()}
        assert con.execute("SELECT brief_title FROM trials").fetchall() == [("kept",)]


def test_ingest_into_an_old_store_migrates_then_imports(tmp_path):
    db = tmp_path / "old.duckdb"
    _old_store(db, 1)
    ingest(db, xml=[FIX / "xml"])
    with connect(db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM trials").fetchone()[0] == 3
        assert set(applied(con)) == {n for n, _ in all_migrations()}


def test_store_from_a_newer_program_is_refused(tmp_path, capsys):
    db = tmp_path / "new.duckdb"
    ingest(db, xml=[FIX / "xml"])
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO _migrations (name) VALUES ('999_from_the_future')")
    con.close()
    for read_only in (True, False):
        with pytest.raises(SchemaError, match="newer version.*999_from_the_future"):
            with connect(db, read_only=read_only):
                pass
    assert main(["stats", "--db", str(db), "--json"]) == 2
    assert "999_from_the_future" in capsys.readouterr().err
    assert main(["ingest", "--db", str(db), "--top", str(FIX / "top_a.csv")]) == 2
    assert "newer version" in capsys.readouterr().err
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM trials").fetchone()[0] == 3  # untouched
    con.close()


def test_stats_on_a_missing_store(tmp_path, capsys):
    assert main(["stats", "--db", str(tmp_path / "none.duckdb"), "--json"]) == 2
    assert "sample-data" in capsys.readouterr().err
