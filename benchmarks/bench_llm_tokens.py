"""Embedded backend tokens/s vs raw llama.cpp on the same GGUF and prompt, in the same process.

    python benchmarks/bench_llm_tokens.py [--runs 9] [--max-tokens 96]

Baseline: llama_cpp.Llama built with the same settings as the backend (core.llm.local_llama_kwargs,
same n_ctx), create_completion called directly. Ours: core.llm's LocalLLM.complete() (retry loop,
lock, deadline stopping criterion, on_call logging hook) and acomplete() (worker thread).
Each round runs raw, ours and ours-async back to back (order rotated) so that load from other
processes hits all alike; tokens/s is completion tokens over wall time timed around the call.
Printed: totals, and the median of per-round ratios (robust on a shared machine). Goal: >= 0.9x.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPT = (
    "Successful clinical trial example:\n<clinical_study>\n<brief_title>A Randomized, Double-Blind Study of "
    "Imatinib Mesylate in Newly Diagnosed Chronic Myeloid Leukemia</brief_title>\n<phase>Phase 3</phase>\n"
    "<condition>Chronic Myeloid Leukemia</condition>\n<intervention>\n<intervention_type>Drug</intervention_type>\n"
    "<intervention_name>Imatinib</intervention_name>\n</intervention>\n<eligibility><criteria>Inclusion Criteria: "
    "Ph+ CML in chronic phase diagnosed within 6 months; ECOG 0-2.</criteria></eligibility>\n</clinical_study>\n\n"
    "Successful clinical trial example:\n<clinical_study>\n<brief_title>"
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--n-ctx", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import llama_cpp

    from core.llm import LLMRequest, get_llm, local_llama_kwargs, local_model_path

    logged: list[dict] = []
    ours = get_llm("local", n_ctx=args.n_ctx, on_call=logged.append)
    raw = llama_cpp.Llama(model_path=str(local_model_path()), n_ctx=ours.context_window, verbose=False,
                          **local_llama_kwargs())
    # Never stop early on EOS, so both produce max_tokens every run (same seed: the same tokens).
    params = {"max_tokens": args.max_tokens, "temperature": 0.8, "seed": 1234}
    req = LLMRequest(document=PROMPT, **params)

    def run_raw() -> tuple[int, float]:
        t0 = time.perf_counter()
        out = raw.create_completion(prompt=PROMPT, stop=[], **params)
        return out["usage"]["completion_tokens"], time.perf_counter() - t0

    def run_ours() -> tuple[int, float]:
        t0 = time.perf_counter()
        out = ours.complete(req)
        return out.completion_tokens, time.perf_counter() - t0

    def run_ours_async() -> tuple[int, float]:
        t0 = time.perf_counter()
        out = asyncio.run(ours.acomplete(req))
        return out.completion_tokens, time.perf_counter() - t0

    for fn in (run_raw, run_ours):  # warm-up: load pages, fill the prompt cache
        fn()
    totals = {"raw": [0, 0.0], "ours": [0, 0.0], "ours_async": [0, 0.0]}
    pair_ratios: dict[str, list[float]] = {"ours": [], "ours_async": []}
    fns = [("raw", run_raw), ("ours", run_ours), ("ours_async", run_ours_async)]
    for i in range(args.runs):
        # Rotate the order every round so neither side always runs first after the other.
        order = fns[i % 3:] + fns[:i % 3]
        rates = {}
        for name, fn in order:
            n, dt = fn()
            totals[name][0] += n
            totals[name][1] += dt
            rates[name] = n / dt
        for name in pair_ratios:
            pair_ratios[name].append(rates[name] / rates["raw"])
    rate = {k: n / dt for k, (n, dt) in totals.items()}
    med = {k: statistics.median(v) for k, v in pair_ratios.items()}
    result = {
        "model": ours.model, "n_ctx": ours.context_window, "threads": local_llama_kwargs()["n_threads"],
        "runs": args.runs, "max_tokens": args.max_tokens,
        "raw_tokens_per_s": round(rate["raw"], 2), "ours_tokens_per_s": round(rate["ours"], 2),
        "ours_async_tokens_per_s": round(rate["ours_async"], 2),
        "ratio": round(rate["ours"] / rate["raw"], 3), "ratio_async": round(rate["ours_async"] / rate["raw"], 3),
        "median_round_ratio": round(med["ours"], 3), "median_round_ratio_async": round(med["ours_async"], 3),
        "goal": 0.9, "calls_logged": len(logged),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"model {result['model']} (n_ctx {result['n_ctx']}, {result['threads']} threads), "
              f"{args.runs} runs x {args.max_tokens} tokens, same prompt and seed")
        print(f"raw llama.cpp        {result['raw_tokens_per_s']:8.2f} tokens/s")
        print(f"core.llm complete    {result['ours_tokens_per_s']:8.2f} tokens/s   ratio {result['ratio']:.3f}x"
              f"   (median of per-round ratios {result['median_round_ratio']:.3f}x)")
        print(f"core.llm acomplete   {result['ours_async_tokens_per_s']:8.2f} tokens/s   ratio {result['ratio_async']:.3f}x"
              f"   (median of per-round ratios {result['median_round_ratio_async']:.3f}x)")
        ok = min(result["median_round_ratio"], result["median_round_ratio_async"]) >= result["goal"]
        print(f"goal >= {result['goal']}x (median round ratio): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
