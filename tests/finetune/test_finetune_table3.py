"""Table 3's layout as data: all 14 rows always, the newest run in its cell, the paper's published values
(read from core/finetune/paper_table3.toml, no F1) beside ours; and the synthetic counts in words."""
from __future__ import annotations

from core.finetune import table3 as T3
from core.services.finetune import synthetic_message


def _run(run_id, experiment, train, ratio=None, roc=0.6, finished=1.0):
    summary = {m: {"mean": roc, "sd": 0.01} for m in T3.METRICS}
    return {"run_id": run_id, "experiment": experiment, "train": train, "synthetic_ratio": ratio,
            "model_used": "tfidf-logreg", "summary": summary, "finished_at": finished}


def test_every_row_with_the_papers_values_and_the_newest_run_per_cell():
    rows = T3.full_layout([_run("old", "in-distribution", "real", roc=0.61, finished=1.0),
                           _run("new", "in-distribution", "real", roc=0.65, finished=2.0),
                           _run("r40", "ratio", "hybrid", 0.4, roc=0.7)])
    assert [(r["testing"], r["fine_tuning"]) for r in rows] == [
        ("In-distribution", "No Fine-Tuning"), ("In-distribution", "Synthetic"), ("In-distribution", "Real"),
        ("In-distribution", "Hybrid"), ("Ratio", "100% Synthetic"), ("Ratio", "80% Syn + 20% Real"),
        ("Ratio", "60% Syn + 40% Real"), ("Ratio", "40% Syn + 60% Real"), ("Ratio", "20% Syn + 80% Real"),
        ("Ratio", "100% Real"), ("Generalization", "No Fine-Tuning"), ("Generalization", "Synthetic"),
        ("Generalization", "Real"), ("Generalization", "Hybrid")]
    assert rows[2]["run_id"] == "new" and rows[2]["cells"]["roc_auc"]["text"] == "0.650 ± 0.010"
    assert rows[7]["run_id"] == "r40" and [r["run_id"] for r in rows].count(None) == 12
    # published values (Table 3 of the paper), F1 not reported there
    assert rows[0]["paper"]["recall"]["text"] == "0.937 ± 0.090"
    assert rows[9]["paper"]["roc_auc"] == {"mean": 0.702, "sd": 0.009, "text": "0.702 ± 0.009"}
    assert rows[13]["paper"]["accuracy"]["mean"] == 0.658 and rows[13]["paper"]["f1"] is None
    assert len(T3.paper_values()) == 14
    csv = T3.table3_csv_rows(rows)
    assert csv[9]["roc_auc_paper_mean"] == 0.702 and csv[9]["roc_auc_mean"] is None


def test_synthetic_counts_in_words():
    assert synthetic_message({"total": 5, "usable": 0, "invalid": 5, "rejected": 0, "unlabelled": 0,
                              "no_record": 0}) == ("5 synthetic trials in the store; 0 can be used for training. "
                                                   "Not usable: 5 failed validation (status invalid).")
    one = synthetic_message({"total": 1, "usable": 1, "invalid": 0, "rejected": 0, "unlabelled": 0, "no_record": 0})
    assert one == "1 synthetic trial in the store; 1 can be used for training."
    assert "no synthetic trials" in synthetic_message({"total": 0, "usable": 0, "invalid": 0, "rejected": 0,
                                                       "unlabelled": 0, "no_record": 0})
