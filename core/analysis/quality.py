"""Quality analysis of synthetic trials against real ones (paper section 4.2, and more).

- Cosine-similarity histograms: real-real, synthetic-synthetic, real-synthetic; pairs drawn without
  replacement from the distinct pairs (never a trial with itself), all of them when fewer exist.
- t-SNE (paper: perplexity 30, 1000 iterations) and UMAP projections of real + synthetic embeddings.
- Quality metrics per synthetic set: detection AUC (fidelity) with class sizes and a bootstrap interval,
  distance to the closest real record and near copies (privacy), mean pairwise cosine and distinct-n
  (diversity), intervention-match and leakage rates (from the validation JSON). Every statistic carries n.
- The synthetic trials analysed follow the fine-tuning rule by default (usable: not invalid, not
  rejected; core.store.synthetic.USABLE_SQL); `synthetic_rule="all"` takes every one.

Everything is seeded; results are stored with their parameters (core.store.embeddings) and reused
when asked again with the same parameters. Metrics: core.analysis.metrics; loading: core.analysis.corpus.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from core.analysis.corpus import Corpus, StageProgress, load_corpus
from core.analysis.metrics import (PROJECTIONS, copy_groups, detection_auc, detection_test,  # noqa: F401
                                   distinct_n, distinct_pair_count, nearest, pair_cosines, project,
                                   sample_pairs, summary, validation_rates)
from core.store.synthetic import USABLE_RULE_TEXT

REAL_SCOPES = ("interventions", "all")
SYNTHETIC_RULES = ("usable", "all")
RULE_TEXT = {"usable": USABLE_RULE_TEXT, "all": "all synthetic trials, invalid and rejected ones included"}
RESULT_VERSION = 2  # bump when a metric's definition changes, so old stored results are not reused
# 2: pairs without replacement from the distinct pairs; detection CI; the usable rule


@dataclass(frozen=True)
class AnalysisParams:
    """Everything that determines a result; its hash is the stored result's key."""

    synthetic_source: str | None = None   # None: every synthetic set together
    real_scope: str = "interventions"     # real trials of the set's interventions (paper), or "all"
    pairs: int = 10_000                   # at most this many distinct pairs per histogram
    seed: int = 0
    encoder: str = "minilm"
    max_real: int = 5_000                 # sample caps, for speed (seeded)
    max_synthetic: int = 5_000
    copy_threshold: float = 0.05          # cosine distance at or below which a synthetic trial is a near copy
    scrub_mode: str = "strict"
    cv_folds: int = 5
    synthetic_rule: str = "usable"        # the fine-tuning rule (default) or "all"

    def __post_init__(self) -> None:
        if self.real_scope not in REAL_SCOPES:
            raise ValueError(f"real_scope must be one of {REAL_SCOPES}, not {self.real_scope!r}")
        if self.synthetic_rule not in SYNTHETIC_RULES:
            raise ValueError(f"synthetic_rule must be one of {SYNTHETIC_RULES}, not {self.synthetic_rule!r}")
        if self.pairs < 1:
            raise ValueError(f"pairs must be at least 1, not {self.pairs}")
        if not 0 <= self.copy_threshold <= 2:
            raise ValueError(f"copy_threshold is a cosine distance in [0, 2], not {self.copy_threshold}")

    def key(self, kind: str, **extra: Any) -> str:
        body = json.dumps({"kind": kind, "v": RESULT_VERSION, **asdict(self), **extra}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:32]


# ---------------- the analyses ----------------

def histogram_values(c: Corpus, params: AnalysisParams) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(params.seed)
    return {
        "real-real": pair_cosines(c.real_emb, None, params.pairs, rng),
        "synthetic-synthetic": pair_cosines(c.synth_emb, None, params.pairs, rng),
        "real-synthetic": pair_cosines(c.real_emb, c.synth_emb, params.pairs, rng),
    }


