"""Geometry of embedding spaces: class separability and neighbourhood agreement.

Pure functions on arrays; no model, no files.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import silhouette_score


def silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette coefficient with cosine distance, in the full dimension."""
    k = len(np.unique(labels))
    if k < 2 or k >= len(labels):
        raise ValueError(f"silhouette needs at least two classes and fewer classes than items "
                         f"({k} classes, {len(labels)} items): give a set with several items per class")
    return float(silhouette_score(x, labels, metric="cosine"))


def class_means(x: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, dim) mean vector of each class (rows of classes without samples are NaN)."""
    out = np.full((n_classes, x.shape[1]), np.nan, dtype=np.float64)
    for c in range(n_classes):
        rows = x[labels == c]
        if len(rows):
            out[c] = rows.mean(axis=0)
    return out


def _neighbours(x: np.ndarray, k_max: int, include_self: bool) -> np.ndarray:
    """Indices of the k_max nearest points of each row by cosine distance, nearest first.

    Ties are broken by index, so the result is deterministic.
    """
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    dist = 1.0 - x @ x.T
    if not include_self:
        np.fill_diagonal(dist, np.inf)
    else:
        np.fill_diagonal(dist, -np.inf)  # a point is its own nearest neighbour
    order = np.lexsort((np.broadcast_to(np.arange(len(x)), dist.shape), dist), axis=1)
    return order[:, :k_max]


def topological_similarity(
    p: np.ndarray, q: np.ndarray, k_max: int = 10, include_self: bool = False
) -> dict:
    """Neighbourhood agreement of two point clouds with matched rows (CLAP-pitfalls, Sec. 3.2).

    N_k(p_i) is the set of indices of the k points nearest to p_i (cosine distance);
    S_k = mean_i |N_k(p_i) ∩ N_k(q_i)| / k, and S = max_k S_k over k = 1..k_max.

    The paper's text counts a point among its own neighbours; then S_1 = 1 for any two
    clouds and S >= 1/2, which contradicts the values it reports (0.44 for E_a vs
    E_t). By default the point itself is therefore left out (``include_self=False``),
    so S_k = 1 for identical neighbourhoods and about k / (n - 1) for unrelated ones;
    ``include_self=True`` follows the text literally (and k starts at 2). k never exceeds
    (n - 1) // 2: at k = n - 1 every point's neighbours are all the others, S_k = 1.
    Returns S, the k of the maximum, the whole curve and the chance curve.
    """
    if p.shape[0] != q.shape[0]:
        raise ValueError(f"point clouds differ in size: {p.shape[0]} vs {q.shape[0]}")
    n = p.shape[0]
    # beyond half the points two unrelated clouds share most neighbours by construction
    # (S_{n-1} = 1 always), so k stops at (n - 1) // 2
    k_max = min(k_max, (n - 1) // 2)
    ks = list(range(2 if include_self else 1, k_max + 1))
    if not ks:
        raise ValueError(f"too few points ({n}) for a neighbourhood comparison")
    np_, nq = _neighbours(p, k_max, include_self), _neighbours(q, k_max, include_self)
    curve = []
    for k in ks:
        overlap = [len(set(np_[i, :k]) & set(nq[i, :k])) for i in range(n)]
        curve.append(float(np.mean(overlap)) / k)
    best = int(np.argmax(curve))
    chance = [k / (n - 1) if not include_self else (1 + (k - 1) ** 2 / (n - 1)) / k for k in ks]
    return {"S": curve[best], "k": ks[best], "ks": ks, "S_k": curve, "chance_k": chance,
            "points": n, "include_self": include_self}


def tsne_2d(x: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE (scikit-learn, cosine metric, PCA initialisation) with a fixed seed."""
    from sklearn.manifold import TSNE

    perplexity = min(perplexity, max(2.0, (len(x) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca",
                random_state=seed).fit_transform(np.asarray(x, dtype=np.float64))


def alignment(x: np.ndarray, y: np.ndarray, alpha: float = 2.0) -> float:
    """Wang & Isola alignment: E ||f(x) - f(y)||^alpha over positive pairs (rows of x, y
    L2-normalised). Lower is better."""
    return float((np.linalg.norm(x - y, axis=1) ** alpha).mean())


def uniformity(x: np.ndarray, t: float = 2.0, max_points: int = 5000, seed: int = 0) -> float:
    """Wang & Isola uniformity: log E exp(-t ||f(x) - f(y)||^2) over distinct pairs of
    L2-normalised rows (a seeded sample of ``max_points`` rows for large sets). Lower is
    better."""
    if len(x) > max_points:
        x = x[np.random.default_rng(seed).choice(len(x), max_points, replace=False)]
    sq = np.clip(2.0 - 2.0 * (x @ x.T), 0.0, None)
    iu = np.triu_indices(len(x), k=1)
    v = -t * sq[iu]
    m = v.max()
    return float(m + np.log(np.exp(v - m).mean()))


def modality_gap(a: np.ndarray, b: np.ndarray) -> float:
    """The modality gap (Liang et al., 2022): the distance between the centroids of two
    sets of L2-normalised embeddings, ||mean(a) - mean(b)||."""
    return float(np.linalg.norm(a.mean(axis=0) - b.mean(axis=0)))
