"""Benchmark: embed and project (t-SNE and UMAP) N real trials on this machine's CPU cores.

    python benchmarks/bench_embed_project.py [--db STORE] [--n 10000] [--subset 200] [--encoder minilm]
                                             [--compare 48] [--json]

Without --db, the data mirror is loaded into a temporary store first (not timed). Prints the
time of each stage and two same-process ratios against baselines:
  - batched encoder (length-sorted batches of 64) vs naive one-text-at-a-time, on a subset;
  - cached vs uncached embedding of all N texts (the store's (text hash, model) cache);
  - with --compare K: each MiniLM encoder (torch, ONNX Runtime fp32, int8 = lossy) on the same K texts,
    timed in turns, speed-up and cosine agreement against the torch vectors (today's vectors).
--json prints one JSON line last: embed_s (uncached, fresh cache), tsne_s, umap_s, total_s (their sum).
Goal (issue 5): embed + t-SNE + UMAP of 10,000 trials under 2 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", help="store with real trials (default: load the mirror into a temp store)")
    ap.add_argument("--n", type=int, default=10_000, help="trials to embed and project")
    ap.add_argument("--subset", type=int, default=200, help="texts for the batched vs one-by-one comparison")
    ap.add_argument("--skip-tsne", action="store_true")
    ap.add_argument("--cache", help="embeddings cache store to reuse (default: a fresh, empty one)")
    ap.add_argument("--encoder", default="minilm", help="minilm (default) | minilm-onnx | minilm-int8 (lossy)")
    ap.add_argument("--compare", type=int, default=0, help="compare the MiniLM encoders on this many texts")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    ap.add_argument("--rate-sample", type=int, default=0,
                    help="also time uncached embedding of this many texts (fresh cache) and extrapolate to N")
    args = ap.parse_args()

    import numpy as np
    import torch

    from core.analysis import quality as analysis

    from core.analysis import embeddings
    from core.serialize import classifier_text
    from core.store import embeddings as store
    from core.store import connect

    print(f"cores: {os.cpu_count()}  torch threads: {torch.get_num_threads()}")
    tmp = None
    db = Path(args.db) if args.db else None
    if db is None:
        from core.ingest import sample_data

        tmp = tempfile.TemporaryDirectory()
        db = Path(tmp.name) / "bench.duckdb"
        t = time.perf_counter()
        sample_data(db)
        print(f"(setup, not timed: mirror loaded in {time.perf_counter() - t:.1f} s)")
    # a private embeddings cache: start uncached whatever the store held
    work = Path(args.cache) if args.cache else Path(tempfile.mkdtemp()) / "cache.duckdb"

    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    with connect(db, read_only=True) as con:
        records = store.trial_records(con, args.n)
    texts = [classifier_text(r) for r in records]
    stages["load + serialize"] = time.perf_counter() - t0
    n = len(texts)
    print(f"trials: {n} (asked {args.n}); mean text length {np.mean([len(t) for t in texts]):.0f} chars")

    t = time.perf_counter()
    enc = embeddings.get_encoder(args.encoder)
    stages["load encoder"] = time.perf_counter() - t
    print(f"encoder: {enc.name} ({enc.key})")
    compare = _compare(embeddings, texts, args.compare) if args.compare else {}

    # baseline 1: naive one-by-one vs batched, same subset, same process
    sub = texts[: args.subset]
    t = time.perf_counter()
    for x in sub:
        enc.encode([x])
    naive = time.perf_counter() - t
    t = time.perf_counter()
    embeddings.embed_texts(sub, encoder=enc)  # batched, no store
    batched = time.perf_counter() - t
    print(f"subset of {len(sub)}: one-by-one {naive:.1f} s, batched {batched:.1f} s -> "
          f"batched is {naive / batched:.2f}x faster")

    if args.rate_sample:
        # every k-th text: the sample has the length mix of the whole set
        sample = texts[:: max(1, n // args.rate_sample)][: args.rate_sample]
        fresh = Path(tempfile.mkdtemp()) / "rate.duckdb"
        t = time.perf_counter()
        embeddings.embed_texts(sample, encoder=enc, db=fresh)
        dt = time.perf_counter() - t
        stages[f"embed {len(sample)} uncached (rate sample)"] = dt
        print(f"uncached rate: {len(sample) / dt:.1f} texts/s -> {n} texts would take {dt * n / len(sample):.0f} s")

    t = time.perf_counter()
    last = [0.0]

    def prog(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] > 15 or done == total:
            last[0] = now
            print(f"  embedded {done}/{total} ({now - t:.0f} s)", flush=True)

    emb = embeddings.embed_texts(texts, encoder=enc, db=work, progress=prog)
    stages["embed (uncached, batched, stored)" if not args.cache else "embed (missing from --cache only)"] = (
        time.perf_counter() - t)
    t = time.perf_counter()
    emb2 = embeddings.embed_texts(texts, encoder=enc, db=work)
    stages["embed again (cached)"] = time.perf_counter() - t
    assert np.allclose(emb, emb2, atol=1e-6)

    if not args.skip_tsne:
        t = time.perf_counter()
        xy = analysis.project(emb, "tsne", seed=0, perplexity=30, max_iter=1000)
        stages["t-SNE (perplexity 30, 1000 iterations)"] = time.perf_counter() - t
        assert xy.shape == (n, 2)
    t = time.perf_counter()
    xy = analysis.project(emb, "umap", seed=0)
    stages["UMAP"] = time.perf_counter() - t
    assert xy.shape == (n, 2)

    print("\nstage times:")
    for k, v in stages.items():
        print(f"  {k:<42} {v:8.1f} s")
    project_s = sum(v for k, v in stages.items() if k.startswith(("t-SNE", "UMAP")))
    fixed = stages["load + serialize"] + stages["load encoder"] + project_s
    print(f"\nend to end with cached embeddings: {fixed + stages['embed again (cached)']:8.1f} s")
    if "embed (uncached, batched, stored)" in stages:
        full = stages["embed (uncached, batched, stored)"]
        print(f"end to end, uncached embeddings:   {fixed + full:8.1f} s   (goal: under 120 s)")
        print(f"ratio uncached/cached embedding: {full / stages['embed again (cached)']:.0f}x")
    if args.rate_sample:
        est = dt * n / len(sample)
        print(f"end to end, uncached (extrapolated from the rate sample): {fixed + est:8.1f} s   (goal: under 120 s)")
        print(f"ratio uncached (extrapolated)/cached embedding: {est / stages['embed again (cached)']:.0f}x")
    print(f"ratio one-by-one/batched encoding (subset): {naive / batched:.2f}x")
    if args.json:
        embed_key = "embed (missing from --cache only)" if args.cache else "embed (uncached, batched, stored)"
        out = {"n": n, "encoder": args.encoder, "encoder_key": enc.key, "cores": os.cpu_count(),
               "embed_s": round(stages[embed_key], 2),
               "tsne_s": None if args.skip_tsne else round(stages["t-SNE (perplexity 30, 1000 iterations)"], 2),
               "umap_s": round(stages["UMAP"], 2), "load_encoder_s": round(stages["load encoder"], 2),
               "embed_cached_s": round(stages["embed again (cached)"], 3)}
        out["total_s"] = round(out["embed_s"] + (out["tsne_s"] or 0) + out["umap_s"], 2)
        if compare:
            out["compare"] = compare
        import json

        print(json.dumps(out))
    if tmp:
        tmp.cleanup()
    return 0


def _compare(embeddings, texts: list[str], k: int, rounds: int = 2) -> dict:
    """Each MiniLM encoder on the same k texts (every n/k-th: the length mix of the set), in turns so
    that a busy machine slows them alike; speed-up and cosine agreement vs the torch vectors."""
    import numpy as np

    sample = texts[:: max(1, len(texts) // k)][:k]
    names = ["minilm", "minilm-onnx", "minilm-int8"]
    encs = {name: embeddings.get_encoder(name) for name in names}
    for e in encs.values():  # warm-up: first-call allocations
        embeddings.embed_texts(sample[:4], encoder=e)
    times = {name: 0.0 for name in names}
    vecs = {}
    for _ in range(rounds):
        for name, e in encs.items():
            t = time.perf_counter()
            vecs[name] = embeddings.embed_texts(sample, encoder=e)
            times[name] += time.perf_counter() - t
    out = {}
    print(f"\nencoders on the same {len(sample)} texts ({rounds} rounds in turns):")
    for name in names:
        cos = (vecs[name] * vecs["minilm"]).sum(axis=1)
        out[name] = {"texts_per_s": round(rounds * len(sample) / times[name], 2),
                     "speedup_vs_minilm": round(times["minilm"] / times[name], 2),
                     "mean_cos": round(float(cos.mean()), 6), "min_cos": round(float(cos.min()), 6),
                     "lossy": name == "minilm-int8"}
        print(f"  {name:<12} {out[name]['texts_per_s']:6.1f} texts/s  {out[name]['speedup_vs_minilm']:.2f}x  "
              f"cosine vs torch: mean {out[name]['mean_cos']:.6f}, min {out[name]['min_cos']:.6f}"
              + ("  (LOSSY)" if out[name]["lossy"] else ""))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
