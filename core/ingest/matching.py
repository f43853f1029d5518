"""Intervention -> DrugBank name normalization (the matching itself is set-based SQL in
core.store.trials.recompute_matches).

Normalization, kept deliberately simple: lowercase; every run of characters that are neither
letters nor digits (punctuation, hyphens, brackets, spaces) becomes one space; trim. Dose and salt
words ("10 mg", "hydrochloride") are NOT stripped: that would merge distinct DrugBank entries
(e.g. a salt form has its own id) and needs a curated list to be safe.
`normalize_name` is the Python twin of core.store.trials.name_norm_sql (tests check they agree).
"""
from __future__ import annotations

import re

_NON_ALNUM = re.compile(r"[\W_]+")

RULES = ("common_exact", "common_normalized", "synonym_normalized")


def normalize_name(name: str | None) -> str:
    if not name:
        return ""
    return _NON_ALNUM.sub(" ", name.lower()).strip()
