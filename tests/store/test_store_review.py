"""Review decisions in the store: a change is recorded with who / when / old / new; a decision that changed
since it was shown is not overwritten; the usable rule's counts and reasons."""
from __future__ import annotations

import pytest

from core.store import connect
from core.store import synthetic as syn
from fixtures.analysis.store import FIXTURE_SOURCE, build_store


def test_history_conflict_and_usable_counts(tmp_path):
    db = build_store(tmp_path / "r.duckdb", n_real=4, synthetic="dermatology", n_synth=6)  # 2 of 6 invalid
    sid = f"{FIXTURE_SOURCE}:0"
    with connect(db) as con:
        syn.set_review(con, sid, "accepted", "ok", reviewer="ann")
        with pytest.raises(syn.ReviewConflict, match="accepted"):
            syn.set_review(con, sid, "rejected", "no", reviewer="bob", expected=(None, None))
        assert syn.get_synthetic(con, sid)["review_status"] == "accepted"      # left alone
        syn.set_review(con, sid, "rejected", "no", reviewer="bob", expected=("accepted", "ok"))
        syn.set_review(con, sid, "rejected", "no", reviewer="bob")             # no change: no history row
        hist = syn.review_history(con, sid)
        assert [(h["reviewer"], h["old_status"], h["new_status"], h["old_note"], h["new_note"]) for h in hist] == [
            ("bob", "accepted", "rejected", "ok", "no"), ("ann", None, "accepted", None, "ok")]
        counts = syn.usable_counts(con)
        assert counts == {"total": 6, "usable": 3, "invalid": 2, "rejected": 1, "unlabelled": 0, "no_record": 0}
        assert sorted(r["id"] for r in syn.list_synthetic(con, review="not reviewed")) == [
            f"{FIXTURE_SOURCE}:{k}" for k in range(1, 6)]
        assert [r["id"] for r in syn.list_synthetic(con, review="rejected")] == [sid]
        with pytest.raises(KeyError):
            syn.set_review(con, "nope", "accepted")
