"""Fine-tuning speed: training throughput (samples/s) of the Trainer path as configured here (each batch
padded to its longest trial, batches grouped by length) against the paper-style baseline (every
trial padded to max_length, random order), same model, same trials, same process, fp32 on CPU.
Also times the whole Table 3 protocol with the TF-IDF model.

    python benchmarks/bench_finetune.py [--db STORE] [--n 160] [--max-length 512] [--model minilm]

Without --db it loads the data mirror into a temporary store first (`sample-data`, not timed).
On CUDA the same code additionally uses bf16/fp16; this script reports the device it ran on.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.finetune import protocol as X
from core.finetune import train as finetune


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db")
    ap.add_argument("--n", type=int, default=160, help="training trials")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--model", default="minilm")
    args = ap.parse_args()
    db = args.db
    if not db:
        from core.ingest import sample_data

        db = str(Path(tempfile.mkdtemp(prefix="ctgen-bench-")) / "store.duckdb")
        print(f"loading the mirror into {db} (not timed)…", flush=True)
        sample_data(db)

    ds = X.load_dataset(db)
    t0 = time.perf_counter()
    n_cells = 0
    for experiment, train, ratio in X.table3_grid():
        try:
            X.run_cell(ds, experiment, train, "tfidf", X.DEFAULT_SEEDS, ratio=ratio)
            n_cells += 1
        except X.ExperimentError:
            pass  # cells that need synthetic trials, when the store has none
    print(f"TF-IDF protocol: {n_cells} cells x {len(X.DEFAULT_SEEDS)} seeds in {time.perf_counter() - t0:.1f} s")

    split = X.make_split(ds, "in-distribution", "real", 40)
    split.train, split.val, split.test = split.train[:args.n], split.val[:32], split.test[:32]
    spec = finetune.resolve_model(args.model)
    results = {}
    for name, opts in (("baseline (pad to max_length, random order)", {"pad_to_max": True, "group_by_length": False}),
                       ("this project (dynamic padding, length-grouped)", {"pad_to_max": False, "group_by_length": True})):
        out = finetune.fit_predict(spec, split, 40, train_mode="real", epochs=1, max_length=args.max_length, **opts)
        results[name] = out.samples_per_s
        print(f"{name}: {out.samples_per_s:.1f} samples/s ({out.train_seconds:.1f} s, {out.device}, {spec.name})",
              flush=True)
    base, ours = results.values()
    print(f"ratio: {ours / base:.2f}x training throughput vs baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
