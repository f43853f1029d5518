"""Batch generation speed: the same batch against tests/servers/openai_server.py (a real OpenAI-compatible HTTP
server on localhost, in its own process, with a fixed per-request delay), run sequentially as the
paper's loop does (one request at a time) and with --concurrency 16, in the same process, on copies
of the same store.

    python benchmarks/bench_concurrency.py [--n 48] [--delay 1.0] [--concurrency 16] [--db STORE]

Prints both times, the ratio (goal >= 12x) and whether any item was lost (goal: none).
Without --db it loads the data mirror into a temporary store first (`sample-data`, not timed).
One-time process costs (loading the tokenizer's BPE ranks, importing the openai SDK) are paid before
timing, so that neither run is charged for them.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.pipeline.batch import run_batch  # noqa: E402
from core.store import connect, llmlog  # noqa: E402
from core.store import synthetic as syn  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(delay: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "servers" / "openai_server.py"), "--port", str(port),
                             "--delay", str(delay)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(base + "/models", timeout=1).close()
            return proc, base
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the test server did not start")


def one(db: Path, base_url: str, n: int, concurrency: int, run_id: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    result = run_batch(db, n, backend="openai", base_url=base_url, api_key="sk-bench", seed=1,
                       concurrency=concurrency, run_id=run_id, show_progress=False)
    elapsed = time.perf_counter() - t0
    with connect(db) as con:
        result["stored"] = len({t["id"] for t in syn.list_synthetic(con, run_id=run_id)})
        result["failures_stored"] = len(syn.list_failures(con, run_id))
        result["calls"] = len(llmlog.recent_calls(con, run_id=run_id, limit=100_000))
    return elapsed, result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=48, help="synthetic trials per batch")
    ap.add_argument("--delay", type=float, default=1.0, help="seconds the server takes per request")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--db", help="a loaded store to copy (default: load the mirror into a temp store)")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-concurrency-"))
    os.environ["CTGEN_RUNS_DIR"] = str(tmp / "runs")
    server = None
    try:
        base = tmp / "base.duckdb"
        if args.db:
            shutil.copy(args.db, base)
        else:
            from core.ingest import sample_data
            print("loading the mirror into a temporary store (not timed) ...", flush=True)
            sample_data(base)
        seq_db, con_db = tmp / "seq.duckdb", tmp / "con.duckdb"
        shutil.copy(base, seq_db)
        shutil.copy(base, con_db)

        import openai  # noqa: F401  (one-time import, not timed)
        from core.llm import get_llm
        get_llm("openai", base_url="http://127.0.0.1:9/v1", api_key="sk-bench").count_tokens("warm up")
        from core.llm.openai import ssl_context
        ssl_context()  # loaded once per process (CA bundle)

        server, base_url = start_server(args.delay)
        print(f"batch of {args.n} trials (2 requests each), server delay {args.delay}s per request", flush=True)
        rows = []
        for label, db, c, run_id in (("sequential (paper's loop)", seq_db, 1, "bench-seq"),
                                     (f"concurrency {args.concurrency}", con_db, args.concurrency, "bench-con")):
            t, r = one(db, base_url, args.n, c, run_id)
            rows.append((t, r))
            print(f"{label:<27} {t:8.2f} s  {r['stored']} stored, {r['failures_stored']} failures, "
                  f"{r['calls']} calls", flush=True)
        (t_seq, r_seq), (t_con, r_con) = rows
        ratio = t_seq / t_con
        lost = sum(args.n - r["stored"] - r["failures_stored"] for _, r in rows)
        print(f"ratio: {ratio:.1f}x (goal >= 12x); items lost: {lost} (goal 0)")
        return 0 if ratio >= 12 and lost == 0 else 1
    finally:
        if server:
            server.terminate()
            server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
