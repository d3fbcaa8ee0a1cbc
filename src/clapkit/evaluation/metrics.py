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


def retrieval_metrics(sim: np.ndarray, targets: list[np.ndarray], ks=(1, 5, 10)) -> dict:
    ranks = ranks_of_targets(sim, targets)
    out = {f"R@{k}": float((ranks <= k).mean()) for k in ks}
    out["mAP@10"] = float(average_precision_at_k(sim, targets, 10).mean())
    # LAION-CLAP's: floor(median of the 0-based ranks) + 1, an integer (ranks 1,2,3,4 give 2)
    out["median_rank"] = int(np.floor(np.median(ranks - 1))) + 1
    out["mean_rank"] = float(ranks.mean())
    out["queries"] = int(sim.shape[0])
    return out


def audio_text_retrieval(audio_emb: np.ndarray, text_emb: np.ndarray, text_audio: np.ndarray) -> dict:
    """Both directions with several captions per audio.

    ``text_audio[j]`` is the audio row of caption j. Text-to-audio: each caption is a
    query with one relevant audio. Audio-to-text: each audio is a query whose relevant
    items are all its captions; it is correct at k if any of them is in the top k.
    """
    sim = audio_emb @ text_emb.T  # (audio, text)
    t2a = retrieval_metrics(sim.T, [np.array([a]) for a in text_audio])
    caps = [np.flatnonzero(text_audio == a) for a in range(audio_emb.shape[0])]
    if any(len(c) == 0 for c in caps):
        raise ValueError("every audio needs at least one caption")
    a2t = retrieval_metrics(sim, caps)
    return {"text_to_audio": t2a, "audio_to_text": a2t}


def pessimistic_predictions(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The predicted class of each row under the accuracy's tie rule: the top-scored
    class, except that when the true class ties for the top, the first *other* tied
    class is predicted (so a prediction is right exactly when its rank is 1)."""
    top = scores >= scores.max(axis=1, keepdims=True)
    wrong_top = top.copy()
    wrong_top[np.arange(len(labels)), labels] = False
    return np.where(wrong_top.any(axis=1), wrong_top.argmax(axis=1), labels)


def classification_metrics(scores: np.ndarray, labels: np.ndarray, class_names: list[str], ks=(1, 5)) -> dict:
    """Top-k accuracy (pessimistic ties), per-class accuracy and the confusion matrix."""
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
    return out
