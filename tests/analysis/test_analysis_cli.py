"""`python -m core analyze` on stores with constructed real trials and synthetic fixture rows."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fixtures.analysis.store import FIXTURE_SOURCE, build_store

ROOT = Path(__file__).resolve().parents[2]


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", "analyze", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_json_last_line_has_the_statistics_of_a_synthetic_set(tmp_path):
    db = build_store(tmp_path / "derm.duckdb", n_real=24, synthetic="dermatology", n_synth=18)
    p = analyze("--db", str(db), "--synthetic-source", FIXTURE_SOURCE, "--pairs", "3000", "--json",
                "--synthetic-rule", "all")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert set(out["cosine"]) == {"real-real", "synthetic-synthetic", "real-synthetic"}
    # fewer distinct pairs exist than the 3000 asked for: all of them, each once, and the true n
    true_n = {"real-real": 24 * 23 // 2, "synthetic-synthetic": 18 * 17 // 2, "real-synthetic": 24 * 18}
    for kind, stats in out["cosine"].items():
        assert stats["n"] == true_n[kind] == stats["distinct"] and stats["requested"] == 3000
        assert -1 <= stats["mean"] <= 1 and stats["sd"] > 0
    # another topic: closer within each set than across, easy to detect, no copies
    assert out["cosine"]["real-synthetic"]["mean"] < out["cosine"]["real-real"]["mean"] - 0.2
    assert out["detection_auc"] > 0.95
    assert out["near_copies"] == 0 and out["nearest_real_distance"]["min"] > 0.2
    assert out["n_real"] == 24 and out["n_synthetic"] == 18
    assert 0 < out["diversity"]["synthetic_distinct_2"] <= 1
    assert out["diversity"]["synthetic_mean_pairwise_cosine"] == out["cosine"]["synthetic-synthetic"]["mean"]
    # fixture validation: intervention check fails for k % 4 == 0 (5 of 18), leakage for k % 5 == 0 (4 of 18)
    assert abs(out["intervention_match_rate"] - 13 / 18) < 1e-9
    assert abs(out["leakage_rate"] - 4 / 18) < 1e-9


def test_copies_of_real_trials_are_flagged(tmp_path):
    db = build_store(tmp_path / "copies.duckdb", n_real=24, synthetic="copies", n_synth=12)
    p = analyze("--db", str(db), "--pairs", "2000", "--json", "--projection", "tsne", "--synthetic-rule", "all")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["near_copies"] == 12 and out["nearest_real_distance"]["max"] < 1e-4
    assert out["detection_auc"] < 0.7  # copies cannot be told from the real trials they copy
    # same parameters again: the stored result is reused, with the same numbers
    again = analyze("--db", str(db), "--pairs", "2000", "--json", "--projection", "tsne", "--synthetic-rule", "all")
    assert again.returncode == 0 and "reused stored results (quality, tsne)" in again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1]) == out


def test_no_synthetic_trials_exits_2_with_a_clear_message(tmp_path):
    db = build_store(tmp_path / "empty.duckdb", synthetic="none")
    p = analyze("--db", str(db), "--json")
    assert p.returncode == 2
    assert "no synthetic trials" in p.stderr and str(db) in p.stderr
    assert p.stdout.strip() == ""


def test_unknown_synthetic_source_exits_2_naming_the_sets(tmp_path):
    db = build_store(tmp_path / "derm.duckdb", n_synth=5)
    p = analyze("--db", str(db), "--synthetic-source", "nope", "--json")
    assert p.returncode == 2
    assert "'nope'" in p.stderr and "--synthetic-source" in p.stderr and FIXTURE_SOURCE in p.stderr
    missing = analyze("--db", str(tmp_path / "absent.duckdb"))
    assert missing.returncode == 2 and "absent.duckdb" in missing.stderr


def test_each_set_is_analysed_separately(tmp_path):
    from core.store import connect
    from fixtures.analysis.store import insert_synthetic, oncology_record

    db = build_store(tmp_path / "two.duckdb", n_real=20, synthetic="dermatology", n_synth=10)
    with connect(db) as con:  # a second set: copies of real trials, under another source name
        insert_synthetic(con, [oncology_record(i) for i in range(6)], "Paclitaxel", source="test-fixture:copies")
    p = analyze("--db", str(db), "--each-set", "--pairs", "1000", "--json", "--synthetic-rule", "all")
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in p.stdout.strip().splitlines() if x.startswith("{")]
    by_set = {x["synthetic_source"]: x for x in lines}
    assert set(by_set) == {FIXTURE_SOURCE, "test-fixture:copies"}
    assert by_set["test-fixture:copies"]["near_copies"] == 6 and by_set[FIXTURE_SOURCE]["near_copies"] == 0
    assert by_set[FIXTURE_SOURCE]["n_synthetic"] == 10 and by_set["test-fixture:copies"]["n_synthetic"] == 6


def test_default_analyses_the_usable_trials_and_says_so_with_n_and_class_sizes(tmp_path):
    # fixture statuses cycle ok / warning / invalid: 6 of the 18 synthetic trials are invalid
    db = build_store(tmp_path / "usable.duckdb", n_real=24, synthetic="dermatology", n_synth=18)
    p = analyze("--db", str(db), "--pairs", "100", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["synthetic_rule"] == "usable" and "not rejected" in out["synthetic_rule_text"]
    assert out["n_synthetic"] == 12 and out["n_synthetic_excluded"] == 6 and out["n_real"] == 24
    assert {k: v["n"] for k, v in out["cosine"].items()} == {
        "real-real": 100, "synthetic-synthetic": 66, "real-synthetic": 100}   # 12 trials: 66 distinct pairs
    assert out["cosine"]["synthetic-synthetic"]["distinct"] == 66
    det = out["detection"]
    assert det["n_real"] == 24 and det["n_synthetic"] == 12 and det["auc"] == out["detection_auc"]
    assert det["ci_low"] <= det["auc"] <= det["ci_high"] and det["ci_level"] == 0.95
    assert det["warning"] and "below 30 per class" in det["warning"]
    assert out["intervention_checked"] == 12 and out["leakage_checked"] == 12
    every = analyze("--db", str(db), "--pairs", "100", "--json", "--synthetic-rule", "all")
    assert json.loads(every.stdout.strip().splitlines()[-1])["n_synthetic"] == 18