def quality_metrics(c: Corpus, params: AnalysisParams, progress: StageProgress | None = None) -> dict[str, Any]:
    """The metrics and the histogram data of one synthetic set (a dict that JSON can store)."""
    step = (lambda s, f: progress(s, f)) if progress else (lambda s, f: None)
    step("Cosine similarities of sampled pairs", 0.0)
    sims = histogram_values(c, params)
    distinct = {"real-real": distinct_pair_count(len(c.real), None),
                "synthetic-synthetic": distinct_pair_count(len(c.synth), None),
                "real-synthetic": distinct_pair_count(len(c.real), len(c.synth))}
    # The sampled similarities themselves (4 decimals) are kept, so the page draws real histograms.
    cosine = {k: {**summary(v), "distinct": distinct[k], "requested": params.pairs,
                  "values": np.round(v.astype(np.float64), 4).tolist()} for k, v in sims.items()}
    step("Detection classifier (cross-validated)", 0.3)
    detection = detection_test(c.real_emb, c.synth_emb, seed=params.seed, folds=params.cv_folds,
                               copy_threshold=params.copy_threshold)
    step("Distance to closest real record", 0.7)
    d, idx = nearest(c.synth_emb, c.real_emb)
    real_d, _ = nearest(c.real_emb, c.real_emb, exclude_self=True) if len(c.real_emb) > 1 else (np.zeros(0), None)
    copies = [
        {"synthetic_id": c.synth[k]["id"], "nct_id": c.real[int(idx[k])]["nct_id"], "distance": float(d[k])}
        for k in np.argsort(d) if d[k] <= params.copy_threshold
    ]
    step("Diversity", 0.9)
    result = {
        "synthetic_source": params.synthetic_source,
        "synthetic_rule": params.synthetic_rule,
        "synthetic_rule_text": RULE_TEXT[params.synthetic_rule],
        "n_synthetic_excluded": c.excluded,
        "encoder": c.encoder,
        "encoder_note": c.note,
        "n_real": len(c.real), "n_synthetic": len(c.synth),
        "interventions": c.interventions,
        "cosine": cosine,
        "detection_auc": detection["auc"],
        "detection": detection,
        "nearest_real_distance": summary(d),
        "real_nearest_real_distance": summary(real_d),  # reference: how close real trials are to each other
        "copy_threshold": params.copy_threshold,
        "near_copies": len(copies),
        "near_copy_rate": len(copies) / len(c.synth) if len(c.synth) else None,
        "near_copy_examples": copies[:50],
        "diversity": {
            "synthetic_mean_pairwise_cosine": cosine["synthetic-synthetic"]["mean"],
            "synthetic_pairs": cosine["synthetic-synthetic"]["n"],
            "real_mean_pairwise_cosine": cosine["real-real"]["mean"],
            "real_pairs": cosine["real-real"]["n"],
            "synthetic_distinct_1": distinct_n(c.synth_texts, 1),
            "synthetic_distinct_2": distinct_n(c.synth_texts, 2),
            "real_distinct_1": distinct_n(c.real_texts, 1),
            "real_distinct_2": distinct_n(c.real_texts, 2),
            "n_synthetic_texts": len(c.synth_texts), "n_real_texts": len(c.real_texts),
        },
        **validation_rates(c.synth),
    }
    step("Done", 1.0)
    return result


def _title(rec: dict[str, Any]) -> str:
    return rec.get("brief_title") or rec.get("official_title") or ""


def _intervention(rec: dict[str, Any]) -> str:
    names = [i.get("name") for i in rec.get("interventions") or [] if isinstance(i, dict) and i.get("name")]
    return names[0] if names else ""


def point_table(c: Corpus) -> list[dict[str, Any]]:
    """Display fields of every point, real first: what hover, colour and selection use."""
    pts = []
    for r in c.real:
        pts.append({"kind": "real", "id": r["nct_id"], "nct_id": r["nct_id"], "title": _title(r),
                    "intervention": r.get("matched_intervention") or _intervention(r),
                    "label": {1: "success", 0: "failure"}.get(r.get("label"), "unlabelled"),
                    "source": "real", "validation_status": "real"})
    for s in c.synth:
        rec = s["record"]
        pts.append({"kind": "synthetic", "id": s["id"], "nct_id": rec.get("nct_id") or "",
                    "title": _title(rec), "intervention": s.get("intended_intervention") or _intervention(rec),
                    "label": {1: "success", 0: "failure"}.get(s.get("intended_label"), "unlabelled"),
                    "source": s["source"], "validation_status": s.get("validation_status") or "unknown"})
    return pts


