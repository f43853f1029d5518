"""Bad and hostile input: exit code 2, a message naming the file and what is wrong, the store exactly
as before; inside a bulk archive one broken record is skipped, named and counted."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from core.cli import main
from core.ingest import IngestError, ingest
from core.store import connect
from core.store import trials as store

ROOT = Path(__file__).resolve().parents[2]
FIX = Path(__file__).parents[1] / "fixtures" / "ingest"
HOSTILE = FIX / "hostile"


def content_checksum(db: Path) -> dict:
    """Row counts and a content hash of every ingest table."""
    out = {}
    with connect(db, read_only=True) as con:
        for table in ("trials", "labels", "drugbank", "drugbank_names", "intervention_matches", "ingest_errors",
                      "ingest_log"):
            rows = con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
            out[table] = (len(rows), hashlib.sha256(repr(rows).encode()).hexdigest())
    return out


@pytest.fixture(scope="module")
def base_db(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("hostile") / "base.duckdb"
    ingest(db, xml=[FIX / "xml"], top=[FIX / "top_a.csv"], outcomes=FIX / "outcomes.csv",
           drugbank=FIX / "drugbank_small.csv")
    return db


@pytest.fixture
def db(base_db, tmp_path) -> Path:
    dst = tmp_path / "store.duckdb"
    shutil.copy(base_db, dst)
    return dst


def _zip(path: Path, members: dict[str, Path | bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, src in members.items():
            zf.writestr(name, src.read_bytes() if isinstance(src, Path) else src)
    return path


CASES = [
    (["--xml", HOSTILE / "xxe.xml"], "xxe.xml", "refused: XML declares entities"),
    (["--xml", HOSTILE / "billion_laughs.xml"], "billion_laughs.xml", "refused: XML declares entities"),
    (["--xml", HOSTILE / "truncated.zip"], "truncated.zip", "not a readable zip archive"),
    (["--xml", HOSTILE / "notazip.zip"], "notazip.zip", "not a readable zip archive"),
    (["--xml", HOSTILE / "empty.xml"], "empty.xml", "file is empty"),
    (["--xml", HOSTILE / "not_wellformed.xml"], "not_wellformed.xml", "not well-formed XML"),
    (["--top", HOSTILE / "top_wrong_header.csv"], "top_wrong_header.csv", "header lacks nctid"),
    (["--top", HOSTILE / "top_latin1.csv"], "top_latin1.csv", "not UTF-8"),
    (["--top", HOSTILE / "empty.csv"], "empty.csv", "file is empty"),
    (["--outcomes", HOSTILE / "top_wrong_header.csv", "--outcome-map", FIX / "outcome2label.txt"],
     "top_wrong_header.csv", "header must be 'studyid,trialOutcome'"),
    (["--drugbank", HOSTILE / "top_latin1.csv"], "top_latin1.csv", "not UTF-8"),
    (["--drugbank", FIX / "top_a.csv"], "top_a.csv", "not a DrugBank vocabulary CSV"),
    (["--ctgov-json", HOSTILE / "not_json.json"], "not_json.json", "not valid JSON"),
    (["--outcomes", FIX / "outcomes.csv", "--outcome-map", HOSTILE / "empty.csv"], "empty.csv", "file is empty"),
    (["--xml", HOSTILE / "missing.xml"], "missing.xml", "no such file"),
    (["--ctgov-json", HOSTILE / "study_without_nct_id.json"], "study_without_nct_id.json", "nctId"),
    (["--ctgov-json", HOSTILE / "empty.csv"], "empty.csv", "file is empty"),
]


@pytest.mark.parametrize("args,fname,what", CASES, ids=[c[1] + ":" + c[2][:20] for c in CASES])
def test_bad_input_exits_2_and_leaves_the_store_unchanged(db, capsys, args, fname, what):
    before_bytes = hashlib.sha256(db.read_bytes()).hexdigest()
    before = content_checksum(db)
    # valid sources in the same command are not imported either: one transaction per command
    rc = main(["ingest", "--db", str(db), "--ctgov-json", str(FIX / "json"), "--top", str(FIX / "top_b.csv"),
               *map(str, args)] if fname != "missing.xml" else ["ingest", "--db", str(db), *map(str, args)])
    err = capsys.readouterr().err
    assert rc == 2
    assert fname in err and what in err
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before_bytes
    assert content_checksum(db) == before


def test_hostile_xml_is_never_expanded():
    """defusedxml refuses the entity declarations themselves; nothing is resolved or expanded."""
    from core.ingest.common import HostileInput
    from core.ingest.xml_ctgov import parse_xml

    for name in ("xxe.xml", "billion_laughs.xml"):
        with pytest.raises(HostileInput, match=name):
            parse_xml((HOSTILE / name).read_bytes(), name)


def test_hostile_member_inside_an_archive_rejects_the_command(db, tmp_path, capsys):
    archive = _zip(tmp_path / "AllPublicXML.zip", {
        "NCT9000xxxx/NCT90000001.xml": FIX / "xml" / "NCT90000001.xml",
        "NCT9000xxxx/NCT90000666.xml": HOSTILE / "xxe.xml",
    })
    before = content_checksum(db)
    assert main(["ingest", "--db", str(db), "--xml", str(archive)]) == 2
    err = capsys.readouterr().err
    assert "AllPublicXML.zip:NCT9000xxxx/NCT90000666.xml" in err and "refused" in err
    assert content_checksum(db) == before


def test_one_broken_record_in_a_bulk_archive_is_skipped_named_and_counted(db, tmp_path, capsys):
    archive = _zip(tmp_path / "AllPublicXML.zip", {
        "NCT9000xxxx/NCT90000001.xml": FIX / "xml" / "NCT90000001.xml",
        "NCT9000xxxx/NCT90000005.xml": HOSTILE / "not_wellformed.xml",
        "NCT9000xxxx/NCT90000006.xml": b"<clinical_study><id_info/></clinical_study>",
        "NCT9000xxxx/NCT90000004.xml": FIX / "xml" / "NCT90000004.xml",
        "NCT9000xxxx/": b"",
    })
    rc = main(["ingest", "--db", str(db), "--xml", str(archive)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "XML: 2 trials (2 skipped)" in out and "NCT90000005.xml" in out and "nct_id" in out
    with connect(db, read_only=True) as con:
        errors = con.execute("SELECT file, member, error FROM ingest_errors ORDER BY member").fetchall()
        trials = con.execute("SELECT count(*) FROM trials").fetchone()[0]
        s = store.store_stats(con)
    assert [(Path(f).name, m) for f, m, _ in errors] == [
        ("AllPublicXML.zip", "NCT9000xxxx/NCT90000005.xml"), ("AllPublicXML.zip", "NCT9000xxxx/NCT90000006.xml")]
    assert "not well-formed" in errors[0][2] and "nct_id" in errors[1][2]
    assert trials == 4 and s["ingest_errors"] == 2  # base store: 3 XML + 1 TOP-only; nothing new


def test_corrupt_member_in_a_zip_is_a_broken_record(db, tmp_path, capsys):
    """A member whose compressed bytes are damaged (CRC error) is skipped like any broken record."""
    good = FIX / "xml" / "NCT90000001.xml"
    archive = _zip(tmp_path / "a.zip", {"x/NCT90000001.xml": good, "x/NCT90000004.xml": FIX / "xml" / "NCT90000004.xml"})
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("x/NCT90000004.xml")
    start = info.header_offset + 30 + len(info.filename) + 10
    data[start:start + 20] = b"\x00" * 20
    archive.write_bytes(bytes(data))
    assert main(["ingest", "--db", str(db), "--xml", str(archive)]) == 0
    out = capsys.readouterr().out
    assert "1 skipped" in out and "x/NCT90000004.xml" in out


def test_a_failure_while_writing_rolls_back_everything(db, monkeypatch):
    before = content_checksum(db)

    def boom(con):
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(store, "recompute_matches", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        ingest(db, ctgov_json=[FIX / "json"], top=[FIX / "top_b.csv"], drugbank=FIX / "drugbank_small.csv")
    assert content_checksum(db) == before


def test_outcome_map_must_exist(db, tmp_path, capsys):
    """A named --outcome-map that is not there stops the command (issue 12: without --outcome-map the
    configured map is used instead, see test_outcomes_without_a_map_use_the_configured_one)."""
    lone = tmp_path / "outcomes.csv"
    shutil.copy(FIX / "outcomes.csv", lone)
    gone = tmp_path / "elsewhere" / "outcome2label.txt"
    assert main(["ingest", "--db", str(db), "--outcomes", str(lone), "--outcome-map", str(gone)]) == 2
    assert "outcome2label.txt" in capsys.readouterr().err
    with pytest.raises(IngestError, match="outcome map not found"):
        ingest(db, outcomes=lone, outcome_map=gone)


def test_outcomes_without_a_map_use_the_configured_one(db, tmp_path, capsys, mirror):
    """An outcomes CSV in a folder with no outcome2label.txt imports through the map that data/sources.toml
    names ([iqvia_outcome_map], here the mirror's IQVIA file), not a map beside the CSV."""
    from core.ingest import sources

    lone = tmp_path / "outcomes.csv"
    shutil.copy(FIX / "outcomes.csv", lone)
    configured = mirror / sources.load_sources()["iqvia_outcome_map"][0].path
    assert main(["ingest", "--db", str(db), "--outcomes", str(lone)]) == 0
    assert "IQVIA: " in capsys.readouterr().out
    summary = ingest(db, outcomes=lone)
    assert summary["iqvia"]["outcome_map"] == str(configured)
    with connect(db, read_only=True) as con:
        labels = dict(con.execute("SELECT nct_id, label FROM labels WHERE label_source = 'iqvia'").fetchall())
    # the IQVIA map: "Positive outcome" is a success, "Lack of efficacy" a failure, "Outcome unknown" not usable
    assert labels["NCT90000002"] == 1 and labels["NCT90000001"] == 0 and labels["NCT90000011"] is None


def test_cli_subprocess_reports_xxe_with_exit_2(tmp_path):
    """The real command line, as a user runs it: a new store is not even created."""
    db = tmp_path / "new.duckdb"
    proc = subprocess.run([sys.executable, "-m", "core", "ingest", "--db", str(db), "--xml", str(HOSTILE / "xxe.xml")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "xxe.xml" in proc.stderr and "refused" in proc.stderr
    assert "root:" not in proc.stderr + proc.stdout
    assert not db.exists()


def test_an_oversized_archive_member_is_not_unpacked(db, tmp_path, monkeypatch, capsys):
    import core.ingest.common as ing

    monkeypatch.setattr(ing, "MAX_MEMBER_BYTES", 50_000)
    archive = _zip(tmp_path / "bomb.zip", {"x/NCT90000001.xml": FIX / "xml" / "NCT90000001.xml",
                                           "x/NCT90000007.xml": b"<clinical_study>" + b" " * 200_000 + b"</clinical_study>"})
    assert main(["ingest", "--db", str(db), "--xml", str(archive)]) == 0
    out = capsys.readouterr().out
    assert "1 skipped" in out and "x/NCT90000007.xml: member unpacks to 200033 bytes" in out


def test_a_bulk_source_with_no_usable_record_is_an_error(db, tmp_path, capsys):
    archive = _zip(tmp_path / "junk.zip", {"x/a.xml": b"<notastudy/>", "x/b.xml": HOSTILE / "not_wellformed.xml"})
    before = content_checksum(db)
    assert main(["ingest", "--db", str(db), "--xml", str(archive)]) == 2
    assert "junk.zip: no usable study record (2 skipped" in capsys.readouterr().err
    bad_top = tmp_path / "bad_top.csv"
    bad_top.write_text((FIX / "top_a.csv").read_text(encoding="utf-8").split("\n")[0]
                       + "\nNCT1,completed,,1,phase 1,[],[],[],[],x\n", encoding="utf-8")
    assert main(["ingest", "--db", str(db), "--top", str(bad_top)]) == 2
    assert "bad_top.csv: none of its 1 rows is usable" in capsys.readouterr().err
    assert content_checksum(db) == before
