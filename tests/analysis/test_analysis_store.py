"""Analysis store: the embeddings cache (a second call does not re-embed) and stored results.
The constructed trials the analysis tests share are in tests/fixtures/analysis/store.py."""
from __future__ import annotations

import numpy as np

from core.record import normalize_record
from fixtures.analysis.store import build_store, insert_real


def test_second_call_reads_the_cache_and_does_not_encode(tmp_path):
    from core.analysis import embeddings
    from core.store import embeddings as store
    from core.store import connect

    db = tmp_path / "cache.duckdb"
    enc = embeddings.get_encoder("minilm")
    texts = [f"Trial number {i} of aspirin in stroke prevention" for i in range(10)] + ["same text"] * 3
    calls0, n0 = enc.calls, enc.texts_encoded
    first = embeddings.embed_texts(texts, encoder=enc, db=db, batch_size=4)
    assert enc.texts_encoded - n0 == 11          # duplicates embedded once
    assert enc.calls - calls0 == 3               # 11 texts in batches of 4
    with connect(db) as con:
        assert store.embedding_count(con, enc.key) == 11
    calls1 = enc.calls
    second = embeddings.embed_texts(texts, encoder=enc, db=db, batch_size=4)
    assert enc.calls == calls1                   # nothing re-embedded
    np.testing.assert_allclose(first, second, atol=1e-6)
    assert np.allclose(np.linalg.norm(first, axis=1), 1, atol=1e-5)
    # one new text: only that one is encoded
    embeddings.embed_texts(texts + ["a new text about metformin"], encoder=enc, db=db)
    assert enc.calls == calls1 + 1 and enc.texts_encoded == n0 + 12


def test_cached_vectors_equal_fresh_ones_and_are_keyed_by_model(tmp_path):
    from core.analysis import embeddings
    from core.store import embeddings as store
    from core.store import connect

    db = tmp_path / "cache.duckdb"
    enc = embeddings.get_encoder("minilm")
    texts = ["Paclitaxel in ovarian cancer", "Tacrolimus ointment in atopic dermatitis"]
    cached = embeddings.embed_texts(texts, encoder=enc, db=db)
    fresh = embeddings.embed_texts(texts, encoder=enc)  # no store
    np.testing.assert_allclose(cached, fresh, atol=1e-5)
    with connect(db) as con:
        assert store.cached_embeddings(con, [embeddings.text_hash(t) for t in texts], "another-model") == {}


def test_biobert_missing_falls_back_to_minilm_and_says_so(monkeypatch, tmp_path):
    from core.analysis import embeddings

    monkeypatch.setenv("CTGEN_BIOBERT_PATH", str(tmp_path / "no-such-model"))
    embeddings._LOADED.pop("biobert", None)
    enc, note = embeddings.resolve_encoder("biobert")
    assert enc.name == "all-MiniLM-L6-v2"
    assert note and "BioBERT" in note and "CTGEN_BIOBERT_PATH" in note and "all-MiniLM-L6-v2" in note


def test_results_are_stored_with_parameters_and_reused(tmp_path):
    from core.analysis import quality as analysis
    from core.store import embeddings as store
    from core.store import connect

    db = build_store(tmp_path / "s.duckdb")
    params = analysis.AnalysisParams(pairs=500, seed=3)
    first = analysis.run(db, params)
    assert first["reused"] == []
    again = analysis.run(db, params)
    assert again["reused"] == ["quality"] and again["quality"] == first["quality"]
    other = analysis.run(db, analysis.AnalysisParams(pairs=500, seed=4))
    assert other["reused"] == []
    with connect(db) as con:
        rows = store.list_results(con, "quality")
    assert len(rows) == 2
    assert sorted(r["seed"] for r in rows) == [3, 4]
    assert all(r["params"]["pairs"] == 500 and r["params"]["real_scope"] == "interventions" for r in rows)


def test_real_trials_of_the_sets_interventions_by_drugbank_match_or_name(tmp_path):
    from core.store import embeddings as store
    from core.store import connect

    db = build_store(tmp_path / "s.duckdb", n_real=4, synthetic="none")
    with connect(db) as con:
        # a labelled trial naming the drug by a brand name, matched to DrugBank by ingest
        insert_real(con, [normalize_record({"nct_id": "NCT70000001", "brief_title": "Taxol in lung cancer",
                                             "interventions": [{"type": "Drug", "name": "Taxol"}]})], [1])
        con.execute("INSERT INTO drugbank (drugbank_id, common_name) VALUES ('DB01229', 'Paclitaxel')")
        con.execute("INSERT INTO intervention_matches VALUES ('NCT70000001', 0, 'Taxol', 'Drug', 'DB01229', "
                    "'synonym_normalized')")
        # an unlabelled trial of the same drug is not compared; another drug is not either
        con.execute("INSERT INTO trials (nct_id, interventions) VALUES ('NCT70000002', "
                    "[{'type': 'Drug', 'name': 'Paclitaxel', 'description': NULL, 'other_names': []}])")
        insert_real(con, [normalize_record({"nct_id": "NCT70000003",
                                             "interventions": [{"type": "Drug", "name": "Metformin"}]})], [0])
        rows = store.real_for_analysis(con, ["paclitaxel"])
        everything = store.real_for_analysis(con, None)
    by_id = {r["nct_id"]: r for r in rows}
    assert set(by_id) == {f"NCT9{i:07d}" for i in range(4)} | {"NCT70000001"}
    assert by_id["NCT70000001"]["matched_intervention"] == "Paclitaxel" and by_id["NCT70000001"]["label"] == 1
    assert {r["nct_id"] for r in everything} == set(by_id) | {"NCT70000003"}