def projection_result(c: Corpus, method: str, params: AnalysisParams, perplexity: float = 30.0,
                      max_iter: int = 1000) -> dict[str, Any]:
    x = np.vstack([c.real_emb, c.synth_emb])
    xy = project(x, method, seed=params.seed, perplexity=perplexity, max_iter=max_iter)
    pts = point_table(c)
    for p, (a, b) in zip(pts, xy):
        p["x"], p["y"] = float(a), float(b)
    return {"method": method, "encoder": c.encoder, "encoder_note": c.note, "points": pts,
            "synthetic_rule": params.synthetic_rule,
            "perplexity": perplexity if method == "tsne" else None, "max_iter": max_iter if method == "tsne" else None}
# ---------------- stored, parameterised runs ----------------

def _stored(db, key: str) -> dict[str, Any] | None:
    from core.store import embeddings as store
    from core.store import connect

    with connect(db) as con:
        row = store.get_result(con, key)
    return row["result"] if row else None


def _save(db, key: str, kind: str, params: AnalysisParams, extra: dict, result: dict, t0: float) -> None:
    from core.store import embeddings as store
    from core.store import connect

    with connect(db) as con:
        store.save_result(con, key, kind, params.synthetic_source, result.get("encoder", ""),
                          {**asdict(params), **extra}, params.seed, result, time.monotonic() - t0)


def run(db: str | os.PathLike, params: AnalysisParams, projections: Sequence[str] = (),
        recompute: bool = False, progress: StageProgress | None = None) -> dict[str, Any]:
    """Quality metrics (and the asked projections) for one synthetic set: reused from the store
    when computed before with the same parameters, else computed and stored.

    Returns {"quality": {...}, "projections": {method: {...}}, "reused": [...]}."""
    for m in projections:
        if m not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, not {m!r}")
    qkey = params.key("quality")
    pkeys = {m: params.key("projection", method=m) for m in projections}
    out: dict[str, Any] = {"projections": {}, "reused": []}
    if not recompute:
        q = _stored(db, qkey)
        if q is not None:
            out["quality"] = q
            out["reused"].append("quality")
        for m, k in pkeys.items():
            p = _stored(db, k)
            if p is not None:
                out["projections"][m] = p
                out["reused"].append(m)
    if "quality" in out and len(out["projections"]) == len(pkeys):
        return out
    t0 = time.monotonic()
    corpus = load_corpus(db, params, progress)
    if "quality" not in out:
        out["quality"] = quality_metrics(corpus, params, progress)
        _save(db, qkey, "quality", params, {}, out["quality"], t0)
    for m in projections:
        if m in out["projections"]:
            continue
        if progress:
            progress(f"{'t-SNE' if m == 'tsne' else 'UMAP'} of {len(corpus.real) + len(corpus.synth)} trials", 0.0)
        t1 = time.monotonic()
        out["projections"][m] = projection_result(corpus, m, params)
        _save(db, pkeys[m], "projection", params, {"method": m}, out["projections"][m], t1)
    if progress:
        progress("Done", 1.0)
    return out


def cli_summary(quality: dict[str, Any]) -> dict[str, Any]:
    """The one JSON object `analyze --json` prints: no histogram counts, no examples."""
    return {
        "synthetic_source": quality["synthetic_source"],
        "synthetic_rule": quality["synthetic_rule"], "synthetic_rule_text": quality["synthetic_rule_text"],
        "n_synthetic_excluded": quality["n_synthetic_excluded"],
        "encoder": quality["encoder"],
        "encoder_note": quality["encoder_note"],
        "n_real": quality["n_real"], "n_synthetic": quality["n_synthetic"],
        "cosine": {k: {s: v[s] for s in ("n", "distinct", "requested", "mean", "sd", "min", "median", "max")}
                   for k, v in quality["cosine"].items()},
        "detection_auc": quality["detection_auc"],
        "detection": quality["detection"],
        "nearest_real_distance": quality["nearest_real_distance"],
        "real_nearest_real_distance": quality["real_nearest_real_distance"],
        "copy_threshold": quality["copy_threshold"],
        "near_copies": quality["near_copies"],
        "near_copy_rate": quality["near_copy_rate"],
        "diversity": quality["diversity"],
        "intervention_match_rate": quality["intervention_match_rate"],
        "intervention_checked": quality["intervention_checked"],
        "leakage_rate": quality["leakage_rate"],
        "leakage_checked": quality["leakage_checked"],
    }


