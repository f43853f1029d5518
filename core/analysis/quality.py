"""Quality analysis of synthetic trials against real ones (paper section 4.2, and more).

- Cosine-similarity histograms: real-real, synthetic-synthetic, real-synthetic, N sampled pairs each.
- t-SNE (paper: perplexity 30, 1000 iterations) and UMAP projections of real + synthetic embeddings.
- Quality metrics per synthetic set: detection AUC (fidelity), distance to the closest real record
  and near copies (privacy), mean pairwise cosine and distinct-n (diversity), intervention-match
  and leakage rates (from the validation JSON).

Everything is seeded; results are stored with their parameters (core.store.analysis) and reused
when asked again with the same parameters.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from core.jobs import background
from core.serialize import classifier_text

StageProgress = Callable[[str, float], None]  # (stage text, fraction 0..1 of that stage)

REAL_SCOPES = ("interventions", "all")
PROJECTIONS = ("tsne", "umap")
RESULT_VERSION = 1  # bump when a metric's definition changes, so old stored results are not reused


class AnalysisError(RuntimeError):
    """The analysis cannot run on this store as asked (no synthetic trials, unknown set, ...)."""


@dataclass(frozen=True)
class AnalysisParams:
    """Everything that determines a result; its hash is the stored result's key."""

    synthetic_source: str | None = None   # None: every synthetic set together
    real_scope: str = "interventions"     # real trials of the set's interventions (paper), or "all"
    pairs: int = 10_000
    seed: int = 0
    encoder: str = "minilm"
    max_real: int = 5_000                 # sample caps, for speed (seeded)
    max_synthetic: int = 5_000
    copy_threshold: float = 0.05          # cosine distance at or below which a synthetic trial is a near copy
    scrub_mode: str = "strict"
    cv_folds: int = 5

    def __post_init__(self) -> None:
        if self.real_scope not in REAL_SCOPES:
            raise ValueError(f"real_scope must be one of {REAL_SCOPES}, not {self.real_scope!r}")
        if self.pairs < 1:
            raise ValueError(f"pairs must be at least 1, not {self.pairs}")
        if not 0 <= self.copy_threshold <= 2:
            raise ValueError(f"copy_threshold is a cosine distance in [0, 2], not {self.copy_threshold}")

    def key(self, kind: str, **extra: Any) -> str:
        body = json.dumps({"kind": kind, "v": RESULT_VERSION, **asdict(self), **extra}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:32]


# ---------------- metrics on embeddings (pure functions: rows are L2-normalized) ----------------

