"""`import-synthetic`: the paper's published format, good and bad inputs."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core.cli import main as cli_main
from core.store import connect
from core.store import synthetic as syn

FIX = Path(__file__).parents[1] / "fixtures" / "pipeline" / "published"


@pytest.fixture
def published(tmp_path) -> Path:
    dst = tmp_path / "published"
    shutil.copytree(FIX, dst)
    return dst


def _import(db, d: Path, *extra: str) -> int:
    return cli_main(["import-synthetic", "--db", str(db), "--reports", str(d / "reports"),
                     "--labels", str(d / "labels.txt"), *extra])


def test_import_published_set(tmp_path, published, capsys):
    db = tmp_path / "s.duckdb"
    assert _import(db, published, "--interventions", str(published / "interventions.txt"), "--source", "paper") == 0
    with connect(db) as con:
        rows = {r["item_index"]: r for r in syn.list_synthetic(con, source="paper")}
    assert sorted(rows) == [0, 1, 3, 4]          # the directory holds only some indices
    assert [rows[i]["intended_label"] for i in (0, 1, 3, 4)] == [1, 0, 1, 0]   # line i = report i
    assert rows[0]["intended_intervention"] == "Metformin" and rows[0]["intervention_match"]
    assert rows[0]["record"]["interventions"][0]["name"] == "Metformin" and rows[0]["validation_status"] == "ok"
    assert rows[1]["parse_format"] == "json-fenced" and rows[1]["validation_status"] == "warning"
    assert {f["word"] for f in rows[1]["validation"]["label_leak"]["detail"]["found"]} == {"failed"}
    assert rows[3]["parse_format"] == "xml" and rows[3]["record"]["brief_title"].startswith("Topical Tacrolimus")
    assert rows[4]["validation_status"] == "invalid" and not rows[4]["validation"]["parses"]["ok"]
    assert rows[4]["raw_text"].startswith("The model declined")
    assert all(r["run_id"] is None and r["id"] == f"paper:{i}" for i, r in rows.items())

    # kept apart by source; re-importing updates in place and keeps reviews
    with connect(db) as con:
        syn.set_review(con, "paper:0", "accepted", "looks real")
    assert _import(db, published, "--source", "other") == 0
    assert _import(db, published, "--interventions", str(published / "interventions.txt"), "--source", "paper") == 0
    with connect(db) as con:
        by_source = {s["source"]: s for s in syn.sources(con)}
        assert syn.get_synthetic(con, "paper:0")["review_status"] == "accepted"
        other = syn.get_synthetic(con, "other:0")
    assert by_source["paper"]["n"] == by_source["other"]["n"] == 4
    assert by_source["paper"]["invalid"] == 1
    assert other["intended_intervention"] == "Metformin" and other["intervention_match"] is None  # no list given
    capsys.readouterr()


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "labels.txt").write_text("1\n0\nyes\n1\n0\n1\n"), "labels.txt: line 3: label must be 0 or 1"),
    (lambda d: (d / "labels.txt").write_text("1\n0\n1\n1\n"), "synthetic_clinical_report_4.txt: no label for report 4"),
    (lambda d: (d / "interventions.txt").write_text("Metformin\nPaclitaxel\n"),
     "synthetic_clinical_report_3.txt: no intervention for report 3"),
    (lambda d: (d / "reports" / "synthetic_clinical_report_3.txt").write_bytes(b"{\"brief_title\": \"\xff\xfe\"}"),
     "synthetic_clinical_report_3.txt: not UTF-8"),
    (lambda d: (d / "reports" / "synthetic_clinical_report_1.txt").write_text("  \n"),
     "synthetic_clinical_report_1.txt: empty report"),
    (lambda d: [p.unlink() for p in (d / "reports").iterdir()], "no synthetic_clinical_report_{i}.txt files"),
])
def test_bad_input_exits_2_and_stores_nothing(tmp_path, published, capsys, damage, message):
    db = tmp_path / "s.duckdb"
    damage(published)
    assert _import(db, published, "--interventions", str(published / "interventions.txt"), "--source", "x") == 2
    assert message in capsys.readouterr().err
    with connect(db) as con:
        assert syn.list_synthetic(con) == []


def test_missing_label_file_and_bad_source(tmp_path, published, capsys):
    db = tmp_path / "s.duckdb"
    assert cli_main(["import-synthetic", "--db", str(db), "--reports", str(published / "reports"),
                     "--labels", str(tmp_path / "nope.txt")]) == 2
    assert "nope.txt: cannot read" in capsys.readouterr().err
    assert _import(db, published, "--source", "run:x") == 2
    assert "--source" in capsys.readouterr().err