def stored(db: str | os.PathLike, params: AnalysisParams, projections: Sequence[str] = ()) -> dict[str, Any]:
    """What the store holds for these parameters: {"quality": ... or None, "projections": {m: ...}}."""
    from core.store import embeddings as store
    from core.store import connect

    with connect(db, read_only=True, wait_s=10) as con:
        q = store.get_result(con, params.key("quality"))
        proj = {m: store.get_result(con, params.key("projection", method=m)) for m in projections}
    return {"quality": q["result"] if q else None,
            "quality_row": {k: v for k, v in (q or {}).items() if k != "result"} or None,
            "projections": {m: r["result"] for m, r in proj.items() if r}}


def quality_table(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows = metrics, one column per synthetic set (side by side); each statistic with its n."""
    def f(v, digits=3):
        return None if v is None else round(float(v), digits)

    def ci(q):
        d = q.get("detection") or {}
        return None if d.get("ci_low") is None else f"{d['ci_low']:.3f} – {d['ci_high']:.3f}"

    def n_of(q, k):
        return q["cosine"][k]["n"]

    rows = [
        ("Real trials compared", lambda q: q["n_real"]),
        ("Synthetic trials", lambda q: q["n_synthetic"]),
        ("Synthetic trials analysed", lambda q: q.get("synthetic_rule_text")),
        ("Detection AUC (0.5 = indistinguishable)", lambda q: f(q["detection_auc"])),
        ("Detection AUC 95% interval (bootstrap)", ci),
        ("Detection classes: real / synthetic", lambda q: f"{q['n_real']:,} / {q['n_synthetic']:,}"),
        ("Cosine real-real mean", lambda q: f(q["cosine"]["real-real"]["mean"])),
        ("Cosine real-real pairs (n)", lambda q: n_of(q, "real-real")),
        ("Cosine synthetic-synthetic mean", lambda q: f(q["cosine"]["synthetic-synthetic"]["mean"])),
        ("Cosine synthetic-synthetic pairs (n)", lambda q: n_of(q, "synthetic-synthetic")),
        ("Cosine real-synthetic mean", lambda q: f(q["cosine"]["real-synthetic"]["mean"])),
        ("Cosine real-synthetic pairs (n)", lambda q: n_of(q, "real-synthetic")),
        ("Distance to closest real: median", lambda q: f(q["nearest_real_distance"]["median"])),
        ("Distance to closest real: min", lambda q: f(q["nearest_real_distance"]["min"])),
        ("Real to closest other real: median", lambda q: f(q["real_nearest_real_distance"]["median"])),
        ("Near copies", lambda q: q["near_copies"]),
        ("Diversity: mean pairwise cosine (synthetic)", lambda q: f(q["diversity"]["synthetic_mean_pairwise_cosine"])),
        ("Diversity: distinct-1 (synthetic)", lambda q: f(q["diversity"]["synthetic_distinct_1"])),
        ("Diversity: distinct-2 (synthetic)", lambda q: f(q["diversity"]["synthetic_distinct_2"])),
        ("Diversity: distinct-2 (real)", lambda q: f(q["diversity"]["real_distinct_2"])),
        ("Intervention match rate", lambda q: f(q["intervention_match_rate"])),
        ("Intervention checked (n)", lambda q: q.get("intervention_checked")),
        ("Leakage rate", lambda q: f(q["leakage_rate"])),
        ("Leakage checked (n)", lambda q: q.get("leakage_checked")),
    ]
    return [{"metric": name, **{src: fn(q) for src, q in results.items()}} for name, fn in rows]
