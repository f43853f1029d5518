"""Paths and settings: where the store lives, where the data comes from.

Resolution order for the store: explicit argument > CTGEN_DB > data/ctgen.duckdb.
Data mirror: CTGEN_DATA_MIRROR > ../shared/data (when it exists) > upstream URLs.
"""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
DEFAULT_DB = DATA_DIR / "ctgen.duckdb"
SOURCES_FILE = DATA_DIR / "sources.toml"
RUNS_DIR = DATA_DIR / "runs"  # background job state (fine-tuning, batches): logs, progress
PROMPTS_DIR = PROJECT_ROOT / "core" / "prompts"


def db_path(explicit: str | os.PathLike | None = None) -> Path:
    """The DuckDB file to use."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("CTGEN_DB")
    return Path(env) if env else DEFAULT_DB


def data_mirror() -> Path | None:
    """The local mirror of upstream data, or None when only upstream URLs are available."""
    env = os.environ.get("CTGEN_DATA_MIRROR")
    if env:
        return Path(env)
    default = PROJECT_ROOT.parent / "shared" / "data"
    return default if default.is_dir() else None


def label_preference() -> list[str]:
    """Which label source wins when sources disagree (default: IQVIA, the paper's labels)."""
    raw = os.environ.get("CTGEN_LABEL_PREFERENCE", "iqvia,top")
    return [s.strip() for s in raw.split(",") if s.strip()]


def runs_dir() -> Path:
    """Where background jobs keep their state: CTGEN_RUNS_DIR > data/runs."""
    env = os.environ.get("CTGEN_RUNS_DIR")
    return Path(env) if env else RUNS_DIR


CTGOV_API_DEFAULT = "https://clinicaltrials.gov/api/v2"


def ctgov_api_base(explicit: str | None = None) -> str:
    """The ClinicalTrials.gov API v2 base URL: explicit (--base-url) > CTGEN_CTGOV_API > the public API.
    Tests point it at a local stand-in."""
    return (explicit or os.environ.get("CTGEN_CTGOV_API") or CTGOV_API_DEFAULT).rstrip("/")
