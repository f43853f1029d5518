"""The paper's fine-tuning protocol (section 4.1, Table 3) with the TF-IDF model on the real mirror.

Synthetic trials come from tests/fixtures/finetune/synthetic.py (hand-built TEST FIXTURES, no LLM)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.finetune import protocol as X
from core.store import connect
from fixtures.finetune.synthetic import SOURCE

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ds(syn_db) -> X.Dataset:
    return X.load_dataset(syn_db)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def _labelled_ids(db: Path) -> set[str]:
    with connect(db, read_only=True) as con:
        return {r["nct_id"] for r in __import__("core.store.trials", fromlist=["x"]).labeled_trials(con)}


def test_sets_a_and_b_partition_the_labelled_trials(ds, syn_db):
    a, b = {e.id for e in ds.set_a}, {e.id for e in ds.set_b}
    assert a and b and not a & b
    assert a | b == _labelled_ids(syn_db)
    assert len(ds.synthetic) == 120 and all(e.synthetic for e in ds.synthetic)
    # Set A is defined by the synthetic set's interventions: every A trial names one of them.
    wanted = {i.lower() for i in ds.interventions}
    assert len(wanted) == 20
    with connect(syn_db, read_only=True) as con:
        from core.store.runs import trial_intervention_keys
        keys = trial_intervention_keys(con)
    assert all(keys[i] & wanted for i in a)
    assert not any(keys.get(i, set()) & wanted for i in b)


def test_in_distribution_split_is_stratified_seeded_and_disjoint(ds):
    s1 = X.make_split(ds, "in-distribution", "real", 40)
    s1b = X.make_split(ds, "in-distribution", "real", 40)
    s2 = X.make_split(ds, "in-distribution", "real", 41)
    ids = lambda xs: [e.id for e in xs]  # noqa: E731
    assert ids(s1.test) == ids(s1b.test) and set(ids(s1.test)) != set(ids(s2.test))
    tr, va, te = set(ids(s1.train)), set(ids(s1.val)), set(ids(s1.test))
    assert not (tr & va or tr & te or va & te)
    assert tr | va | te == {e.id for e in ds.set_a}
    n = len(ds.set_a)
    assert abs(len(tr) - 0.6 * n) <= 2 and abs(len(va) - 0.2 * n) <= 2 and abs(len(te) - 0.2 * n) <= 2
    share = lambda xs: sum(e.label for e in xs) / len(xs)  # noqa: E731
    assert abs(share(s1.train) - share(ds.set_a)) < 0.01 and abs(share(s1.test) - share(ds.set_a)) < 0.02
    assert not any(e.synthetic for e in s1.val + s1.test)
    hybrid = X.make_split(ds, "in-distribution", "hybrid", 40)
    assert len(hybrid.train) == len(s1.train) + 120 and ids(hybrid.test) == ids(s1.test)
    assert X.make_split(ds, "in-distribution", "none", 40).train == []
    syn = X.make_split(ds, "in-distribution", "synthetic", 40)
    assert len(syn.train) == 120 and all(e.synthetic for e in syn.train)


def test_ratio_compositions_at_fixed_size(ds):
    for r in X.RATIOS:
        s = X.make_split(ds, "ratio", X.ratio_train_name(r), 42, ratio=r)
        assert len(s.train) == 120  # the synthetic count (A's training part is larger)
        assert sum(e.synthetic for e in s.train) == round(120 * r)
        assert not any(e.synthetic for e in s.val + s.test)
    with pytest.raises(X.ExperimentError, match="needs"):
        X.make_split(ds, "ratio", "hybrid", 42, ratio=0.5, train_size=500)


def test_generalization_tests_on_balanced_halves_of_b(ds):
    s = X.make_split(ds, "generalization", "hybrid", 40)
    b = {e.id for e in ds.set_b}
    assert {e.id for e in s.val + s.test} <= b
    assert not {e.id for e in s.val} & {e.id for e in s.test}
    for part in (s.val, s.test):
        assert abs(sum(e.label for e in part) * 2 - len(part)) <= 1  # class-balanced
    assert abs(len(s.val) - len(s.test)) <= 2
    minority = min(sum(e.label for e in ds.set_b), sum(1 - e.label for e in ds.set_b))
    assert len(s.val) + len(s.test) == 2 * minority
    assert len(s.train) == len(ds.set_a) + 120


def test_table3_full_protocol_tfidf(syn_db):
    """`experiment table3` runs all 14 cells x 3 seeds, stores them and prints the Table 3 layout."""
    proc = _cli("experiment", "table3", "--db", str(syn_db), "--model", "tfidf", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(out["runs"]) == 14 and not out["skipped"]
    text = proc.stdout
    for title in ("In-distribution", "Ratio", "Generalization", "No Fine-Tuning", "80% Syn + 20% Real", "100% Real",
                  "Hybrid", "ROC-AUC", "PR-AUC"):
        assert title in text
    runs = {r["run_id"]: r for r in X.stored_runs(syn_db) if r["grid_id"] == out["grid_id"]}
    assert len(runs) == 14
    per_seed, curves = X.stored_details(syn_db, list(runs))
    assert len(per_seed) == 14 * 3 and len(curves) == 14 * 3 * 2
    for r in out["runs"]:
        stored = runs[r["run_id"]]
        seeds = [s for s in per_seed if s["run_id"] == r["run_id"]]
        assert [s["seed"] for s in seeds] == [40, 41, 42]
        for m in X.METRICS:
            assert stored["summary"][m]["mean"] == pytest.approx(r[m]["mean"])
            assert r[m]["mean"] == pytest.approx(sum(s[m] for s in seeds) / 3)
    # TF-IDF "no fine-tuning" is a constant classifier: ROC-AUC exactly 0.5.
    none = [r for r in out["runs"] if r["train"] == "none"]
    assert len(none) == 2 and all(r["roc_auc"]["mean"] == 0.5 for r in none)
    # Real labelled text carries signal once the leaking fields are gone (not a coin flip).
    real = next(r for r in out["runs"] if r["experiment"] == "in-distribution" and r["train"] == "real")
    assert 0.6 < real["roc_auc"]["mean"] < 0.95


def test_finetune_json_last_line(syn_db):
    proc = _cli("finetune", "--db", str(syn_db), "--experiment", "in-distribution", "--train", "hybrid",
                "--model", "tfidf", "--seeds", "40,41", "--json", "--synthetic-source", SOURCE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(X.METRICS) <= set(out) and {"n_train", "n_test"} <= set(out)
    for m in X.METRICS:
        assert set(out[m]) == {"mean", "sd"} and 0 <= out[m]["mean"] <= 1
    ds = X.load_dataset(syn_db)
    split = X.make_split(ds, "in-distribution", "real", 40)
    assert out["n_train"] == len(split.train) + 120 and out["n_test"] == len(split.test)


def test_ratio_cli_and_errors(syn_db):
    ok = _cli("finetune", "--db", str(syn_db), "--experiment", "ratio", "--synthetic-ratio", "0.4",
              "--model", "tfidf", "--seeds", "40", "--json")
    assert ok.returncode == 0, ok.stderr[-2000:]
    out = json.loads(ok.stdout.strip().splitlines()[-1])
    assert out["synthetic_ratio"] == pytest.approx(0.4) and out["n_train"] == 120
    missing = _cli("finetune", "--db", str(syn_db), "--experiment", "ratio", "--model", "tfidf")
    assert missing.returncode == 2 and "--synthetic-ratio" in missing.stderr
    no_train = _cli("finetune", "--db", str(syn_db), "--experiment", "in-distribution", "--model", "tfidf")
    assert no_train.returncode == 2 and "--train is required" in no_train.stderr
    bad = Path(syn_db).with_name("not-a-store.duckdb")
    bad.write_text("not a database")
    broken = _cli("finetune", "--db", str(bad), "--experiment", "in-distribution", "--train", "real", "--model", "tfidf")
    assert broken.returncode == 2 and str(bad) in broken.stderr and "Traceback" not in broken.stderr
    source = _cli("finetune", "--db", str(syn_db), "--experiment", "in-distribution", "--train", "hybrid",
                  "--model", "tfidf", "--synthetic-source", "nope")
    assert source.returncode == 2 and "'nope'" in source.stderr and SOURCE in source.stderr


def test_without_synthetic_trials(mirror_db_copy):
    """No synthetic set: synthetic/hybrid exit 2 with a clear message; real and none still run, and set A
    is the retrieval-eligible interventions' trials."""
    proc = _cli("finetune", "--db", str(mirror_db_copy), "--experiment", "in-distribution", "--train", "synthetic",
                "--model", "tfidf")
    assert proc.returncode == 2
    assert "no usable synthetic trials" in proc.stderr and "synthetic_trials" in proc.stderr
    proc = _cli("finetune", "--db", str(mirror_db_copy), "--experiment", "generalization", "--train", "real",
                "--model", "tfidf", "--seeds", "40", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["roc_auc"]["mean"] > 0.55
    ds = X.load_dataset(mirror_db_copy)
    for experiment in ("in-distribution", "generalization"):
        with pytest.raises(X.ExperimentError, match="no usable synthetic trials"):
            X.check_request(ds, experiment, "hybrid")
    run, _ = X.run_cell(ds, "in-distribution", "none", "tfidf", [40])
    assert run["summary"]["roc_auc"]["mean"] == 0.5 and "constant classifier" in run["model_note"]
    from core.pipeline import retrieval

    with connect(mirror_db_copy, read_only=True) as con:
        eligible = sorted(d["name"] for d in retrieval.eligible_interventions(con))
    assert sorted(ds.interventions) == eligible and "core.pipeline.retrieval" in ds.interventions_from
    assert len(ds.set_a) > 500
