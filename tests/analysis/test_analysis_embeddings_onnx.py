"""The ONNX Runtime MiniLM gives today's vectors (the sentence-transformers/torch path) on a fixed
set of real trial texts; the int8 option is lossy and keeps its own cache key. The ONNX files are
exported from the installed model package into a fresh cache folder (no download)."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def fixed_texts(mirror) -> list[str]:
    """The first 10 eligibility criteria of one TOP file (lengths from ~40 to >256 tokens) + 2 short texts."""
    csv.field_size_limit(1 << 24)
    with open(Path(mirror) / "top" / "hint" / "phase_I_test.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("criteria")][:10]
    return [r["criteria"] for r in rows] + ["Metformin in type 2 diabetes.", "Phase 3; placebo-controlled; 12 weeks"]


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    from core.analysis import embeddings as E

    old = os.environ.get("CTGEN_CACHE")
    cache = tmp_path_factory.mktemp("cache")
    os.environ["CTGEN_CACHE"] = str(cache)
    try:
        for name in ("minilm-onnx", "minilm-int8"):
            E._LOADED.pop(name, None)  # export anew into this empty cache
        encs = {name: E.get_encoder(name) for name in ("minilm", "minilm-onnx", "minilm-int8")}
    finally:
        if old is None:
            os.environ.pop("CTGEN_CACHE", None)
        else:
            os.environ["CTGEN_CACHE"] = old
    assert sorted(p.name.split("-")[-1] for p in (cache / "onnx").glob("*.onnx")) == ["fused.onnx", "int8.onnx"]
    return encs


def test_onnx_vectors_agree_with_todays_vectors(fixed_texts, encoders):
    from core.analysis.embeddings import embed_texts

    ref = embed_texts(fixed_texts, encoders["minilm"])
    onnx = embed_texts(fixed_texts, encoders["minilm-onnx"])
    assert ref.shape == onnx.shape == (len(fixed_texts), 384)
    cos = (ref * onnx).sum(axis=1)
    assert cos.mean() >= 0.999 and cos.min() >= 0.999, cos
    assert np.allclose(ref, onnx, atol=1e-4)
    # the same vectors: the same cache key, so cached torch vectors are reused and vice versa
    assert encoders["minilm-onnx"].key == encoders["minilm"].key
    lengths = [len(t) for t in encoders["minilm-onnx"].tokenize(fixed_texts)]
    assert max(lengths) == 256 and min(lengths) < 32  # truncated long ones and short ones both covered


def test_int8_is_named_lossy_and_cached_apart(fixed_texts, encoders):
    from core.analysis.embeddings import embed_texts

    ref = embed_texts(fixed_texts, encoders["minilm"])
    q = embed_texts(fixed_texts, encoders["minilm-int8"])
    cos = (ref * q).sum(axis=1)
    assert 0.98 <= cos.mean() < 0.9999  # close, but not the same vectors
    assert "lossy" in encoders["minilm-int8"].name.lower()
    assert encoders["minilm-int8"].key != encoders["minilm"].key


def test_store_cache_is_shared_between_torch_and_onnx(fixed_texts, encoders, tmp_path):
    from core.analysis.embeddings import embed_texts

    db = tmp_path / "cache.duckdb"
    first = embed_texts(fixed_texts, encoders["minilm-onnx"], db=db)
    torch_enc = encoders["minilm"]
    before = torch_enc.texts_encoded
    again = embed_texts(fixed_texts, torch_enc, db=db)
    assert torch_enc.texts_encoded == before  # all read from the cache
    assert np.allclose(first, again)
