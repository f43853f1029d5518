"""The embedded model (Gemma 3 270M, llama.cpp) making synthetic trials: usable-trial rate and seconds per
usable trial, schema mode (the trial schema as a grammar) against free mode (the paper's free reply, parsed
afterwards), in the same process, on the same items (same run seed, so the same drugs, labels and examples),
on copies of the same store. Also: the KV cache the two stages and the retries share.

    python benchmarks/bench_local_generation.py [--n 3] [--seed 7] [--db STORE] [--timeout 300]

A trial is usable when it is stored and its validation status is not 'invalid'. Seconds per usable trial
is the run's wall time divided by its usable trials. The model is loaded once before timing (both modes
use the same llama.cpp instance). Without --db the data mirror is loaded into a temporary store first
(`sample-data`, not timed). On a shared machine the absolute times move with the load: compare the two
modes of one run (the ratio), not runs.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.pipeline.batch import run_batch  # noqa: E402
from core.store import connect, llmlog  # noqa: E402
from core.store import synthetic as syn  # noqa: E402


def one(db: Path, n: int, seed: int, output: str, timeout: float) -> dict:
    run_id = f"bench-{output}"
    t0 = time.perf_counter()
    result = run_batch(db, n, backend="local", seed=seed, run_id=run_id, show_progress=False, output=output,
                       timeout_s=timeout)
    wall = time.perf_counter() - t0
    with connect(db, read_only=True) as con:
        trials = syn.list_synthetic(con, run_id=run_id)
        calls = llmlog.recent_calls(con, run_id=run_id, limit=10_000)
        failures = syn.list_failures(con, run_id)
    usable = [t for t in trials if t["validation_status"] != "invalid"]
    statuses = {s: sum(t["validation_status"] == s for t in trials) for s in ("ok", "warning", "invalid")}
    leaks = sum(not t["validation"].get("status_fields", {}).get("ok", True) for t in trials)
    named = sum(bool(t["intervention_match"]) for t in trials)
    return {"output": output, "items": n, "stored": len(trials), "failed": result["failed"], **statuses,
            "usable": len(usable), "named_intended_drug": named, "status_field_leaks": leaks, "wall_s": round(wall, 1),
            "s_per_usable": round(wall / len(usable), 1) if usable else None,
            "completion_tokens": sum(c["completion_tokens"] or 0 for c in calls),
            "timed_out_calls": sum(c["finish_reason"] == "time_limit" for c in calls),
            "failures": {s: sum(f["stage"] == s for f in failures) for s in sorted({f["stage"] for f in failures})},
            "failure_reasons": [f["reason"][:160] for f in failures[:3]]}


def kv_cache(llm, document: str, suffix: str) -> dict:
    """What llama.cpp's prefix cache saves: the same document evaluated after a different one (cold) and right
    after itself with a new ending (warm, as a retry or the second stage sharing a prefix)."""
    from core.llm import LLMRequest

    def timed(doc: str) -> float:
        t0 = time.perf_counter()
        llm.complete(LLMRequest(document=doc, max_tokens=1, temperature=0.0))
        return time.perf_counter() - t0

    timed("An unrelated document to clear the cache.")
    cold = timed(document + suffix)
    warm = timed(document + suffix + " ")
    return {"prompt_tokens": llm.count_tokens(document), "cold_s": round(cold, 2), "warm_s": round(warm, 2),
            "ratio": round(cold / warm, 1) if warm else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3, help="items per mode (default 3)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--db", help="a loaded store (default: the mirror, loaded into a temporary store)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per request (default 300)")
    args = ap.parse_args()
    os.environ.setdefault("CTGEN_RUNS_DIR", tempfile.mkdtemp(prefix="bench-runs-"))
    work = Path(tempfile.mkdtemp(prefix="bench-local-"))
    base = work / "base.duckdb"
    if args.db:
        shutil.copy(args.db, base)
        with connect(base):   # migrate a copy of an older store
            pass
    else:
        from core.ingest import sample_data

        sample_data(base)
    from core.llm import get_llm

    llm = get_llm("local")          # load the model once, before timing; both runs reuse it
    from core.pipeline.batch import example_budget
    from core.pipeline.generation import build_prompt
    from core.pipeline.retrieval import RetrievalPool
    from core.prompts import load_prompts

    with connect(base, read_only=True) as con:
        pool = RetrievalPool.load(con)
        pool.prefetch(con, pool.select(seed=1)[2])
    prompts = load_prompts()
    r = pool.retrieve(seed=1, count_tokens=llm.count_tokens, budget=example_budget(llm, prompts, 2048, 3),
                      compact=True)
    from core.pipeline.reasoning import build_prompt as reasoning_prompt

    _, doc, _ = build_prompt(r, ["A reason."] * 5, prompts, "schema")
    _, rdoc = reasoning_prompt(r, prompts)
    a, b = (llm._llama.tokenize(d.encode(), add_bos=True, special=True) for d in (rdoc, doc))
    shared = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    cache = {**kv_cache(llm, doc, ""), "stages_share_tokens": shared, "reasoning_tokens": len(a),
             "generation_tokens": len(b)}

    results = []
    for output in ("schema", "free"):
        db = work / f"{output}.duckdb"
        shutil.copy(base, db)
        results.append(one(db, args.n, args.seed, output, args.timeout))
    schema, free = results
    for res in results:
        print(json.dumps(res))
    print(json.dumps({"kv_cache_prefix": cache}))
    usable_rate = {m["output"]: round(m["usable"] / m["items"], 2) for m in results}
    ratio = (round(free["s_per_usable"] / schema["s_per_usable"], 2)
             if schema["s_per_usable"] and free["s_per_usable"] else None)
    print(f"usable-trial rate: schema {usable_rate['schema']:.0%}, free {usable_rate['free']:.0%}")
    print(f"seconds per usable trial: schema {schema['s_per_usable']}, free {free['s_per_usable']}"
          + (f" (free / schema = {ratio}x)" if ratio else ""))
    print(f"KV cache: a {cache['prompt_tokens']}-token prompt {cache['cold_s']} s cold, {cache['warm_s']} s when its "
          f"prefix is cached ({cache['ratio']}x, what a retry of a stage gets); the reasoning and generation "
          f"prompts share only their first {cache['stages_share_tokens']} of {cache['reasoning_tokens']} / "
          f"{cache['generation_tokens']} tokens")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
