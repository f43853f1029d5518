"""Fixtures of the fine-tuning tests."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fixtures.finetune.synthetic import insert_synthetic


@pytest.fixture(scope="module")
def syn_db(mirror_db, tmp_path_factory) -> Path:
    """The mirror store plus 120 fixture synthetic trials (20 eligible drugs x 3 per label), one per module."""
    db = tmp_path_factory.mktemp("ft-syn") / "store.duckdb"
    shutil.copy(mirror_db, db)
    insert_synthetic(db, per_label=3, n_drugs=20)
    return db
