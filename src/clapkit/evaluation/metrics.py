"""Retrieval and classification metrics on similarity matrices. No model, no files.

Ties are broken pessimistically: an item's rank is 1 + the number of candidates scored
*at least as high* other than itself, so a constant model cannot score by luck of order.
The confusion matrix follows the same rule (:func:`pessimistic_predictions`), so its
diagonal is the accuracy.
"""

from __future__ import annotations

import numpy as np


def ranks_of_targets(sim: np.ndarray, targets: list[np.ndarray]) -> np.ndarray:
    """For each query row, the 1-based rank of its best-ranked relevant column.

    ``sim`` is (queries, candidates); ``targets[q]`` the relevant candidate indices.
    """
    out = np.empty(sim.shape[0], dtype=np.int64)
    for q, cols in enumerate(targets):
        best = sim[q, cols].max()
        others = np.ones(sim.shape[1], dtype=bool)
        others[cols] = False
        # candidates that beat or tie the best relevant one; relevant ones don't count
        out[q] = 1 + int((sim[q, others] >= best).sum())
    return out


def average_precision_at_k(sim: np.ndarray, targets: list[np.ndarray], k: int) -> np.ndarray:
    """AP@k per query: mean over relevant items of precision at their rank (within k),
    divided by min(#relevant, k). Ties ranked pessimistically (relevant items last)."""
    aps = np.zeros(sim.shape[0])
    for q, cols in enumerate(targets):
        rel = np.zeros(sim.shape[1], dtype=bool)
        rel[cols] = True
        # sort by score desc; among ties, non-relevant first (pessimistic)
        order = np.lexsort((rel.astype(int), -sim[q]))[:k]
        hits = rel[order]
        if hits.any():
            precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
            aps[q] = (precision * hits).sum() / min(len(cols), k)
    return aps


def laion_audio_to_text_map10(sim: np.ndarray, targets: list[np.ndarray]) -> np.ndarray:
    """LAION-CLAP's audio-to-text "mAP@10" per audio, exactly as ``evaluate_clotho_audiocaps``
    (``src/laion_clap/training/train.py``, LAION-AI/CLAP 1fd4c37, lines 712-730) computes it:
    the 0-based positions of the audio's captions in its ranking, **in caption order** (its
    ``torch.where`` returns them so; its docstring says they are sorted, the code does not
    sort), those under 10 kept in that order, then ``sum(arange(1, m + 1) / (pos + 1))``
    divided by the number of captions (LAION-CLAP's 5). Captions out of rank order make it
    larger than the definition (:func:`average_precision_at_k`, which XinhaoMei's
    audio-text_retrieval and X-ARES compute), even above 1. Ties: another candidate tied with
    a caption ranks before it, and tied captions keep their caption order."""
    out = np.zeros(sim.shape[0])
    for q, cols in enumerate(targets):
        row = sim[q]
        others = np.ones(len(row), dtype=bool)
        others[cols] = False
        # each caption's 0-based position: after every other candidate scored at least as high
        # (pessimistic), after its own captions scored higher, and after those tied with it that
        # come first in caption order
        pos = np.array([int((row[others] >= row[c]).sum() + (row[cols] > row[c]).sum() + (row[cols[:j]] == row[c]).sum())
                        for j, c in enumerate(cols)])
        kept = pos[pos < 10]
        out[q] = float(np.sum(np.arange(1, len(kept) + 1) / (kept + 1))) / len(cols)
    return out


def _intervals(out: dict, ranks: np.ndarray, names: dict[str, int], bootstrap: int, seed: int,
               keep_ranks: bool, means: dict[str, np.ndarray] | None = None) -> dict:
    """``out`` with a bootstrap interval of each ``name: k`` hit rate (rank <= k) and of each
    ``means`` entry (a mean of per-query values) over the queries when ``bootstrap``
    resamples are asked for, and the per-query ``ranks`` when kept (an array: for the
    caller, not for JSON)."""
    if bootstrap:
        from .uncertainty import mean_interval

        out["ci"] = {name: mean_interval(ranks <= k, bootstrap, seed) for name, k in names.items()}
        out["ci"].update({name: mean_interval(v, bootstrap, seed) for name, v in (means or {}).items()})
    if keep_ranks:
        out["ranks"] = ranks
    return out


