"""Metrics on embeddings (pure functions; rows are L2-normalized): sampled pair similarities,
nearest-record distances, the detection classifier, diversity and validation rates, projections.

Every statistic carries its n: the number of pairs, trials or checks it was computed from."""
from __future__ import annotations

import os
import re
from typing import Any, Sequence

import numpy as np

PROJECTIONS = ("tsne", "umap")
MIN_DETECTION_CLASS = 30   # below this many trials on either side, the detection AUC comes with a warning
BOOTSTRAP = 1000           # resamples for the detection AUC's confidence interval
CI_LEVEL = 0.95


def distinct_pair_count(n_a: int, n_b: int | None) -> int:
    """How many different pairs exist: n(n-1)/2 within one set (no trial with itself), n_a*n_b across."""
    return n_a * (n_a - 1) // 2 if n_b is None else n_a * n_b


def sample_pairs(n_a: int, n_b: int | None, n_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs drawn without replacement from the distinct pairs (seeded).

    Within one set (`n_b` None) a pair is unordered and never a trial with itself. When fewer
    distinct pairs exist than asked for, every one of them is returned (the caller reports the true n)."""
    total = distinct_pair_count(n_a, n_b)
    if total <= 0 or n_pairs <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if n_pairs >= total:
        flat = np.arange(total, dtype=np.int64)
    else:
        flat = np.sort(rng.choice(total, size=n_pairs, replace=False).astype(np.int64))
    if n_b is not None:
        return flat // n_b, flat % n_b
    # Unrank flat indices of the strict upper triangle, row by row: row i holds pairs (i, i+1..n-1).
    rows = np.arange(n_a, dtype=np.int64)
    starts = rows * n_a - rows * (rows + 1) // 2
    i = np.searchsorted(starts, flat, side="right") - 1
    j = flat - starts[i] + i + 1
    return i, j


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


def detection_test(real: np.ndarray, synth: np.ndarray, seed: int = 0, folds: int = 5,
                   copy_threshold: float = 0.05, bootstrap: int = BOOTSTRAP,
                   min_class: int = MIN_DETECTION_CLASS) -> dict[str, Any]:
    """Cross-validated ROC AUC of a classifier telling synthetic (1) from real (0) embeddings, with
    its class sizes, a bootstrap confidence interval over the out-of-fold scores (class-stratified
    resamples) and a warning when either class is below `min_class`.

    AUC 0.5: indistinguishable; 1.0: every synthetic trial is recognisable as such. `auc` is None
    when either side has fewer trials than folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold

    n_real, n_synth = len(real), len(synth)
    out: dict[str, Any] = {"auc": None, "n_real": n_real, "n_synthetic": n_synth, "ci_low": None, "ci_high": None,
                           "ci_level": CI_LEVEL, "ci_method": f"bootstrap of out-of-fold scores ({bootstrap} resamples)",
                           "folds": folds, "min_per_class": min_class, "warning": None}
    if min(n_real, n_synth) < min_class:
        out["warning"] = (f"only {n_real} real vs {n_synth} synthetic trials: below {min_class} per class the "
                          "detection AUC is unreliable (see its confidence interval)")
    if min(n_real, n_synth) < max(2, folds):
        out["warning"] = (f"only {n_real} real vs {n_synth} synthetic trials: at least {max(2, folds)} of each are "
                          "needed for the cross-validated detection AUC")
        return out
    x = np.vstack([real, synth]).astype(np.float64)
    y = np.r_[np.zeros(n_real), np.ones(n_synth)]
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
    out["auc"] = float(roc_auc_score(y, scores))
    if bootstrap:
        rng = np.random.default_rng(seed)
        pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        aucs = np.empty(bootstrap)
        for b in range(bootstrap):
            idx = np.r_[rng.choice(neg, len(neg)), rng.choice(pos, len(pos))]
            aucs[b] = roc_auc_score(y[idx], scores[idx])
        tail = (1 - CI_LEVEL) / 2
        out["ci_low"], out["ci_high"] = (float(v) for v in np.quantile(aucs, [tail, 1 - tail]))
    return out


def detection_auc(real: np.ndarray, synth: np.ndarray, seed: int = 0, folds: int = 5,
                  copy_threshold: float = 0.05) -> float | None:
    """The detection AUC alone (see detection_test); None when either side has fewer trials than folds."""
    return detection_test(real, synth, seed, folds, copy_threshold, bootstrap=0)["auc"]


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
    calls it "intervention"); one that mentions "leak" ("label_leak") is the leakage check (not ok = the text
    gives the outcome away). Rows without an intervention check fall back to the `intervention_match` column."""
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