def sample_pairs(n_a: int, n_b: int | None, n_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random index pairs. Within one set (`n_b` None) never a trial with itself."""
    if n_b is None:
        if n_a < 2:
            return np.zeros(0, int), np.zeros(0, int)
        i = rng.integers(0, n_a, n_pairs)
        j = rng.integers(0, n_a - 1, n_pairs)
        j = j + (j >= i)  # skip i itself, uniformly over the others
        return i, j
    if n_a == 0 or n_b == 0:
        return np.zeros(0, int), np.zeros(0, int)
    return rng.integers(0, n_a, n_pairs), rng.integers(0, n_b, n_pairs)


def pair_cosines(a: np.ndarray, b: np.ndarray | None, n_pairs: int, rng: np.random.Generator) -> np.ndarray:
    i, j = sample_pairs(len(a), None if b is None else len(b), n_pairs, rng)
    other = a if b is None else b
    return np.einsum("ij,ij->i", a[i], other[j]) if len(i) else np.zeros(0, np.float32)


def summary(values: np.ndarray) -> dict[str, float | int | None]:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"n": 0, "mean": None, "sd": None, "min": None, "median": None, "max": None}
    return {"n": int(v.size), "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "median": float(np.median(v)), "max": float(v.max())}


def nearest(query: np.ndarray, ref: np.ndarray, exclude_self: bool = False, chunk: int = 2048
            ) -> tuple[np.ndarray, np.ndarray]:
    """For each query row: cosine distance (1 - cos) to its closest `ref` row, and that row's index."""
    dist = np.empty(len(query), np.float64)
    idx = np.empty(len(query), np.int64)
    for s in range(0, len(query), chunk):
        sims = query[s:s + chunk] @ ref.T
        if exclude_self:
            r = np.arange(s, min(s + chunk, len(query)))
            sims[r - s, r] = -np.inf
        idx[s:s + chunk] = sims.argmax(1)
        dist[s:s + chunk] = 1.0 - sims[np.arange(len(sims)), idx[s:s + chunk]]
    return np.clip(dist, 0.0, 2.0), idx


def copy_groups(real: np.ndarray, synth: np.ndarray, threshold: float) -> np.ndarray:
    """Cross-validation groups: a synthetic near copy shares its real twin's group.

    Without this, a held-out trial's twin sits in the training folds with the other label and the
    classifier is scored on memorized pairs (identical sets come out far below 0.5)."""
    groups = np.arange(len(real) + len(synth))
    if len(real) and len(synth):
        d, i = nearest(synth, real)
        twin = d <= threshold
        groups[len(real):][twin] = i[twin]
    return groups


def detection_auc(real: np.ndarray, synth: np.ndarray, seed: int = 0, folds: int = 5,
                  copy_threshold: float = 0.05) -> float | None:
    """Cross-validated ROC AUC of a classifier telling synthetic (1) from real (0) embeddings.

    0.5: indistinguishable; 1.0: every synthetic trial is recognisable as such. None when either
    side has fewer trials than folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold

    if min(len(real), len(synth)) < max(2, folds):
        return None
    x = np.vstack([real, synth]).astype(np.float64)
    y = np.r_[np.zeros(len(real)), np.ones(len(synth))]
    groups = copy_groups(real, synth, copy_threshold)
    scores = np.zeros(len(y))
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in cv.split(x, y, groups):
        if len(set(y[train])) < 2:
            scores[test] = 0.5
            continue
        clf = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced")
        clf.fit(x[train], y[train])
        scores[test] = clf.predict_proba(x[test])[:, 1]
    return float(roc_auc_score(y, scores))


_WORD = re.compile(r"[a-z0-9]+")


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    """Distinct n-grams / all n-grams over the texts (word level, lower-cased); 1.0 = no repetition."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for t in texts:
        words = _WORD.findall(t.lower())
        grams = [tuple(words[k:k + n]) for k in range(len(words) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else None


def validation_rates(rows: Sequence[dict[str, Any]]) -> dict[str, float | int | None]:
    """Intervention-match and leakage rates from each synthetic trial's validation JSON.

    A check whose name mentions "intervention" is the intervention match (ok = matched; core.pipeline.validation
    calls it "intervention"); one that mentions "leak" ("label_leak") is the leakage check (not ok = the text gives the outcome away). Rows without
    an intervention check fall back to the `intervention_match` column."""
    match, leak = [], []
    for r in rows:
        checks = r.get("validation") or {}
        m = [bool(v.get("ok")) for k, v in checks.items() if "intervention" in k.lower() and isinstance(v, dict)]
        lk = [not bool(v.get("ok")) for k, v in checks.items() if "leak" in k.lower() and isinstance(v, dict)]
        if m:
            match.append(all(m))
        elif r.get("intervention_match") is not None:
            match.append(bool(r["intervention_match"]))
        if lk:
            leak.append(any(lk))
    return {
        "intervention_match_rate": float(np.mean(match)) if match else None,
        "intervention_checked": len(match),
        "leakage_rate": float(np.mean(leak)) if leak else None,
        "leakage_checked": len(leak),
    }


def project(x: np.ndarray, method: str, seed: int = 0, perplexity: float = 30.0, max_iter: int = 1000,
            n_neighbors: int = 15, min_dist: float = 0.1, n_jobs: int | None = None) -> np.ndarray:
    """2-D coordinates: t-SNE (sklearn; `max_iter` is the iteration count, `n_iter` in old
    versions) or UMAP. Cosine metric on the embeddings, as the histograms."""
    n = len(x)
    if n < 3:
        return np.zeros((n, 2))
    jobs = n_jobs or min(2, os.cpu_count() or 1)
    if method == "tsne":
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE

        # PCA to 50 dims first (standard t-SNE practice): faster neighbour search, same picture.
        xx = PCA(n_components=min(50, n, x.shape[1]), random_state=seed).fit_transform(x) if x.shape[1] > 50 else x
        perp = min(perplexity, max(1.0, (n - 1) / 3))  # sklearn requires perplexity < n
        return TSNE(n_components=2, perplexity=perp, max_iter=max_iter, init="pca", learning_rate="auto",
                    random_state=seed, n_jobs=jobs).fit_transform(xx)
    if method == "umap":
        import umap

        return umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, n - 1), min_dist=min_dist,
                         metric="cosine", random_state=seed, n_jobs=1 if seed is not None else jobs,
                         init="spectral" if n > n_neighbors + 1 else "random").fit_transform(x)
    raise ValueError(f"projection must be one of {PROJECTIONS}, not {method!r}")


# ---------------- loading what to compare ----------------

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


def _cap(rows: list, cap: int, rng: np.random.Generator) -> list:
    if cap and len(rows) > cap:
        keep = np.sort(rng.choice(len(rows), cap, replace=False))
        return [rows[i] for i in keep]
    return rows


def load_corpus(db: str | os.PathLike, params: AnalysisParams, progress: StageProgress | None = None) -> Corpus:
    from core.analysis.embeddings import embed_texts, resolve_encoder
    from core.store import analysis as store
    from core.store import connect

    rng = np.random.default_rng(params.seed)
    with connect(db) as con:
        sources = dict(store.synthetic_sources(con))
        if not sources:
            raise AnalysisError(
                f"{db}: no synthetic trials in the store (table synthetic_trials is empty): "
                "generate some (`python -m core generate`) or import a set (`python -m core import-synthetic`)")
        if params.synthetic_source is not None and params.synthetic_source not in sources:
            raise AnalysisError(
                f"{db}: no synthetic set named {params.synthetic_source!r} (--synthetic-source); "
                f"sets in the store: {', '.join(sorted(sources))}")
        synth = store.synthetic_for_analysis(con, params.synthetic_source)
        interventions = sorted({s["intended_intervention"] for s in synth if s.get("intended_intervention")})
        real = store.real_for_analysis(con, interventions if params.real_scope == "interventions" else None)
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
                  interventions=interventions)


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
    # The sampled similarities themselves (4 decimals) are kept, so the page draws real histograms.
    cosine = {k: {**summary(v), "values": np.round(v.astype(np.float64), 4).tolist()} for k, v in sims.items()}
    step("Detection classifier (cross-validated)", 0.3)
    auc = detection_auc(c.real_emb, c.synth_emb, seed=params.seed, folds=params.cv_folds,
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
        "encoder": c.encoder,
        "encoder_note": c.note,
        "n_real": len(c.real), "n_synthetic": len(c.synth),
        "interventions": c.interventions,
        "cosine": cosine,
        "detection_auc": auc,
        "nearest_real_distance": summary(d),
        "real_nearest_real_distance": summary(real_d),  # reference: how close real trials are to each other
        "copy_threshold": params.copy_threshold,
        "near_copies": len(copies),
        "near_copy_rate": len(copies) / len(c.synth) if len(c.synth) else None,
        "near_copy_examples": copies[:50],
        "diversity": {
            "synthetic_mean_pairwise_cosine": cosine["synthetic-synthetic"]["mean"],
            "real_mean_pairwise_cosine": cosine["real-real"]["mean"],
            "synthetic_distinct_1": distinct_n(c.synth_texts, 1),
            "synthetic_distinct_2": distinct_n(c.synth_texts, 2),
            "real_distinct_1": distinct_n(c.real_texts, 1),
            "real_distinct_2": distinct_n(c.real_texts, 2),
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
            "perplexity": perplexity if method == "tsne" else None, "max_iter": max_iter if method == "tsne" else None}


# ---------------- stored, parameterised runs ----------------

def _stored(db, key: str) -> dict[str, Any] | None:
    from core.store import analysis as store
    from core.store import connect

    with connect(db) as con:
        row = store.get_result(con, key)
    return row["result"] if row else None


def _save(db, key: str, kind: str, params: AnalysisParams, extra: dict, result: dict, t0: float) -> None:
    from core.store import analysis as store
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
        "encoder": quality["encoder"],
        "encoder_note": quality["encoder_note"],
        "n_real": quality["n_real"], "n_synthetic": quality["n_synthetic"],
        "cosine": {k: {s: v[s] for s in ("n", "mean", "sd", "min", "median", "max")}
                   for k, v in quality["cosine"].items()},
        "detection_auc": quality["detection_auc"],
        "nearest_real_distance": quality["nearest_real_distance"],
        "real_nearest_real_distance": quality["real_nearest_real_distance"],
        "copy_threshold": quality["copy_threshold"],
        "near_copies": quality["near_copies"],
        "near_copy_rate": quality["near_copy_rate"],
        "diversity": quality["diversity"],
        "intervention_match_rate": quality["intervention_match_rate"],
        "leakage_rate": quality["leakage_rate"],
    }


