"""Retrieval on the real mirror: rules, counts, samples, seeding, token budget (exact counts)."""
from __future__ import annotations

import json

import pytest

from core.ingest.matching import normalize_name
from core.llm import tiktoken_encoding
from core.pipeline.retrieval import (RetrievalError, eligible_interventions, example_document, fit_document, resolve_intervention,
                            retrieve, rule_summary, sample_trials)
from core.store import connect
from core.store import retrieval as q
from core.store.trials import get_records, labeled_trials

ENC = tiktoken_encoding("o200k_base")


def count(text: str) -> int:
    return len(ENC.encode(text, disallowed_special=()))


@pytest.fixture(scope="module")
def con(mirror_db):
    with connect(mirror_db, read_only=True) as c:
        yield c


@pytest.fixture(scope="module")
def labels(con):
    return {t["nct_id"]: t["label"] for t in labeled_trials(con)}


def test_rule_counts_match_the_mirror_readme(con):
    by_rule = {r["rule"]: r for r in rule_summary(con)}
    # ../shared/data/README.md: first drug matched to DrugBank, >=3 successes and >=3 failures:
    # "about 66 interventions and 1,100 trials"; any listed drug: "about 146 interventions".
    paper = by_rule["paper-exact"]
    assert 60 <= paper["interventions"] <= 72 and 1000 <= paper["trials"] <= 1200
    assert 135 <= by_rule["drugbank"]["interventions"] <= 160
    assert by_rule["drugbank"]["trials"] > paper["trials"]
    eligible = eligible_interventions(con, "drugbank")
    assert len(eligible) == by_rule["drugbank"]["interventions"]
    assert all(e["n_success"] >= 3 and e["n_failure"] >= 3 for e in eligible)
    paper_ids = {e["drugbank_id"] for e in eligible_interventions(con, "paper-exact")}
    assert paper_ids <= {e["drugbank_id"] for e in eligible}
    # the threshold is configurable
    stricter = rule_summary(con, min_each=10)
    assert all(s["interventions"] < by_rule[s["rule"]]["interventions"] for s in stricter)
    assert all(e["n_success"] >= 10 and e["n_failure"] >= 10 for e in eligible_interventions(con, "drugbank", 10))


def test_samples_are_of_the_intervention_and_label(con, labels):
    eligible = eligible_interventions(con, "drugbank")
    for drug in eligible[:3] + eligible[-3:]:
        synonyms = {normalize_name(s) for s in q.drug_synonyms(con, drug["drugbank_id"])} | {normalize_name(drug["name"])}
        for label in (0, 1):
            ids = sample_trials(con, drug["drugbank_id"], label, k=3, seed=7)
            assert len(set(ids)) == 3
            assert len(q.trials_of(con, drug["drugbank_id"], label)) == drug["n_success" if label else "n_failure"]
            for nct, rec in get_records(con, ids).items():
                assert labels[nct] == label
                names = {normalize_name(i["name"]) for i in rec["interventions"] if i.get("name")}
                assert names & synonyms, (nct, names, drug)


def test_paper_exact_uses_first_intervention_exact_name(con):
    drug = eligible_interventions(con, "paper-exact")[0]
    ids = sample_trials(con, drug["drugbank_id"], 1, k=3, seed=1, rule="paper-exact")
    for rec in get_records(con, ids).values():
        assert rec["interventions"][0]["name"].lower() == drug["name"].lower()


def test_seeded_reproducibility(con):
    a = retrieve(con, seed=11, count_tokens=count, budget=20_000)
    b = retrieve(con, seed=11, count_tokens=count, budget=20_000)
    assert (a.intervention, a.label, [e.nct_id for e in a.examples]) == \
           (b.intervention, b.label, [e.nct_id for e in b.examples])
    assert [e.text for e in a.examples] == [e.text for e in b.examples]
    draws = {tuple(e.nct_id for e in retrieve(con, seed=s, count_tokens=count).examples) for s in range(6)}
    assert len(draws) > 1
    chosen = retrieve(con, intervention="cisplatin", label=0, seed=3, count_tokens=count)
    assert chosen.intervention == "Cisplatin" and chosen.label == 0
    with pytest.raises(RetrievalError, match="not a DrugBank"):
        resolve_intervention(con, "no such drug xyz")


def test_token_budget_respected_with_exact_counts(con):
    full = retrieve(con, intervention="Paclitaxel", label=1, seed=5, count_tokens=count, budget=None)
    assert not full.truncated
    budget = full.tokens // 3
    fitted = retrieve(con, intervention="Paclitaxel", label=1, seed=5, count_tokens=count, budget=budget)
    assert [e.nct_id for e in fitted.examples] == [e.nct_id for e in full.examples]
    assert fitted.tokens <= budget and fitted.truncated
    for e in fitted.examples:
        assert e.tokens == count(e.text)          # exact, with the target tokenizer
        assert e.original_tokens == count(next(f.text for f in full.examples if f.nct_id == e.nct_id))
        if e.truncated:
            # a dropped section is gone from the example; a shortened text carries the mark (full records
            # come first since issue 12, and an XML record often fits by dropping sections alone)
            doc = json.loads(e.text)
            assert e.dropped and ("[...]" in e.text or all(d.split(".")[0] not in doc for d in e.dropped))


def test_xml_examples_are_json_of_the_xml_and_results_go_first(con, labels):
    raws = q.raw_documents(con, sorted(labels))
    nct = next(n for n, (fmt, doc) in sorted(raws.items()) if fmt == "xml" and "<clinical_results>" in doc)
    raw = raws[nct]
    doc = example_document(get_records(con, [nct])[nct], *raw)
    assert "clinical_results" in doc and "brief_title" in doc and "required_header" not in doc
    whole = count(json.dumps(doc, ensure_ascii=False))
    text, n, changes, truncated = fit_document(doc, count, whole // 4)
    assert truncated and n <= whole // 4 and n == count(text)
    assert changes[0] == "clinical_results"
    assert json.loads(text)["brief_title"] == doc["brief_title"]


def test_batch_pool_draws_what_retrieve_draws(con):
    from core.pipeline.retrieval import RetrievalPool

    for intervention, label in ((None, None), ("Docetaxel", 0)):
        pool = RetrievalPool.load(con, "drugbank", 3, intervention)
        pool.prefetch(con, [i for s in range(4) for i in pool.select(label=label, seed=s)[2]])
        for s in range(4):
            a = retrieve(con, intervention=intervention, label=label, seed=s, count_tokens=count, budget=3000)
            b = pool.retrieve(label=label, seed=s, count_tokens=count, budget=3000)
            assert a == b
