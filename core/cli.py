"""Command dispatch.

Each command lives in its own module, imported only when that command runs, so that
`python -m core --help` and light commands stay fast (no torch import at start-up).
A command module provides `add_arguments(parser, command)` and `run(args) -> int`.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module, one-line help). The contract named in the issues: keep names stable.
COMMANDS: dict[str, tuple[str, str]] = {
    "ingest": ("core.ingest.cli", "import real trials, labels and DrugBank into the store"),
    "sample-data": ("core.ingest.cli", "load the whole data mirror (or upstream) into the store"),
    "fetch-ctgov": ("core.ingest.cli", "fetch full study records from the ClinicalTrials.gov API v2"),
    "stats": ("core.stats", "print what is in the store"),
    "generate": ("core.batch", "generate synthetic trials (retrieval -> reasoning -> generation)"),
    "import-synthetic": ("core.synthetic_import", "import a published synthetic trial set"),
    "finetune": ("core.finetune_cli", "fine-tune an outcome classifier (one experiment cell)"),
    "experiment": ("core.finetune_cli", "run a whole experiment grid (e.g. table3)"),
    "analyze": ("core.analysis_cli", "embeddings, similarity and quality metrics"),
}


def _usage() -> str:
    lines = ["usage: python -m core <command> [options]", "", "commands:"]
    for name, (_, text) in COMMANDS.items():
        lines.append(f"  {name:<18} {text}")
    lines.append("")
    lines.append("`python -m core <command> --help` shows a command's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command = argv[0]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    parser = argparse.ArgumentParser(prog=f"python -m core {command}", description=COMMANDS[command][1])
    module.add_arguments(parser, command)
    args = parser.parse_args(argv[1:])
    args.command = command
    return int(module.run(args) or 0)
