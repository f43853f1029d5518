"""The eligibility rule is defined once (core.store.retrieval.eligible_sql) and every reader agrees on it;
retrieval draws its examples from full records first and records how many of each kind it used."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.pipeline.retrieval import RetrievalPool, draw, retrieve
from core.store import browse, connect
from core.store import retrieval as q
from core.store.trials import store_stats
from fixtures.ui.small_store import TRIALS, build

ASPIRIN = "DB00945"


@pytest.fixture
def small(tmp_path) -> Path:
    return build(tmp_path / "small.duckdb")


def _full(nct: str) -> bool:
    return bool({"ctgov_xml", "ctgov_json"} & set(TRIALS[nct][5]))


def test_home_stats_and_generate_count_the_same_set(small):
    with connect(small, read_only=True) as con:
        stats = store_stats(con)
        home = browse.eligible_interventions(con)
        generate = q.eligible_interventions(con, "drugbank", 3)
        counts = q.rule_counts(con, "drugbank")
        set_a = q.eligible_trials(con)
    # aspirin only: 4 successful and 3 failed trials (the unlabelled and the -1 ones do not count)
    assert [d["drugbank_id"] for d in generate] == home["drugbank_id"].tolist() == [ASPIRIN]
    assert (generate[0]["n_success"], generate[0]["n_failure"]) == (4, 3) == tuple(home.loc[0, ["success", "failure"]])
    assert stats["eligible_interventions"] == counts["interventions"] == 1
    assert stats["eligible_trials"] == counts["trials"] == len(set_a) == 7
    assert {n for n, _ in set_a} == {n for n, t in TRIALS.items() if t[3][0] == ASPIRIN and n != "NCT90000008"}


def test_draw_takes_full_records_first():
    import random

    ids = ["A", "B", "C", "D", "E"]
    for seed in range(20):
        assert set(draw(random.Random(seed), ids, {"B", "D", "E"}, 3)) == {"B", "D", "E"}
        got = draw(random.Random(seed), ids, {"B"}, 3)
        assert got[0] == "B" and len(set(got)) == 3
    assert len(set(draw(random.Random(0), ids, set(), 3))) == 3   # no full record: any three


def test_retrieval_prefers_full_records_and_says_how_many_it_used(small):
    with connect(small, read_only=True) as con:
        pool = RetrievalPool.load(con, intervention=ASPIRIN)
        full_success = sorted(n for n in pool.lists[(ASPIRIN, 1)] if _full(n))
        assert len(full_success) == 3 and len(pool.lists[(ASPIRIN, 1)]) == 4   # one TOP-only success
        for seed in range(8):
            r = retrieve(con, intervention=ASPIRIN, label=1, seed=seed)
            assert sorted(e.nct_id for e in r.examples) == full_success
            assert (r.n_full, r.n_top) == (3, 0) and r.to_dict()["n_full"] == 3
            # failures: only 2 full records, so both of them and one TOP row
            r0 = retrieve(con, intervention=ASPIRIN, label=0, seed=seed)
            kinds = sorted(_full(e.nct_id) for e in r0.examples)
            assert kinds == [False, True, True] and (r0.n_full, r0.n_top) == (2, 1)
            # the batch pool draws the same
            assert pool.select(label=0, seed=seed)[2] == [e.nct_id for e in r0.examples]
