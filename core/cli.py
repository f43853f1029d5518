"""`python -m core <command>`: every command's parser, in one place.

Each command is a parser (below) and one function that runs it ("module:function", imported only
when that command runs, so `python -m core --help` and light commands stay fast: no torch at
start-up). The commands and flags are a contract named in the README and the issues: keep them.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable

DB_HELP = "the store (default: CTGEN_DB or data/ctgen.duckdb)"


def _db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help=DB_HELP)


def _job_dir(p: argparse.ArgumentParser) -> None:
    # Set by the job runner (core.jobs) when the command runs as a background job.
    p.add_argument("--job-dir", default=None, help=argparse.SUPPRESS)


def _ingest(p: argparse.ArgumentParser) -> None:
    _db(p)
    p.add_argument("--xml", action="append", default=[], metavar="PATH",
                   help="ClinicalTrials.gov legacy XML: AllPublicXML-style zip, directory or single file")
    p.add_argument("--ctgov-json", action="append", default=[], metavar="PATH",
                   help="ClinicalTrials.gov API v2 JSON: study file, {studies: [...]} page, directory or ctg-studies.json.zip")
    p.add_argument("--top", action="append", default=[], metavar="PATH", help="TOP benchmark CSV (file or directory)")
    p.add_argument("--outcomes", metavar="CSV", help="IQVIA-style outcomes CSV (studyid,trialOutcome)")
    p.add_argument("--outcome-map", metavar="TXT", help="outcome2label.txt (default: the one next to --outcomes, else the map data/sources.toml names)")
    p.add_argument("--drugbank", metavar="CSV", help="DrugBank open-data vocabulary CSV")


def _sample_data(p: argparse.ArgumentParser) -> None:
    _db(p)
    _job_dir(p)


def _fetch_ctgov(p: argparse.ArgumentParser) -> None:
    from core.ingest.ctgov_api import DEFAULT_RATE
    from core.ingest.fetch_ctgov import DEFAULT_PAGE_SIZE

    _db(p)
    p.add_argument("--missing", action="store_true", help="every trial in the store without a full record")
    p.add_argument("--labelled", action="store_true", help="only labelled trials (without a full record)")
    p.add_argument("--ids", metavar="FILE", help="NCT ids to fetch, one per line")
    p.add_argument("--base-url", metavar="URL",
                   help="API v2 base URL (default: CTGEN_CTGOV_API or https://clinicaltrials.gov/api/v2)")
    p.add_argument("--page-size", type=int, default=DEFAULT_PAGE_SIZE, metavar="N",
                   help=f"ids per request (default {DEFAULT_PAGE_SIZE})")
    p.add_argument("--rate", type=float, default=DEFAULT_RATE, metavar="R",
                   help=f"at most R requests per second (default {DEFAULT_RATE})")
    _job_dir(p)


def _stats(p: argparse.ArgumentParser) -> None:
    _db(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--migrate", action="store_true", help="open for writing, upgrading an older store first")


def _generate(p: argparse.ArgumentParser) -> None:
    from core.pipeline.batch import DEFAULT_MAX_TOKENS
    from core.pipeline.retrieval import MIN_EACH, RULES

    _db(p)
    p.add_argument("--n", type=int, required=True, help="how many synthetic trials the run should have")
    p.add_argument("--intervention", help="DrugBank name, synonym or id (default: drawn per item)")
    p.add_argument("--label", type=int, choices=[0, 1], help="1 success, 0 failure (default: drawn per item)")
    p.add_argument("--backend", choices=["local", "openai"], default="local")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint (default: OpenAI)")
    p.add_argument("--api-key", help="API key (default: OPENAI_API_KEY or .streamlit/secrets.toml); never stored")
    p.add_argument("--model", help="model name (openai) or GGUF path (local)")
    p.add_argument("--concurrency", type=int, default=1, help="requests in flight (default 1)")
    p.add_argument("--seed", type=int, help="run seed (items get seeds derived from it)")
    p.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS, help="per completion")
    p.add_argument("--run-id", help="name of the run; the same id resumes it")
    p.add_argument("--rule", choices=list(RULES), default="drugbank", help="retrieval rule")
    p.add_argument("--min-each", type=int, default=MIN_EACH,
                   help="successful and failed trials an intervention needs (default 3)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--example-budget", type=int, help="cap on the examples' tokens (default: what fits)")
    p.add_argument("--prompts", help="TOML or JSON file of prompt overrides {stage: {part: text}}")
    p.add_argument("--n-ctx", type=int, help="context window override")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.add_argument("--batch-api", action="store_true",
                   help="openai backend: send each stage as one OpenAI Batch API job (half price; resumable by --run-id)")
    p.add_argument("--poll-s", type=float, default=30.0, help="with --batch-api: seconds between status polls")
    p.add_argument("--output", choices=["schema", "free"], default="schema",
                   help="schema: structured replies following the trial schema (default); free: the paper's "
                        "free-form reply, parsed afterwards")
    p.add_argument("--valid-only", action="store_true",
                   help="draw new items until N trials are not invalid (at most 3N items)")
    _job_dir(p)


def _import_synthetic(p: argparse.ArgumentParser) -> None:
    _db(p)
    p.add_argument("--reports", required=True, help="directory of synthetic_clinical_report_{i}.txt files")
    p.add_argument("--labels", required=True, help="label file: line i (from 0) is report i's label (1/0)")
    p.add_argument("--interventions", help="intervention list: line i is report i's intervention")
    p.add_argument("--source", help="name of the set (default: the reports directory's name)")


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: give integers separated by commas, e.g. 40,41,42")
    if not seeds:
        raise argparse.ArgumentTypeError("--seeds: give at least one seed")
    return seeds


def _finetune_common(p: argparse.ArgumentParser) -> None:
    from core.finetune.protocol import DEFAULT_SEEDS

    _db(p)
    p.add_argument("--model", default="auto",
                   help="tfidf | auto (BioBERT if available locally, else the bundled all-MiniLM-L6-v2) | "
                        "minilm | a local model directory | a Hugging Face id in the local cache")
    p.add_argument("--seeds", type=_seeds, default=list(DEFAULT_SEEDS), help="comma-separated (default 40,41,42)")
    p.add_argument("--epochs", type=int, default=7, help="training epochs (encoders; default 7)")
    p.add_argument("--max-length", type=int, default=512, help="max tokens per trial (encoders; default 512)")
    p.add_argument("--synthetic-source", default=None, help="use only synthetic trials of this source")
    p.add_argument("--scrub-mode", choices=("strict", "paper"), default="strict",
                   help="strict (default): remove everything that leaks the outcome; paper: the paper's removals")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    _job_dir(p)


def _finetune(p: argparse.ArgumentParser) -> None:
    from core.finetune.protocol import EXPERIMENTS, TRAIN_SETS

    p.add_argument("--experiment", required=True, choices=EXPERIMENTS)
    p.add_argument("--train", choices=TRAIN_SETS, default=None,
                   help="none | real | synthetic | hybrid (ratio test: implied by --synthetic-ratio)")
    p.add_argument("--synthetic-ratio", type=float, default=None,
                   help="ratio test: share of synthetic trials in the training set, 0..1 (or 0..100 %%)")
    p.add_argument("--ratio-size", type=int, default=None, help="ratio test: training set size")
    _finetune_common(p)
    p.add_argument("--run-id", default=None, help=argparse.SUPPRESS)  # the job runner's id for the run


def _experiment(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=["table3"], help="the grid to run (table3: the paper's Table 3)")
    p.add_argument("--ratio-size", type=int, default=None,
                   help="training size of the ratio test (default: the synthetic count, capped by A train)")
    p.add_argument("--executor", choices=("serial", "ray"), default="serial",
                   help="serial (default): cells one after another here; ray: each cell a Ray task")
    p.add_argument("--address", default=None,
                   help="with --executor ray: a cluster (ray://host:10001); default: start a local Ray")
    _finetune_common(p)


def _analyze(p: argparse.ArgumentParser) -> None:
    from core.analysis.quality import PROJECTIONS, REAL_SCOPES, SYNTHETIC_RULES

    _db(p)
    p.add_argument("--synthetic-source", default=None,
                   help="synthetic set to analyse (a 'run:<id>' or an imported set's name; default: all together)")
    p.add_argument("--pairs", type=int, default=10_000, help="sampled pairs per histogram (default 10000)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--encoder", choices=["minilm", "minilm-onnx", "minilm-int8", "biobert"], default="minilm",
                   help="minilm (bundled, default), minilm-onnx (same vectors, ONNX Runtime), minilm-int8 "
                        "(LOSSY, faster), or biobert ([CLS]; only where available locally)")
    p.add_argument("--real", choices=REAL_SCOPES, default="interventions",
                   help="real trials compared: those of the set's interventions (paper, default) or all labelled")
    p.add_argument("--max-real", type=int, default=5_000, help="cap on real trials (seeded sample; 0 = no cap)")
    p.add_argument("--max-synthetic", type=int, default=5_000, help="cap on synthetic trials (0 = no cap)")
    p.add_argument("--copy-threshold", type=float, default=0.05,
                   help="cosine distance at or below which a synthetic trial counts as a near copy (default 0.05)")
    p.add_argument("--synthetic-rule", choices=SYNTHETIC_RULES, default="usable",
                   help="synthetic trials analysed: usable ones as fine-tuning uses them (default: not invalid, "
                        "not rejected) or all")
    p.add_argument("--projection", action="append", choices=PROJECTIONS, default=[],
                   help="also compute and store a projection (repeatable): tsne, umap")
    p.add_argument("--recompute", action="store_true", help="ignore a stored result with the same parameters")
    p.add_argument("--each-set", action="store_true",
                   help="analyse every synthetic set separately, one after another (for side-by-side metrics)")
    _job_dir(p)


# command -> (parser, "module:function", one-line help)
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], str, str]] = {
    "ingest": (_ingest, "core.ingest.cli:run", "import real trials, labels and DrugBank into the store"),
    "sample-data": (_sample_data, "core.ingest.cli:run", "load the whole data mirror (or upstream) into the store"),
    "fetch-ctgov": (_fetch_ctgov, "core.ingest.cli:run",
                    "fetch full study records from the ClinicalTrials.gov API v2"),
    "stats": (_stats, "core.stats:run", "print what is in the store"),
    "generate": (_generate, "core.pipeline.batch:run",
                 "generate synthetic trials (retrieval -> reasoning -> generation)"),
    "import-synthetic": (_import_synthetic, "core.ingest.synthetic_reports:run",
                         "import a published synthetic trial set"),
    "finetune": (_finetune, "core.finetune.cli:run", "fine-tune an outcome classifier (one experiment cell)"),
    "experiment": (_experiment, "core.finetune.cli:run", "run a whole experiment grid (e.g. table3)"),
    "analyze": (_analyze, "core.analysis.cli:run", "embeddings, similarity and quality metrics"),
}


def _usage() -> str:
    lines = ["usage: python -m core <command> [options]", "", "commands:"]
    for name, (_, _, text) in COMMANDS.items():
        lines.append(f"  {name:<18} {text}")
    lines.append("")
    lines.append("`python -m core <command> --help` shows a command's options.")
    return "\n".join(lines)


def parser_for(command: str) -> argparse.ArgumentParser:
    build, _, text = COMMANDS[command]
    parser = argparse.ArgumentParser(prog=f"python -m core {command}", description=text)
    build(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command = argv[0]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    args = parser_for(command).parse_args(argv[1:])
    args.command = command
    module, function = COMMANDS[command][1].split(":")
    return int(getattr(importlib.import_module(module), function)(args) or 0)
