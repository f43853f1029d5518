"""What the Trials page calls: the filter type and its choices, and how a record's missing parts read.
The queries themselves run through core.ui.query (cached, read-only) on core.store.browse."""
from __future__ import annotations

import pandas as pd

from core.store.browse import LABEL_CHOICES, RECORD_CHOICES, TrialFilter

__all__ = ["LABEL_CHOICES", "RECORD_CHOICES", "TrialFilter", "NO_TITLE", "title_of", "display_frame"]

NO_TITLE = "(TOP row: no title)"   # a TOP row has status, phase, diseases, drugs and criteria, no title


def title_of(record: dict, sources: list[str] | None = None) -> str:
    """The record's title, or what stands in for it: a TOP-only row says so; a full record without one
    says '(no title)'."""
    if record.get("brief_title"):
        return record["brief_title"]
    full = {"ctgov_xml", "ctgov_json"} & set(sources or record.get("sources") or [])
    return "(no title)" if full else NO_TITLE


def display_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A page of search results as shown: TOP-only rows titled NO_TITLE instead of an empty cell."""
    if "title" in df.columns and "record" in df.columns:
        df = df.copy()
        top_only = df["title"].isna() & (df["record"] == RECORD_CHOICES[1])
        df.loc[top_only, "title"] = NO_TITLE
        df["title"] = df["title"].fillna("(no title)")
    return df