def stored(db: str | os.PathLike, params: AnalysisParams, projections: Sequence[str] = ()) -> dict[str, Any]:
    """What the store holds for these parameters: {"quality": ... or None, "projections": {m: ...}}."""
    from core.store import analysis as store
    from core.store import connect

    with connect(db, read_only=True, wait_s=10) as con:
        q = store.get_result(con, params.key("quality"))
        proj = {m: store.get_result(con, params.key("projection", method=m)) for m in projections}
    return {"quality": q["result"] if q else None,
            "quality_row": {k: v for k, v in (q or {}).items() if k != "result"} or None,
            "projections": {m: r["result"] for m, r in proj.items() if r}}


# ---------------- figures (plotly) ----------------

PAIR_COLORS = {"real-real": "#1f77b4", "synthetic-synthetic": "#ff7f0e", "real-synthetic": "#2ca02c"}


def histogram_figure(quality: dict[str, Any]):
    """Overlaid histograms of the sampled cosine similarities, mean and sd in the legend."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, stats in quality["cosine"].items():
        if not stats.get("n"):
            continue
        fig.add_trace(go.Histogram(
            x=stats["values"], name=f"{name} (mean {stats['mean']:.3f}, sd {stats['sd']:.3f})",
            xbins=dict(start=-0.2, end=1.0, size=0.02), opacity=0.55, marker_color=PAIR_COLORS.get(name)))
        fig.add_vline(x=stats["mean"], line_dash="dash", line_color=PAIR_COLORS.get(name))
    fig.update_layout(barmode="overlay", xaxis_title="cosine similarity", yaxis_title="pairs",
                      legend=dict(orientation="h", y=1.12), margin=dict(t=40, b=10))
    return fig


COLOR_BY = {"Real vs synthetic": "kind", "Label": "label", "Intervention": "intervention",
            "Synthetic source": "source", "Validation status": "validation_status"}


def scatter_figure(points: list[dict[str, Any]], color_by: str = "kind", title: str = ""):
    """Interactive map: one trace per colour value; real trials are circles, synthetic ones diamonds.
    Hover shows the NCT id, title and intervention; customdata carries the point's id for selection."""
    import plotly.graph_objects as go

    groups: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        groups.setdefault(str(p.get(color_by) or "unknown"), []).append(p)
    fig = go.Figure()
    for value, pts in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        # WebGL only where SVG gets slow: SVG works everywhere (also without a GPU).
        trace = go.Scattergl if len(points) > 3000 else go.Scatter
        fig.add_trace(trace(
            x=[p["x"] for p in pts], y=[p["y"] for p in pts], mode="markers", name=f"{value} ({len(pts)})",
            marker=dict(size=7, opacity=0.8,
                        symbol=["circle" if p["kind"] == "real" else "diamond" for p in pts]),
            customdata=[[p["id"], p["nct_id"] or p["id"], (p["title"] or "")[:90], p["intervention"] or "-",
                         p["kind"], p["label"]] for p in pts],
            hovertemplate=("<b>%{customdata[1]}</b> (%{customdata[4]})<br>%{customdata[2]}<br>"
                           "Intervention: %{customdata[3]}<br>Label: %{customdata[5]}<extra></extra>"),
        ))
    fig.update_layout(title=title, legend_title_text=color_by.replace("_", " "), height=620,
                      dragmode="lasso", clickmode="event+select", margin=dict(t=40 if title else 10, b=10),
                      xaxis=dict(showticklabels=False, title=""), yaxis=dict(showticklabels=False, title=""))
    return fig


