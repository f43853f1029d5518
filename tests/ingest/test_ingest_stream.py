"""`ingest --ctgov-json` of a bulk archive (the ctg-studies.json.zip layout) streams study by study: memory
stays bounded as the archive grows, every study arrives, and a large single JSON document is parsed
incrementally (ijson)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.servers.ctgov_archive import build_archive, nct
from tests.servers.ctgov_server import load_studies
from core.cli import main
from core.ingest import IngestError, ingest, json_ctgov
from core.store import connect

ROOT = Path(__file__).resolve().parents[2]
# Peak memory of this process's own address space (VmHWM). Not ru_maxrss: Linux carries the parent's high-water
# mark across fork+exec into it, so a child of a large pytest process would report pytest's size.
PEAK = """
import re, sys
from core.ingest import ingest
s = ingest(sys.argv[2], ctgov_json=[sys.argv[1]])
hwm_kb = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
print(s["ctgov_json"]["records"], hwm_kb // 1024)
"""


def _peak_mb(archive: Path, db: Path) -> tuple[int, int]:
    env = {**os.environ, "CTGEN_INGEST_MEMORY_LIMIT": "128MB", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", PEAK, str(archive), str(db)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600, check=True).stdout.split()
    return int(out[0]), int(out[1])


@pytest.mark.slow
def test_a_multi_thousand_study_archive_streams_in_bounded_memory(tmp_path):
    small = build_archive(tmp_path / "small.zip", 500)
    large = build_archive(tmp_path / "large.zip", 8_000)
    n_small, rss_small = _peak_mb(small, tmp_path / "small.duckdb")
    n_large, rss_large = _peak_mb(large, tmp_path / "large.duckdb")
    assert (n_small, n_large) == (500, 8_000)
    # 7,500 more studies (~80 MB of JSON, ~250 MB as records held at once) add less than 150 MB of peak
    # memory: the records are not accumulated; DuckDB's cache is held to 128 MB
    assert rss_large - rss_small < 150, (rss_small, rss_large)
    assert rss_large < 2048
    with connect(tmp_path / "large.duckdb", read_only=True) as con:
        n, distinct, titled = con.execute(
            "SELECT count(*), count(DISTINCT nct_id), count(*) FILTER (WHERE brief_title LIKE '%(copy %)') "
            "FROM trials WHERE source = 'ctgov_json'").fetchall()[0]
        raw = json.loads(con.execute("SELECT raw_document FROM trials WHERE nct_id = ?", [nct(7_999)]).fetchall()[0][0])
    assert n == distinct == titled == 8_000
    assert raw["protocolSection"]["identificationModule"]["nctId"] == nct(7_999)


def test_a_large_json_document_is_parsed_incrementally(tmp_path, monkeypatch):
    """A member (or file) above STREAM_MIN_BYTES is read with ijson: a JSON list or a page of studies,
    and a document cut short keeps the studies before the cut and names the file."""
    monkeypatch.setattr(json_ctgov, "STREAM_MIN_BYTES", 1_000)
    monkeypatch.setattr(json_ctgov, "BATCH", 7)   # several batches
    one = build_archive(tmp_path / "one.zip", 40, one_member=True)
    db = tmp_path / "store.duckdb"
    summary = ingest(db, ctgov_json=[one])
    assert summary["ctgov_json"] == {"files": 1, "records": 40, "skipped": 0}

    page = tmp_path / "page.json"
    studies = list(load_studies().values())
    page.write_text(json.dumps({"studies": studies, "nextPageToken": "x"}))
    assert ingest(db, ctgov_json=[page])["ctgov_json"]["records"] == len(studies)

    cut = tmp_path / "cut.json"
    text = json.dumps(studies)
    cut.write_text(text[: text.index('"NCT91000004"')])
    s = ingest(db, ctgov_json=[cut])
    assert s["ctgov_json"]["records"] == 3 and s["ctgov_json"]["skipped"] == 1
    assert f"{cut}: not valid JSON after study 3" in s["error_examples"][0]
    with connect(db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM trials").fetchall()[0][0] == 40 + len(studies)


def test_a_failed_stream_changes_nothing(tmp_path, capsys):
    """The stream is staged outside the store: an archive with no usable study stops the command and the
    store is as it was (no scratch file is left behind)."""
    db = tmp_path / "store.duckdb"
    good = build_archive(tmp_path / "good.zip", 20)
    ingest(db, ctgov_json=[good])
    junk = tmp_path / "junk.zip"
    with zipfile.ZipFile(junk, "w") as zf:
        zf.writestr("ctg-studies/a.json", '{"protocolSection": {}}')
        zf.writestr("ctg-studies/b.json", "not json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"protocolSection": {"identificationModule": {"nctId": "NCT1"}}}')
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["ingest", "--db", str(db), "--ctgov-json", str(junk)]) == 2
    assert "junk.zip: no usable study record (2 skipped" in capsys.readouterr().err
    again = build_archive(tmp_path / "again.zip", 30)   # 10 new studies, staged before the bad file stops it
    before = sorted(before + ["again.zip"])
    with pytest.raises(IngestError, match="bad.json"):
        ingest(db, ctgov_json=[again, bad])
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    with connect(db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM trials").fetchall()[0][0] == 20
