"""Analysis store: the embeddings cache (a second call does not re-embed) and stored results.

Also the constructed trials the analysis tests share: canonical records written from templates
(two unrelated topics), real ones with labels and synthetic ones marked as test fixtures."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.record import normalize_record

FIXTURE_SOURCE = "test-fixture:analysis"  # synthetic_trials.source of rows these tests insert

_CANCERS = ["metastatic breast cancer", "non-small cell lung cancer", "ovarian carcinoma", "gastric adenocarcinoma",
            "pancreatic cancer", "head and neck squamous cell carcinoma", "bladder cancer", "endometrial cancer"]
_LINES = ["first-line", "second-line", "maintenance", "neoadjuvant", "adjuvant"]
_SKIN = ["plaque psoriasis", "atopic dermatitis", "chronic hand eczema", "rosacea", "acne vulgaris",
         "seborrheic dermatitis", "alopecia areata", "vitiligo"]
_FORMS = ["ointment", "cream", "foam", "gel", "lotion"]


def oncology_record(i: int, nct: str | None = None) -> dict:
    cancer, line = _CANCERS[i % len(_CANCERS)], _LINES[(i // len(_CANCERS)) % len(_LINES)]
    dose = 60 + 15 * (i % 7)
    return normalize_record({
        "nct_id": nct or f"NCT9{i:07d}",
        "brief_title": f"Paclitaxel {dose} mg/m2 weekly as {line} therapy in {cancer}",
        "phase": ["Phase 2", "Phase 3"][i % 2], "study_type": "Interventional",
        "conditions": [cancer],
        "interventions": [{"type": "Drug", "name": "Paclitaxel",
                           "description": f"{dose} mg/m2 intravenous infusion on days 1, 8 and 15 of a 28-day cycle"}],
        "brief_summary": f"This study evaluates weekly paclitaxel at {dose} mg/m2 as {line} chemotherapy for "
                         f"patients with {cancer}, measuring progression-free survival and tumour response.",
        "primary_outcomes": [{"measure": "Progression-free survival", "time_frame": f"{12 + i % 24} months"}],
        "eligibility_criteria": f"Inclusion: histologically confirmed {cancer}; ECOG performance status 0-1; "
                                f"measurable disease by RECIST 1.1; adequate bone marrow function. "
                                f"Exclusion: prior taxane therapy within {6 + i % 6} months; peripheral neuropathy grade 2 or more.",
        "enrollment": 40 + 7 * i,
    })


def dermatology_record(i: int, nct: str | None = None) -> dict:
    skin, form = _SKIN[i % len(_SKIN)], _FORMS[(i // len(_SKIN)) % len(_FORMS)]
    pct = [0.03, 0.1, 0.3][i % 3]
    return normalize_record({
        "nct_id": nct or f"NCT8{i:07d}",
        "brief_title": f"Topical tacrolimus {pct}% {form} twice daily for {skin} in adolescents and adults",
        "phase": ["Phase 2", "Phase 3"][i % 2], "study_type": "Interventional",
        "conditions": [skin],
        "interventions": [{"type": "Drug", "name": "Tacrolimus",
                           "description": f"{pct}% {form} applied to affected skin twice daily for {4 + i % 8} weeks"}],
        "brief_summary": f"A vehicle-controlled trial of topical tacrolimus {form} in {skin}, assessing the "
                         f"investigator global assessment of skin clearance and itch scores.",
        "primary_outcomes": [{"measure": "Investigator Global Assessment clear or almost clear",
                              "time_frame": f"week {4 + i % 8}"}],
        "eligibility_criteria": f"Inclusion: clinical diagnosis of {skin} affecting at least {2 + i % 10}% body "
                                f"surface area; age 12 years or older. Exclusion: skin infection at treatment sites; "
                                f"systemic immunosuppressants within 4 weeks.",
        "enrollment": 30 + 5 * i,
    })


def _insert_real(con, records: list[dict], labels: list[int]) -> None:
    cols = ["nct_id", "brief_title", "phase", "study_type", "conditions", "interventions", "brief_summary",
            "primary_outcomes", "eligibility_criteria", "enrollment"]
    for rec, label in zip(records, labels):
        con.execute(f"INSERT INTO trials ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    [rec[c] for c in cols])
        con.execute("INSERT INTO labels VALUES (?, 'iqvia', ?, 'test fixture')", [rec["nct_id"], label])


def insert_synthetic(con, records: list[dict], intervention: str, source: str = FIXTURE_SOURCE,
                     statuses: list[str] | None = None) -> None:
    """Synthetic rows through the pipeline's own store function, with its validation check names."""
    from core.store.synthetic import save_synthetic

    for k, rec in enumerate(records):
        validation = {"intervention": {"ok": k % 4 != 0, "severity": "warning", "detail": "test fixture"},
                      "label_leak": {"ok": k % 5 != 0, "severity": "warning", "detail": "test fixture"}}
        save_synthetic(con, {
            "id": f"{source}:{k}", "source": source, "item_index": k, "intended_intervention": intervention,
            "intended_label": k % 2, "record": rec, "validation": validation, "example_nct_ids": [],
            "validation_status": (statuses or ["ok", "warning", "invalid"])[k % 3]})


def build_store(path: Path, n_real: int = 24, synthetic: str = "dermatology", n_synth: int = 18) -> Path:
    """Real oncology trials (labelled, intervention Paclitaxel) and a synthetic fixture set:
    'dermatology' (another topic), 'copies' (the real records themselves) or 'none'."""
    from core.store import connect

    real = [oncology_record(i) for i in range(n_real)]
    with connect(path) as con:
        _insert_real(con, real, [i % 2 for i in range(n_real)])
        if synthetic == "dermatology":
            insert_synthetic(con, [dermatology_record(i, nct="") for i in range(n_synth)], "Paclitaxel")
        elif synthetic == "copies":
            insert_synthetic(con, real[:n_synth], "Paclitaxel")
    return path


# ---------------- tests: the cache ----------------

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
        _insert_real(con, [normalize_record({"nct_id": "NCT70000001", "brief_title": "Taxol in lung cancer",
                                             "interventions": [{"type": "Drug", "name": "Taxol"}]})], [1])
        con.execute("INSERT INTO drugbank (drugbank_id, common_name) VALUES ('DB01229', 'Paclitaxel')")
        con.execute("INSERT INTO intervention_matches VALUES ('NCT70000001', 0, 'Taxol', 'Drug', 'DB01229', "
                    "'synonym_normalized')")
        # an unlabelled trial of the same drug is not compared; another drug is not either
        con.execute("INSERT INTO trials (nct_id, interventions) VALUES ('NCT70000002', "
                    "[{'type': 'Drug', 'name': 'Paclitaxel', 'description': NULL, 'other_names': []}])")
        _insert_real(con, [normalize_record({"nct_id": "NCT70000003",
                                             "interventions": [{"type": "Drug", "name": "Metformin"}]})], [0])
        rows = store.real_for_analysis(con, ["paclitaxel"])
        everything = store.real_for_analysis(con, None)
    by_id = {r["nct_id"]: r for r in rows}
    assert set(by_id) == {f"NCT9{i:07d}" for i in range(4)} | {"NCT70000001"}
    assert by_id["NCT70000001"]["matched_intervention"] == "Paclitaxel" and by_id["NCT70000001"]["label"] == 1
    assert {r["nct_id"] for r in everything} == set(by_id) | {"NCT70000003"}
