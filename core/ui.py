"""Small helpers shared by the Streamlit pages (no SQL here: queries live in core.store)."""
from __future__ import annotations

from pathlib import Path

from core import config

# Page URL paths (Streamlit derives them from the file names in pages/).
PAGES = {
    "Trials": "pages/1_Trials.py",
    "Generate": "pages/2_Generate.py",
    "Synthetic reports": "pages/3_Synthetic_reports.py",
    "Fine-tune": "pages/4_Fine-tune.py",
    "Experiments": "pages/5_Experiments.py",
    "Embeddings": "pages/6_Embeddings.py",
}


def db_path() -> Path:
    """The store the app works on (CTGEN_DB or data/ctgen.duckdb)."""
    return config.db_path()


def trial_url(nct_id: str) -> str:
    """Link to a trial's record view on the Trials page."""
    return f"/Trials?nct={nct_id}"