def quality_table(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows = metrics, one column per synthetic set (side by side)."""
    def f(v, digits=3):
        return None if v is None else round(float(v), digits)

    rows = [
        ("Real trials compared", lambda q: q["n_real"]),
        ("Synthetic trials", lambda q: q["n_synthetic"]),
        ("Detection AUC (0.5 = indistinguishable)", lambda q: f(q["detection_auc"])),
        ("Cosine real-real mean", lambda q: f(q["cosine"]["real-real"]["mean"])),
        ("Cosine synthetic-synthetic mean", lambda q: f(q["cosine"]["synthetic-synthetic"]["mean"])),
        ("Cosine real-synthetic mean", lambda q: f(q["cosine"]["real-synthetic"]["mean"])),
        ("Distance to closest real: median", lambda q: f(q["nearest_real_distance"]["median"])),
        ("Distance to closest real: min", lambda q: f(q["nearest_real_distance"]["min"])),
        ("Real to closest other real: median", lambda q: f(q["real_nearest_real_distance"]["median"])),
        ("Near copies", lambda q: q["near_copies"]),
        ("Diversity: mean pairwise cosine (synthetic)", lambda q: f(q["diversity"]["synthetic_mean_pairwise_cosine"])),
        ("Diversity: distinct-1 (synthetic)", lambda q: f(q["diversity"]["synthetic_distinct_1"])),
        ("Diversity: distinct-2 (synthetic)", lambda q: f(q["diversity"]["synthetic_distinct_2"])),
        ("Diversity: distinct-2 (real)", lambda q: f(q["diversity"]["real_distinct_2"])),
        ("Intervention match rate", lambda q: f(q["intervention_match_rate"])),
        ("Leakage rate", lambda q: f(q["leakage_rate"])),
    ]
    return [{"metric": name, **{src: fn(q) for src, q in results.items()}} for name, fn in rows]


def synthetic_sets(db: str | os.PathLike) -> list[tuple[str, int]]:
    """(source, count) of every synthetic set in the store."""
    from core.store import analysis as store
    from core.store import connect

    with connect(db, read_only=True, wait_s=10) as con:
        return store.synthetic_sources(con)


def records_for(db: str | os.PathLike, real_ids: Sequence[str], synthetic_ids: Sequence[str]
                ) -> tuple[dict[str, dict], dict[str, dict]]:
    """Real records by NCT id and synthetic rows by id (what a selection on the map shows)."""
    from core.store import analysis as store
    from core.store import connect
    from core.store.trials import get_records

    with connect(db, read_only=True, wait_s=10) as con:
        return get_records(con, list(real_ids)), store.synthetic_by_ids(con, list(synthetic_ids))
