"""A tiny real Hugging Face Trainer run (bundled all-MiniLM-L6-v2, a few dozen trials, 1 epoch, short
max length) through the same code path as the CLI (experiments.run_cell -> finetune.fit_predict)."""
from __future__ import annotations

import pytest

from core.finetune import protocol as X
from core.finetune import train as finetune


@pytest.fixture(scope="module")
def tiny(mirror_db) -> X.Dataset:
    ds = X.load_dataset(mirror_db)
    pos = [e for e in ds.set_a if e.label == 1][:25]
    neg = [e for e in ds.set_a if e.label == 0][:25]
    ds.set_a = pos + neg  # 50 trials -> 30 train / 10 validation / 10 test
    return ds


def test_trainer_run_minilm(tiny, monkeypatch):
    """Also checks the paper's settings: lr 1e-5, batch 8, weight decay 0.01, best checkpoint by validation
    loss; no CUDA here -> fp32 and random sampling (bf16/fp16 and length grouping are CUDA-only)."""
    import transformers

    captured: dict = {}
    real_init = transformers.TrainingArguments.__init__

    def spy(self, *a, **kw):
        captured.update(kw)
        real_init(self, *a, **kw)

    monkeypatch.setattr(transformers.TrainingArguments, "__init__", spy)
    seen: list[dict] = []
    run, per_seed = X.run_cell(tiny, "in-distribution", "real", "minilm", [40], epochs=1, max_length=48,
                               progress=seen.append)
    assert run["model_used"] == "all-MiniLM-L6-v2 (bundled)" and run["device"] == "cpu"
    assert (run["n_train"], run["n_val"], run["n_test"]) == (30, 10, 10)
    assert run["samples_per_s"] and run["samples_per_s"] > 0
    steps = [p["step"] for p in seen if p.get("stage") == "training"]
    assert steps and max(steps) == 4 and seen[-1]["max_steps"] == 4  # ceil(30 / batch 8) steps in 1 epoch
    assert any(p.get("eval_loss") is not None for p in seen)  # validation loss drives checkpoint choice
    m = per_seed[0]["metrics"]
    assert set(m) == set(X.METRICS) and all(0 <= m[k] <= 1 for k in X.METRICS)
    fpr, tpr = per_seed[0]["curves"]["roc"]
    assert fpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert captured["learning_rate"] == 1e-5 and captured["per_device_train_batch_size"] == 8
    assert captured["weight_decay"] == 0.01 and captured["load_best_model_at_end"] is True
    assert captured["metric_for_best_model"] == "eval_loss" and captured["greater_is_better"] is False
    assert captured["bf16"] is False and captured["fp16"] is False
    assert captured["train_sampling_strategy"] == "random" and captured["num_train_epochs"] == 1


def test_no_fine_tuning_is_base_model_with_fresh_head(tiny):
    run, per_seed = X.run_cell(tiny, "in-distribution", "none", "minilm", [40], epochs=1, max_length=48)
    assert run["n_train"] == 0 and run["samples_per_s"] is None
    assert "fresh, untrained classification head" in run["model_note"]
    assert 0 <= per_seed[0]["metrics"]["roc_auc"] <= 1


def test_biobert_falls_back_clearly_when_not_local(monkeypatch):
    monkeypatch.setattr(finetune, "_local_hf", lambda model_id: None)
    spec = finetune.resolve_model("auto")
    assert spec.kind == "hf" and spec.name == "all-MiniLM-L6-v2 (bundled)"
    assert finetune.BIOBERT in spec.note and "not available locally" in spec.note
    assert finetune.resolve_model("tfidf").kind == "tfidf"
    assert finetune.resolve_model(finetune.minilm_path()).path == finetune.minilm_path()
