"""What an analysis compares: the synthetic set (usable trials by default, the fine-tuning rule), the real
trials of its interventions, their scrubbed texts and their embeddings."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from core.serialize import classifier_text

StageProgress = Callable[[str, float], None]  # (stage text, fraction 0..1 of that stage)


class AnalysisError(RuntimeError):
    """The analysis cannot run on this store as asked (no synthetic trials, unknown set, ...)."""


@dataclass
class Corpus:
    """Real and synthetic trials of one analysis, their texts, embeddings and display fields."""

    real: list[dict[str, Any]]
    synth: list[dict[str, Any]]
    real_texts: list[str]
    synth_texts: list[str]
    real_emb: np.ndarray
    synth_emb: np.ndarray
    encoder: str
    note: str | None = None
    interventions: list[str] = field(default_factory=list)
    excluded: int = 0                     # synthetic trials of the set left out by the rule


def _cap(rows: list, cap: int, rng: np.random.Generator) -> list:
    if cap and len(rows) > cap:
        keep = np.sort(rng.choice(len(rows), cap, replace=False))
        return [rows[i] for i in keep]
    return rows


def load_corpus(db: str | os.PathLike, params: Any, progress: StageProgress | None = None) -> Corpus:
    """Read both sides with one connection, then serialize and embed (cached by text) after it closes."""
    from core.analysis.embeddings import embed_texts, resolve_encoder
    from core.store import connect
    from core.store import embeddings as store

    rng = np.random.default_rng(params.seed)
    with connect(db) as con:
        sources = dict(store.synthetic_sources(con, "all"))
        if not sources:
            raise AnalysisError(
                f"{db}: no synthetic trials in the store (table synthetic_trials is empty): "
                "generate some (`python -m core generate`) or import a set (`python -m core import-synthetic`)")
        if params.synthetic_source is not None and params.synthetic_source not in sources:
            raise AnalysisError(
                f"{db}: no synthetic set named {params.synthetic_source!r} (--synthetic-source); "
                f"sets in the store: {', '.join(sorted(sources))}")
        synth = store.synthetic_for_analysis(con, params.synthetic_source, rule=params.synthetic_rule)
        everything = (sources[params.synthetic_source] if params.synthetic_source is not None
                      else sum(sources.values()))
        if not synth:
            raise AnalysisError(
                f"{db}: none of the {everything} synthetic trials of {params.synthetic_source or 'the store'} is "
                "usable (all are invalid, rejected in review or unlabelled); analyse them all with "
                "--synthetic-rule all (the Embeddings page: include all)")
        interventions = sorted({s["intended_intervention"] for s in synth if s.get("intended_intervention")})
        real = store.real_for_analysis(con, interventions if params.real_scope == "interventions" else None)
    excluded = everything - len(synth)  # left out by the rule (0 with rule "all")
    synth = _cap(synth, params.max_synthetic, rng)
    real = _cap(real, params.max_real, rng)
    if not real:
        raise AnalysisError(
            f"{db}: no labelled real trials to compare with"
            + (f" for the set's interventions ({', '.join(interventions[:5])}...); try real_scope 'all'"
               if params.real_scope == "interventions" else "; load real trials (`python -m core sample-data`)"))
    real_texts = [classifier_text(r, synthetic=False, mode=params.scrub_mode) for r in real]
    synth_texts = [classifier_text(s["record"], synthetic=True, mode=params.scrub_mode) for s in synth]
    encoder, note = resolve_encoder(params.encoder)
    total = len(real_texts) + len(synth_texts)

    def prog(done: int, _total: int) -> None:
        if progress:
            progress(f"Embedding {total} trials with {encoder.name}", done / max(_total, 1))

    emb = embed_texts(real_texts + synth_texts, encoder=encoder, db=db, progress=prog)
    return Corpus(real=real, synth=synth, real_texts=real_texts, synth_texts=synth_texts,
                  real_emb=emb[:len(real)], synth_emb=emb[len(real):], encoder=encoder.key, note=note,
                  interventions=interventions, excluded=excluded)
