"""Ingest of small hand-written fixtures: mapping of both ClinicalTrials.gov formats, TOP merging,
IQVIA labels, DrugBank matching, idempotency."""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import duckdb
import pytest

from core.cli import main
from core.ingest import ingest
from core.ingest.json_ctgov import enum_label, phase_label
from core.ingest.matching import normalize_name
from core.store import connect
from core.store.trials import get_records, label_conflicts, labeled_trials, name_norm_sql, store_stats

FIX = Path(__file__).parents[1] / "fixtures" / "ingest"


def _all_sources(db: Path) -> dict:
    return ingest(db, xml=[FIX / "xml"], ctgov_json=[FIX / "json" / "page_with_broken_study.json"],
                  top=[FIX / "top_a.csv", FIX / "top_b.csv"], outcomes=FIX / "outcomes.csv",
                  drugbank=FIX / "drugbank_small.csv")


@pytest.fixture(scope="module")
def fixture_db(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("fx") / "fx.duckdb"
    _all_sources(db)
    return db


def _rows(db: Path, sql: str, params=None) -> list[tuple]:
    with connect(db, read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def test_xml_record_maps_every_canonical_field(fixture_db):
    with connect(fixture_db, read_only=True) as con:
        rec = get_records(con, ["NCT90000001"])["NCT90000001"]
    assert rec["brief_title"] == "Nifedipine and Aspirin in Congenital Adrenal Hyperplasia"
    assert rec["acronym"] == "NICAH"
    assert rec["phase"] == "Phase 2/Phase 3"
    assert (rec["overall_status"], rec["why_stopped"]) == ("Terminated", "Lack of efficacy at interim analysis")
    assert (rec["start_date"], rec["start_date_type"]) == ("March 2001", "Actual")
    assert rec["primary_completion_date_type"] == "Anticipated"
    assert (rec["enrollment"], rec["enrollment_type"]) == (42, "Actual")
    assert rec["conditions"] == ["Congenital Adrenal Hyperplasia", "Hypertension"]
    assert rec["interventions"][0] == {"type": "Drug", "name": "nifedipine",
                                       "description": "30 mg extended release, once daily",
                                       "other_names": ["Procardia XL", "Adalat CC"]}
    assert [a["label"] for a in rec["arm_groups"]] == ["Nifedipine", "Placebo"]
    assert rec["primary_outcomes"][0]["time_frame"] == "12 weeks"
    assert rec["eligibility_criteria"].startswith("Inclusion Criteria:\n\n  -  diagnosed with congenital")
    assert "\r" not in rec["eligibility_criteria"] and "Exclusion Criteria:" in rec["eligibility_criteria"]
    assert (rec["gender"], rec["minimum_age"], rec["maximum_age"]) == ("All", "6 Years", "17 Years")
    assert (rec["lead_sponsor"], rec["sponsor_class"]) == ("Fixture University Hospital", "Other")
    assert rec["collaborators"] == ["National Institute of Fixtures"]
    assert rec["design_info"]["allocation"] == "Randomized"
    assert rec["has_results"] is True
    raw, fmt = _rows(fixture_db, "SELECT raw_document, raw_format FROM trials WHERE nct_id = 'NCT90000001'")[0]
    assert fmt == "xml" and raw == (FIX / "xml" / "NCT90000001.xml").read_text(encoding="utf-8")


def test_api_v2_json_maps_like_the_xml(tmp_path):
    """The same study in both formats gives the same canonical record (up to date spelling)."""
    db_x, db_j = tmp_path / "x.duckdb", tmp_path / "j.duckdb"
    ingest(db_x, xml=[FIX / "xml" / "NCT90000001.xml"])
    ingest(db_j, ctgov_json=[FIX / "json" / "study_NCT90000001.json"])
    with connect(db_x, read_only=True) as cx, connect(db_j, read_only=True) as cj:
        x = get_records(cx, ["NCT90000001"])["NCT90000001"]
        j = get_records(cj, ["NCT90000001"])["NCT90000001"]
    different = {"design_info", "healthy_volunteers"}
    for key in x:
        if key not in different:
            assert x[key] == j[key], key
    assert (j["start_date"], j["start_date_type"]) == ("March 2001", "Actual")
    assert j["primary_completion_date_type"] == "Anticipated"  # API v2 ESTIMATED
    assert j["design_info"] == {"allocation": "Randomized", "intervention_model": "Parallel Assignment",
                                "primary_purpose": "Treatment", "masking": "Double (Participant, Investigator)"}
    raw = _rows(db_j, "SELECT raw_document, raw_format, sources FROM trials")[0]
    assert raw[1] == "json" and raw[2] == ["ctgov_json"]
    assert json.loads(raw[0])["protocolSection"]["identificationModule"]["nctId"] == "NCT90000001"


def test_api_v2_enum_mapping():
    assert phase_label(["PHASE2", "PHASE3"]) == "Phase 2/Phase 3"
    assert phase_label(["EARLY_PHASE1"]) == "Early Phase 1"
    assert phase_label(["NA"]) == "N/A"
    assert phase_label([]) is None
    assert enum_label("DRUG") == "Drug" and enum_label("DIETARY_SUPPLEMENT") == "Dietary Supplement"
    assert enum_label("BIOLOGICAL") == "Biological"


def test_api_v2_page_directory_and_bulk_zip(tmp_path):
    # a page with one broken study: the study is skipped, named and counted; the rest imported
    db = tmp_path / "page.duckdb"
    s = ingest(db, ctgov_json=[FIX / "json" / "page_with_broken_study.json"])
    assert s["ctgov_json"] == {"files": 1, "records": 1, "skipped": 1}
    err = _rows(db, "SELECT member, error FROM ingest_errors")
    assert len(err) == 1 and "studies[1]" in err[0][0] and "nctId" in err[0][1]
    rec = _rows(db, "SELECT phase, overall_status, enrollment_type, interventions[3].type FROM trials")[0]
    assert rec == ("Early Phase 1", "Active, not recruiting", "Anticipated", "Radiation")
    assert _rows(db, "SELECT start_date FROM trials") == [("May 14, 2019",)]
    # a directory, and the bulk ctg-studies.json.zip layout (one study per member)
    s = ingest(tmp_path / "dir.duckdb", ctgov_json=[FIX / "json"])
    assert s["ctgov_json"]["records"] == 2
    bulk = tmp_path / "ctg-studies.json.zip"
    with zipfile.ZipFile(bulk, "w") as zf:
        zf.write(FIX / "json" / "study_NCT90000001.json", "NCT90000001.json")
        zf.writestr("NCT90000099.json", '{"protocolSection": {"identificationModule": {"nctId": "NCT900')
    db = tmp_path / "zip.duckdb"
    assert main(["ingest", "--db", str(db), "--ctgov-json", str(bulk)]) == 0
    assert _rows(db, "SELECT nct_id FROM trials") == [("NCT90000001",)]
    assert _rows(db, "SELECT member FROM ingest_errors") == [("NCT90000099.json",)]


def test_top_rows_merge_with_full_records(fixture_db):
    rows = {r[0]: r[1:] for r in _rows(
        fixture_db, "SELECT nct_id, sources, source, top_files, eligibility_criteria, interventions FROM trials")}
    assert len(rows) == 6  # 3 XML + 1 JSON + 2 TOP-only; NCT90000001/2 are in XML and TOP
    sources, source, top_files, criteria, _ = rows["NCT90000001"]
    assert sources == ["ctgov_xml", "top"] and source == "ctgov_xml"
    assert top_files == [str(FIX / "top_a.csv")]
    assert "TOP criteria" not in criteria  # the full record's criteria win
    # the XML record has no criteria: TOP's are used
    assert rows["NCT90000002"][3].startswith("Inclusion Criteria:\n\n  -  HBsAg positive")
    # a trial in two TOP files: one row, fields and label from the first file, both files listed
    sources, source, top_files, criteria, ivs = rows["NCT90000010"]
    assert source == "top" and top_files == [str(FIX / "top_a.csv"), str(FIX / "top_b.csv")]
    assert [i["name"] for i in ivs] == ["methotrexate", "aspirin"]  # repeated drugs kept once
    assert all(i["type"] == "Drug" for i in ivs)
    assert _rows(fixture_db, "SELECT label, outcome_text FROM labels WHERE nct_id = 'NCT90000010' "
                             "AND label_source = 'top'") == [(1, "completed")]
    phase = _rows(fixture_db, "SELECT phase, overall_status, conditions FROM trials WHERE nct_id = 'NCT90000010'")
    assert phase == [("Early Phase 1", "Completed", ["crohn's disease", "ulcerative colitis"])]


def test_top_literals_are_never_evaluated(fixture_db):
    assert not Path("/tmp/ctgen-top-eval-pwned").exists()
    assert _rows(fixture_db, "SELECT count(*) FROM trials WHERE nct_id = 'NCT90000013'") == [(0,)]
    errors = [r[0] for r in _rows(fixture_db, "SELECT error FROM ingest_errors ORDER BY id")]
    assert any("NCT90000013" in e and "drugs" in e for e in errors)
    assert any("NCT9000'" in e for e in errors)


def test_labels_iqvia_top_and_effective(fixture_db, monkeypatch):
    labels = {(n, s): (lab, t) for n, s, lab, t in _rows(fixture_db, "SELECT * FROM labels")}
    # -1 outcomes and outcomes the map does not know: kept, no binary label
    assert labels[("NCT90000011", "iqvia")] == (None, "Terminated, Lack of funding")
    assert labels[("NCT90000004", "iqvia")][0] is None
    # a trial annotated twice takes its binary annotation
    assert labels[("NCT90000001", "iqvia")] == (0, "Terminated, Lack of efficacy")
    # labels of trials not (yet) in the store are kept but not counted as labelled
    assert labels[("NCT99999999", "iqvia")][0] == 1
    with connect(fixture_db, read_only=True) as con:
        stats = store_stats(con)
        eff = {r["nct_id"]: (r["label"], r["label_source"]) for r in labeled_trials(con)}
        conflicts = label_conflicts(con)
        eff_top = {r["nct_id"]: r["label"] for r in labeled_trials(con, ["top", "iqvia"])}
    assert set(eff) == {"NCT90000001", "NCT90000002", "NCT90000010", "NCT90000011"}
    assert stats["labeled"] == 4 and (stats["positive"], stats["negative"]) == (1, 3)
    # TOP says success, IQVIA failure: IQVIA wins by default, TOP when preferred; the conflict is visible
    assert eff["NCT90000010"] == (0, "iqvia") and eff_top["NCT90000010"] == 1
    assert [c["nct_id"] for c in conflicts] == ["NCT90000010"] and stats["label_conflicts"] == 1
    assert conflicts[0]["labels"]["top"] == (1, "completed")
    assert eff["NCT90000011"] == (0, "top")  # IQVIA unusable: TOP label applies


def test_drugbank_matching_rules(fixture_db):
    m = {(n, p): (name, t, d, rule) for n, p, name, t, d, rule in _rows(fixture_db, "SELECT * FROM intervention_matches")}
    assert m[("NCT90000001", 0)][2:] == ("DB01115", "common_exact")        # 'nifedipine' ~ 'Nifedipine'
    assert m[("NCT90000001", 1)][2:] == ("DB00945", "synonym_normalized")  # 'Aspirin' is a synonym
    assert m[("NCT90000002", 0)][2:] == ("DB00105", "common_normalized")   # 'Interferon Alfa 2b' ~ 'alfa-2b'
    assert m[("NCT90000003", 0)][2:] == ("DB00997", "synonym_normalized")  # JSON 'Adriamycin'
    assert ("NCT90000001", 2) not in m  # Placebo: no DrugBank entry
    assert ("NCT90000001", 3) not in m  # a Behavioral intervention is never matched
    assert m[("NCT90000011", 0)][2:] == ("DB00945", "common_exact")        # TOP drug
    names = _rows(fixture_db, "SELECT name_norm, kind FROM drugbank_names WHERE drugbank_id = 'DB00563' ORDER BY 1, 2")
    assert ("méthotrexate", "synonym") in names and ("methotrexate", "common") in names
    # a new DrugBank vocabulary re-matches every stored trial
    with connect(fixture_db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM drugbank").fetchone()[0] == 5


@pytest.mark.parametrize("name", ["Interferon alfa-2b", "  ASPIRIN ", "5-FU (fluorouracil)", "Méthotrexate",
                                  "co_trimoxazole", "N,N'-dimethyl", ""])
def test_python_and_sql_name_normalization_agree(name):
    sql = duckdb.connect().execute(f"SELECT {name_norm_sql('?')}", [name]).fetchone()[0]
    assert normalize_name(name) == sql


def test_reimport_is_idempotent_and_recomputes_matches(tmp_path, fixture_db):
    db = tmp_path / "again.duckdb"
    shutil.copy(fixture_db, db)
    before = _rows(db, "SELECT count(*), count(DISTINCT nct_id) FROM trials")[0]
    _all_sources(db)
    after = _rows(db, "SELECT count(*), count(DISTINCT nct_id) FROM trials")[0]
    assert before == after == (6, 6)
    assert _rows(db, "SELECT count(*) FROM labels")[0][0] == _rows(fixture_db, "SELECT count(*) FROM labels")[0][0]
    # a TOP-only re-import never overwrites a full record
    ingest(db, top=[FIX / "top_a.csv"])
    assert _rows(db, "SELECT source, sources FROM trials WHERE nct_id = 'NCT90000001'") == [("ctgov_xml", ["ctgov_xml", "top"])]
    # a DrugBank without Methotrexate: its matches disappear on the next ingest command
    small = tmp_path / "db.csv"
    lines = (FIX / "drugbank_small.csv").read_text(encoding="utf-8").splitlines()
    small.write_text("\n".join(l for l in lines if not l.startswith("DB00563")) + "\n", encoding="utf-8")
    ingest(db, drugbank=small)
    assert _rows(db, "SELECT count(*) FROM intervention_matches WHERE drugbank_id = 'DB00563'") == [(0,)]
    assert _rows(db, "SELECT count(*) FROM intervention_matches WHERE drugbank_id = 'DB01115'") == [(1,)]


def test_stats_cli_json_and_text(fixture_db, capsys):
    assert main(["stats", "--db", str(fixture_db), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("trials", "labeled", "positive", "negative", "drugbank_drugs", "eligible_interventions",
                "synthetic", "generation_failures", "label_conflicts"):
        assert key in out
    assert (out["trials"], out["labeled"], out["drugbank_drugs"], out["synthetic"]) == (6, 4, 5, 0)
    assert out["sources"] == {"ctgov_xml": 3, "ctgov_json": 1, "top": 4, "top_and_full_record": 2}
    assert main(["stats", "--db", str(fixture_db)]) == 0
    text = capsys.readouterr().out
    assert "trials:" in text and "labelled:               4 (1 success, 3 failure)" in text
    # issue 12: labelled trials that have a full record (XML or API v2), not only a TOP row
    with connect(fixture_db, read_only=True) as con:
        full = con.execute("""SELECT count(DISTINCT l.nct_id) FROM labels l JOIN trials t USING (nct_id)
                              WHERE l.label IS NOT NULL AND t.source IN ('ctgov_xml', 'ctgov_json')""").fetchall()[0][0]
    assert out["labelled_full_records"] == full and 0 < full < out["labeled"]
    assert f"labelled, full record:  {full}" in text


def test_eligible_interventions_rule(tmp_path):
    """>= 3 success and >= 3 failure trials by effective label, counted per DrugBank drug."""
    top = tmp_path / "top.csv"
    head = "nctid,status,why_stop,label,phase,diseases,icdcodes,drugs,smiless,criteria\n"
    rows = []
    for i in range(6):  # aspirin: 3 success, 3 failure -> eligible; nifedipine: 3 success, 2 failure -> not
        rows.append(f"NCT9100000{i},completed,,{i % 2},phase 2,['pain'],[],['aspirin'],[],c\n")
    for i in range(5):
        rows.append(f"NCT9200000{i},completed,,{1 if i < 3 else 0},phase 2,['pain'],[],\"['nifedipine', 'aspirin']\",[],c\n")
    top.write_text(head + "".join(rows), encoding="utf-8")
    db = tmp_path / "e.duckdb"
    ingest(db, top=[top], drugbank=FIX / "drugbank_small.csv")
    with connect(db, read_only=True) as con:
        s = store_stats(con)
    assert s["eligible_interventions"] == 1           # aspirin (any position): 6 + 5 trials
    assert s["eligible_interventions_first_drug"] == 1  # aspirin first in 6 trials (3/3)


def test_parallel_and_serial_xml_parsing_store_the_same(tmp_path, monkeypatch):
    import core.ingest.xml_ctgov as ing

    def content(db):
        return _rows(db, "SELECT * EXCLUDE (updated_at) FROM trials ORDER BY nct_id")

    serial = tmp_path / "serial.duckdb"
    ingest(serial, xml=[FIX / "xml"], workers=1)
    used = []

    class Spy(ing.ProcessPoolExecutor):
        def __init__(self, *a, **k):
            used.append(k.get("max_workers"))
            super().__init__(*a, **k)

    monkeypatch.setattr(ing, "ProcessPoolExecutor", Spy)
    monkeypatch.setattr(ing, "_can_fork", lambda: True)
    monkeypatch.setattr(ing, "_PARALLEL_MIN", 1)
    monkeypatch.setattr(ing, "_CHUNK", 1)
    parallel = tmp_path / "parallel.duckdb"
    ingest(parallel, xml=[FIX / "xml"], workers=2)
    assert used == [2]
    assert content(parallel) == content(serial) and len(content(serial)) == 3


def test_defused_parser_builds_the_same_tree_as_defusedxml(mirror):
    """The rewired parser (core.ingest.xml_ctgov.defused_fromstring) against defusedxml's own
    fromstring on real records, and it still refuses entity declarations."""
    import zipfile

    import defusedxml
    import defusedxml.ElementTree as DET

    from core.ingest.xml_ctgov import defused_fromstring

    def dump(e):
        return (e.tag, e.attrib, e.text, e.tail, [dump(c) for c in e])

    with zipfile.ZipFile(mirror / "ctgov" / "AllPublicXML-NCT0000xxxx.zip") as zf:
        names = [n for n in zf.namelist() if n.endswith(".xml")][::60]
        for name in names:
            data = zf.read(name)
            assert dump(defused_fromstring(data)) == dump(DET.fromstring(data)), name
    assert len(names) > 90
    for hostile in ("xxe.xml", "billion_laughs.xml"):
        with pytest.raises(defusedxml.EntitiesForbidden):
            defused_fromstring((FIX.parent / "ingest" / "hostile" / hostile).read_bytes())