def retrieval_metrics(sim: np.ndarray, targets: list[np.ndarray], ks=(1, 5, 10), bootstrap: int = 0,
                      seed: int = 0, keep_ranks: bool = False, laion_map: bool = False) -> dict:
    """R@k, mAP@10 and ranks of each query's relevant candidates; with ``bootstrap``
    resamples of the queries, a 95% interval of each R@k and of the mAP@10 (``ci``);
    ``laion_map``: LAION-CLAP's audio-to-text variant too (``mAP@10_laion``,
    :func:`laion_audio_to_text_map10`)."""
    ranks = ranks_of_targets(sim, targets)
    aps = {"mAP@10": average_precision_at_k(sim, targets, 10)}
    if laion_map:
        aps["mAP@10_laion"] = laion_audio_to_text_map10(sim, targets)
    out = _intervals({f"R@{k}": float((ranks <= k).mean()) for k in ks}, ranks, {f"R@{k}": k for k in ks},
                     bootstrap, seed, keep_ranks, aps)
    out.update({name: float(v.mean()) for name, v in aps.items()})
    # LAION-CLAP's: floor(median of the 0-based ranks) + 1, an integer (ranks 1,2,3,4 give 2)
    out["median_rank"] = int(np.floor(np.median(ranks - 1))) + 1
    out["mean_rank"] = float(ranks.mean())
    out["queries"] = int(sim.shape[0])
    return out


def audio_text_retrieval(audio_emb: np.ndarray, text_emb: np.ndarray, text_audio: np.ndarray, bootstrap: int = 0,
                         seed: int = 0, keep_ranks: bool = False) -> dict:
    """Both directions with several captions per audio.

    ``text_audio[j]`` is the audio row of caption j. Text-to-audio: each caption is a
    query with one relevant audio. Audio-to-text: each audio is a query whose relevant
    items are all its captions (in the order they are given); it is correct at k if any of
    them is in the top k; its ``mAP@10`` is the definition and ``mAP@10_laion``
    LAION-CLAP's code (:func:`laion_audio_to_text_map10`).
    """
    sim = audio_emb @ text_emb.T  # (audio, text)
    t2a = retrieval_metrics(sim.T, [np.array([a]) for a in text_audio], bootstrap=bootstrap, seed=seed,
                            keep_ranks=keep_ranks)
    caps = [np.flatnonzero(text_audio == a) for a in range(audio_emb.shape[0])]
    if any(len(c) == 0 for c in caps):
        raise ValueError("every audio needs at least one caption")
    a2t = retrieval_metrics(sim, caps, bootstrap=bootstrap, seed=seed, keep_ranks=keep_ranks, laion_map=True)
    return {"text_to_audio": t2a, "audio_to_text": a2t}


