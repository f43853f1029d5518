"""data/sources.toml: every mirror file is listed with its checksum; without a mirror, sources are
downloaded from their upstream URL (here a real HTTP server on localhost) into a cache and checked."""
from __future__ import annotations

import hashlib
import http.server
import threading
import zipfile
from pathlib import Path

import pytest

from core import config
from core.cli import main
from core.ingest import IngestError, sample_data
from core.ingest import sources as src_mod
from core.store import connect

FIX = Path(__file__).parents[1] / "fixtures" / "ingest"


def test_sources_toml_covers_the_whole_mirror(mirror):
    srcs = src_mod.load_sources()
    listed = {s.path for group in srcs.values() for s in group}
    on_disk = {str(p.relative_to(mirror)) for p in mirror.rglob("*") if p.is_file() and p.name != "README.md"}
    assert listed == on_disk
    assert len(srcs["top"]) == len([p for p in on_disk if p.startswith("top/")])
    # TOP preference order: the current HINT release first
    assert srcs["top"][0].path.startswith("top/hint/")
    for group in srcs.values():
        for s in group:
            assert len(s.sha256) == 64 and (s.url == "" or s.url.startswith("https://"))


@pytest.fixture
def upstream(tmp_path):
    """A real HTTP server on localhost serving the fixture files (one of them zipped)."""
    root = tmp_path / "www"
    root.mkdir()
    for name in ("top_a.csv", "outcomes.csv", "outcome2label.txt"):
        (root / name).write_bytes((FIX / name).read_bytes())
    with zipfile.ZipFile(root / "drugbank.zip", "w") as zf:
        zf.write(FIX / "drugbank_small.csv", "drugbank vocabulary.csv")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _toml(url: str, top_sha: str) -> str:
    return f'''
[ctgov_xml]
path = "ctgov/AllPublicXML-NCT0000xxxx.zip"
url = ""
sha256 = "{'0' * 64}"

[iqvia_outcomes]
path = "iqvia/trial_outcomes_v1.csv"
url = "{url}/outcomes.csv"
sha256 = "{_sha(FIX / 'outcomes.csv')}"

[iqvia_outcome_map]
path = "iqvia/outcome2label.txt"
url = "{url}/outcome2label.txt"
sha256 = "{_sha(FIX / 'outcome2label.txt')}"

[drugbank]
path = "drugbank/drugbank_vocabulary.csv"
url = "{url}/drugbank.zip"
sha256 = "{_sha(FIX / 'drugbank_small.csv')}"
member = "drugbank vocabulary.csv"

[[top]]
path = "top/hint/phase_I_test.csv"
url = "{url}/top_a.csv"
sha256 = "{top_sha}"
'''


def test_without_a_mirror_sources_are_downloaded_and_checked(upstream, tmp_path, monkeypatch, capsys):
    toml = tmp_path / "sources.toml"
    toml.write_text(_toml(upstream, _sha(FIX / "top_a.csv")), encoding="utf-8")
    monkeypatch.setattr(config, "SOURCES_FILE", toml)
    monkeypatch.setattr(config, "data_mirror", lambda: None)
    monkeypatch.setenv("CTGEN_CACHE", str(tmp_path / "cache"))
    db = tmp_path / "dl.duckdb"
    summary = sample_data(db)
    assert summary["mirror"] is None
    assert summary["skipped_sources"] == ["ctgov/AllPublicXML-NCT0000xxxx.zip"]  # no upstream URL
    # the command line: second run reads the verified cache, says what it could not get
    assert main(["sample-data", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "TOP: 3 trials" in out and "not available (no mirror copy, no upstream URL): ctgov/AllPublicXML" in out
    assert (tmp_path / "cache" / "drugbank" / "drugbank_vocabulary.csv").read_bytes() == (FIX / "drugbank_small.csv").read_bytes()
    with connect(db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM trials").fetchone()[0] == 3
        assert con.execute("SELECT count(*) FROM drugbank").fetchone()[0] == 5
        assert con.execute("SELECT top_files FROM trials WHERE nct_id = 'NCT90000010'").fetchone()[0] == [
            "top/hint/phase_I_test.csv"]


def test_a_download_with_the_wrong_checksum_is_refused(upstream, tmp_path, monkeypatch):
    toml = tmp_path / "sources.toml"
    toml.write_text(_toml(upstream, "f" * 64), encoding="utf-8")
    monkeypatch.setattr(config, "SOURCES_FILE", toml)
    monkeypatch.setattr(config, "data_mirror", lambda: None)
    monkeypatch.setenv("CTGEN_CACHE", str(tmp_path / "cache"))
    db = tmp_path / "bad.duckdb"
    with pytest.raises(IngestError, match="checksum mismatch for source top/hint/phase_I_test.csv"):
        sample_data(db)
    assert not db.exists()
    assert not (tmp_path / "cache" / "top" / "hint" / "phase_I_test.csv").exists()


def test_a_mirror_file_that_changed_is_refused(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    (mirror / "top" / "hint").mkdir(parents=True)
    (mirror / "top" / "hint" / "phase_I_test.csv").write_bytes(b"nctid\n")
    src = src_mod.Source("top", "top/hint/phase_I_test.csv", "", "0" * 64)
    with pytest.raises(IngestError, match="checksum mismatch"):
        src_mod.resolve(src, mirror)
    with pytest.raises(IngestError, match="missing from the data mirror"):
        src_mod.resolve(src_mod.Source("top", "top/hint/absent.csv", "", "0" * 64), mirror)