def _relevant_ranks(row: np.ndarray, grades: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """The 1-based ranks of one query's relevant candidates (grade > 0) in ``row``, in rank
    order, and their grades. Ties pessimistic: a candidate tied with relevant ones ranks
    before them when its grade is lower (a non-relevant one first), so among tied items the
    order is by grade, lowest first."""
    cols = np.array([c for c, g in grades.items() if g > 0], dtype=np.int64)
    gains = np.array([grades[c] for c in cols], dtype=np.float64)
    if len(cols) == 0:
        return cols, gains
    rest = np.ones(len(row), dtype=bool)
    rest[cols] = False
    others = np.sort(row[rest])
    scores = row[cols]
    order = np.lexsort((cols, gains, -scores))  # score desc, then the lower grade first
    ahead = len(others) - np.searchsorted(others, scores[order], side="left")  # non-relevant scored at least as high
    return 1 + ahead + np.arange(len(cols)), gains[order]


def graded_retrieval_scores(sim: np.ndarray, relevance: list[dict[int, float]], ks=(1, 5, 10), map_ks=(10, 16),
                            ndcg_ks=(10,)) -> dict[str, np.ndarray]:
    """Per-query retrieval scores with several relevant candidates per query and graded
    relevance. ``sim`` is (queries, candidates); ``relevance[q]`` maps a candidate index to
    its grade (> 0 relevant; 0 or less judged not relevant, as unjudged ones). Arrays, one
    value per query:

    - ``mAP@k``: DCASE 2025 task 6's average precision (its baseline's
      ``average_precision_at_k``, as trec_eval's ``map_cut``): over the relevant candidates
      ranked within k, the precision at each one's rank, summed and divided by the number of
      relevant candidates (all of them, not min(relevant, k)); grades do not weigh it. With
      one relevant candidate it is :func:`average_precision_at_k`;
    - ``nDCG@k``: sum over ranks r <= k of grade / log2(r + 1), over the same sum for the
      grades sorted high to low (linear gain, log2 discount: trec_eval's ``ndcg_cut`` that
      MTEB runs through pytrec_eval, scikit-learn's ``ndcg_score`` where scores do not tie);
    - ``R@k``: the fraction of the query's relevant candidates ranked within k (trec_eval's
      ``recall``); ``hit@k``: 1 when any is (the one-relevant R@k);
    - ``rank``: the rank of the best-ranked relevant candidate, ``relevant``: their number.

    Ties are pessimistic (:func:`_relevant_ranks`): among tied candidates the lower grade
    ranks first, so a constant model scores the minimum; scikit-learn averages over ties and
    trec_eval orders tied documents by id, so the three agree only when scores do not tie. A
    query with no relevant candidate scores 0 (as trec_eval and scikit-learn give it)."""
    n, n_cand = sim.shape[0], sim.shape[1]
    out = {name: np.zeros(n) for name in ([f"mAP@{k}" for k in map_ks] + [f"nDCG@{k}" for k in ndcg_ks]
                                          + [f"R@{k}" for k in ks] + [f"hit@{k}" for k in ks])}
    out["rank"] = np.full(n, n_cand + 1, dtype=np.int64)
    out["relevant"] = np.zeros(n, dtype=np.int64)
    for q, grades in enumerate(relevance):
        ranks, gains = _relevant_ranks(np.asarray(sim[q]), grades)
        m = len(ranks)
        if m == 0:
            continue
        out["rank"][q], out["relevant"][q] = ranks[0], m
        for k in map_ks:
            within = ranks <= k  # a prefix: the ranks are increasing
            out[f"mAP@{k}"][q] = float(np.sum(np.arange(1, m + 1)[within] / ranks[within])) / m
        ideal = np.sort(gains)[::-1]
        for k in ndcg_ks:
            within = ranks <= k
            dcg = float(np.sum(gains[within] / np.log2(ranks[within] + 1)))
            top = ideal[:k]
            out[f"nDCG@{k}"][q] = dcg / float(np.sum(top / np.log2(np.arange(2, len(top) + 2))))
        for k in ks:
            found = int((ranks <= k).sum())
            out[f"R@{k}"][q], out[f"hit@{k}"][q] = found / m, float(found > 0)
    return out


def graded_retrieval_metrics(sim: np.ndarray, relevance: list[dict[int, float]], ks=(1, 5, 10), map_ks=(16, 10),
                             ndcg_ks=(10,), bootstrap: int = 0, seed: int = 0, keep_ranks: bool = False) -> dict:
    """:func:`graded_retrieval_scores` averaged over the queries, as :func:`retrieval_metrics`
    reports them: ``mAP@k``, ``nDCG@k``, ``R@k`` (over all relevant candidates), ``hit@k``
    (any relevant one in the top k), ``queries``, ``relevant_per_query`` and
    ``queries_without_relevant`` (scored 0); with ``bootstrap`` resamples of the queries a 95%
    interval of each (``ci``); ``keep_ranks``: the best relevant rank of each query
    (``ranks``) and every per-query array (``per_query``), for the caller. With one relevant
    candidate of grade 1 per query, R@k, ``mAP@10`` and their intervals are
    :func:`retrieval_metrics`'."""
    per = graded_retrieval_scores(sim, relevance, ks, map_ks, ndcg_ks)
    means = {k: v for k, v in per.items() if k not in ("rank", "relevant")}
    out = _intervals({name: float(v.mean()) for name, v in means.items()}, per["rank"], {}, bootstrap, seed,
                     keep_ranks, means)
    out.update(queries=int(sim.shape[0]), relevant_per_query=float(per["relevant"].mean()) if len(relevance) else 0.0,
               queries_without_relevant=int((per["relevant"] == 0).sum()))
    if keep_ranks:
        out["per_query"] = per
    return out


def pessimistic_predictions(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The predicted class of each row under the accuracy's tie rule: the top-scored
    class, except that when the true class ties for the top, the first *other* tied
    class is predicted (so a prediction is right exactly when its rank is 1)."""
    top = scores >= scores.max(axis=1, keepdims=True)
    wrong_top = top.copy()
    wrong_top[np.arange(len(labels)), labels] = False
    return np.where(wrong_top.any(axis=1), wrong_top.argmax(axis=1), labels)


def classification_metrics(scores: np.ndarray, labels: np.ndarray, class_names: list[str], ks=(1, 5), bootstrap: int = 0,
                           seed: int = 0, keep_ranks: bool = False) -> dict:
    """Top-k accuracy (pessimistic ties), per-class and mean-class accuracy and the
    confusion matrix; with ``bootstrap`` resamples of the items, a 95% interval of each
    top-k and of the mean-class accuracy (``ci``)."""
    n_classes = scores.shape[1]
    ranks = ranks_of_targets(scores, [np.array([y]) for y in labels])
    pred = pessimistic_predictions(scores, labels)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    per_class = {}
    for c in range(n_classes):
        n = int((labels == c).sum())
        if n:
            per_class[class_names[c]] = {"accuracy": float((ranks[labels == c] == 1).mean()), "clips": n}
    out = {f"top{k}": float((ranks <= k).mean()) for k in ks if k <= n_classes}
    out.update(
        accuracy=out["top1"],
        mean_class_accuracy=float(np.mean([v["accuracy"] for v in per_class.values()])),
        clips=int(len(labels)),
        classes=int(n_classes),
        chance=1.0 / n_classes,
        per_class=per_class,
        confusion=confusion.tolist(),
    )
    out = _intervals(out, ranks, {f"top{k}": k for k in ks if k <= n_classes}, bootstrap, seed, keep_ranks)
    if bootstrap:
        from .uncertainty import weighted_interval

        out["ci"]["mean_class_accuracy"] = weighted_interval(
            lambda w: mean_class_accuracy(ranks == 1, labels, w), len(labels), bootstrap, seed)
    return out


def mean_class_accuracy(correct: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The mean over classes of each class's accuracy (scikit-learn's
    ``balanced_accuracy_score``), each item counted ``weights[i]`` times; a class with no
    (weighted) item is left out."""
    w = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=np.float64)
    n = np.bincount(labels, weights=w)
    hit = np.bincount(labels, weights=w * correct)
    return float(np.mean(hit[n > 0] / n[n > 0]))


def per_fold(correct: np.ndarray, folds) -> dict | None:
    """The accuracy of each official fold and their mean: UrbanSound8K's protocol as HEAR
    (``aggregate_test_results``) and X-ARES (``np.mean`` over folds) report it, which
    differs from the pooled accuracy when the folds differ in size (UrbanSound8K's: 806 to
    990 clips). None when the items have no folds, or one."""
    if folds is None or any(f is None for f in folds) or len(set(folds)) < 2:
        return None
    f = np.asarray(folds)
    scores = {int(k): float(np.mean(correct[f == k])) for k in sorted(set(f.tolist()))}
    return {"folds": scores, "mean": float(np.mean(list(scores.values()))),
            "std": float(np.std(list(scores.values()), ddof=1))}


def fold_mean_interval(correct: np.ndarray, folds, bootstrap: int, seed: int) -> tuple[float, float]:
    """The bootstrap interval of :func:`per_fold`'s mean: items resampled, each fold's
    accuracy weighted by the draws (a fold left empty by a draw is left out of that mean)."""
    from .uncertainty import weighted_interval

    fold = np.unique(np.asarray(folds), return_inverse=True)[1]  # the folds as 0..k-1
    correct = np.asarray(correct, dtype=np.float64)
    # the mean of the folds' accuracies is the mean-class accuracy with the folds as the classes
    return weighted_interval(lambda w: mean_class_accuracy(correct, fold, w), len(correct), bootstrap, seed)


def weighted_average_precision(scores: np.ndarray, targets: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-class average precision with scikit-learn's ``average_precision_score``
    semantics (tied scores form one threshold; AP = sum over thresholds of the recall
    step times the precision), each item counted ``weights[i]`` times; NaN for a class
    with no (weighted) positive. ``scores``, ``targets``: (items, classes)."""
    n, c = scores.shape
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(-scores, axis=0, kind="mergesort")  # (n, c)
    s = np.take_along_axis(scores, order, axis=0)
    y = np.take_along_axis(targets.astype(np.float64), order, axis=0) * w[order]
    tps, seen = np.cumsum(y, axis=0), np.cumsum(w[order], axis=0)
    end = np.ones((n, c), dtype=bool)  # the last item of each group of tied scores
    end[:-1] = s[:-1] != s[1:]
    tp_end = np.where(end, tps, 0.0)
    before = np.maximum.accumulate(np.vstack([np.zeros((1, c)), tp_end[:-1]]), axis=0)
    positives = tps[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(seen > 0, tps / seen, 0.0)
        ap = (np.where(end, tps - before, 0.0) * precision).sum(axis=0) / positives
    return np.where(positives > 0, ap, np.nan)


def multilabel_metrics(scores: np.ndarray, targets: np.ndarray, class_names: list[str]) -> dict:
    """Multi-label scores against (items, classes) bool targets: macro mAP (per-class AP,
    :func:`weighted_average_precision`, averaged over the classes with a positive item;
    scikit-learn's, HEAR's and X-ARES's macro average precision), ``mAP_clip_benchmark``
    (CLIP_benchmark's ``average_precision_per_class`` convention: a class without positives
    counts as AP 0 in the mean), mAUC over the classes with a positive and a negative item
    (scikit-learn's ``roc_auc_score``), d-prime two ways: ``d_prime`` =
    ``sqrt(2) * Phi^-1(mAUC)`` (PANNs' and AST's convention, as AudioSet results are
    reported) and ``d_prime_hear`` = the mean over classes of ``sqrt(2) * Phi^-1(AUC_c)``
    (HEAR's ``heareval/score.py``), and LRAP (scikit-learn's
    ``label_ranking_average_precision_score``). Classes with no positive item are listed
    and left out of the other means."""
    from scipy.stats import norm
    from sklearn.metrics import label_ranking_average_precision_score, roc_auc_score

    targets = targets.astype(bool)
    ap = weighted_average_precision(scores, targets)
    has_pos, has_neg = targets.any(axis=0), (~targets).any(axis=0)
    aucs = {c: float(roc_auc_score(targets[:, c], scores[:, c])) for c in range(len(class_names))
            if has_pos[c] and has_neg[c]}
    mauc = float(np.mean(list(aucs.values()))) if aucs else float("nan")
    return {
        "mAP": float(np.nanmean(ap)) if has_pos.any() else float("nan"),
        "mAP_clip_benchmark": float(np.mean(np.nan_to_num(ap, nan=0.0))),
        "mAUC": mauc,
        "d_prime": float(np.sqrt(2.0) * norm.ppf(mauc)) if aucs else float("nan"),
        "d_prime_hear": float(np.mean(np.sqrt(2.0) * norm.ppf(list(aucs.values())))) if aucs else float("nan"),
        "lrap": float(label_ranking_average_precision_score(targets, scores)),
        "per_class": {name: {"AP": None if np.isnan(ap[c]) else float(ap[c]), "AUC": aucs.get(c),
                             "positives": int(targets[:, c].sum())} for c, name in enumerate(class_names)},
        "classes_without_positives": [name for c, name in enumerate(class_names) if not has_pos[c]],
        "classes_in_mean": int(has_pos.sum()),
        "clips": int(len(scores)),
        "classes": int(len(class_names)),
        "labels_per_clip": float(targets.sum(axis=1).mean()),
    }
