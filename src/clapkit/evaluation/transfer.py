"""Transfer evaluation of sentence embeddings: a linear probe with k-fold cross-validation.

As SentEval's transfer tasks: the encoder is frozen, a logistic-regression classifier
(scikit-learn, features standardised, L2 penalty ``C``) is trained on the embeddings of
k - 1 folds and scored on the held-out fold; folds are stratified and seeded. Reported:
mean and standard deviation of the fold accuracies x 100, each fold's accuracy, and the
majority-class rate as the chance level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..data.files import Skipped
from ..data.senteval import TransferTask, load_senteval
from ..data.text import TextClassificationSet, load_text_classification
from ..errors import ConfigError, DataError


def rare_class(y: np.ndarray, folds: int) -> int | None:
    """The first class with fewer examples than ``folds`` (stratified folds need one each), or None."""
    counts = np.bincount(np.asarray(y))
    rare = np.flatnonzero((counts > 0) & (counts < folds))
    return int(rare[0]) if len(rare) else None


def linear_probe(x: np.ndarray, y: np.ndarray, folds: int = 10, seed: int = 0, c: float = 1.0) -> dict:
    y = np.asarray(y)
    counts = np.bincount(y)
    rare = rare_class(y, folds)
    if rare is not None:
        raise ValueError(f"class {rare} has {counts[rare]} example(s), fewer than the {folds} folds; lower --folds")
    accs = []
    for train, test in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
        clf.fit(x[train], y[train])
        accs.append(float((clf.predict(x[test]) == y[test]).mean() * 100))
    return {"accuracy": float(np.mean(accs)), "std": float(np.std(accs)), "folds": accs, "n": int(len(y)),
            "classes": int((counts > 0).sum()), "majority": float(counts.max() / len(y) * 100)}


# --- SentEval's protocol (its scikit-learn path) ----------------------------------------
# Logistic regression on the raw embeddings (no scaling), its L2 strength C chosen from
# SentEval's grids: 2^-2 .. 2^3 by inner k-fold (MR, CR, SUBJ, MPQA) or on dev (SST2),
# 2^-1 .. 2^5 by k-fold on train (TREC, MRPC). Folds: StratifiedKFold, shuffled, seeded
# 1111 for the inner-k-fold tasks and `seed` for the others, as SentEval seeds them.
INNER_GRID = tuple(2.0**t for t in range(-2, 4))
KFOLD_GRID = tuple(2.0**t for t in range(-1, 6))


def _logreg(c: float, seed: int) -> LogisticRegression:
    return LogisticRegression(C=c, random_state=seed, max_iter=1000)


def _cv_score(x: np.ndarray, y: np.ndarray, c: float, folds: StratifiedKFold, seed: int) -> float:
    return float(np.mean([_logreg(c, seed).fit(x[a], y[a]).score(x[b], y[b]) for a, b in folds.split(x, y)]))


def _best_c(x: np.ndarray, y: np.ndarray, grid, folds: StratifiedKFold, seed: int) -> tuple[float, float]:
    """(C, dev accuracy x 100): the first C of ``grid`` with the best mean fold accuracy."""
    scores = [round(100 * _cv_score(x, y, c, folds, seed), 2) for c in grid]
    return grid[int(np.argmax(scores))], float(max(scores))


def inner_kfold(x: np.ndarray, y: np.ndarray, k: int = 10, seed: int = 1111) -> dict:
    """MR/CR/SUBJ/MPQA: k outer folds; in each, C by inner k-fold on the training part."""
    y = np.asarray(y)
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=1111)
    dev, test, chosen = [], [], []
    for a, b in folds.split(x, y):
        c, d = _best_c(x[a], y[a], INNER_GRID, folds, seed)
        dev.append(d)
        chosen.append(c)
        test.append(round(100 * _logreg(c, seed).fit(x[a], y[a]).score(x[b], y[b]), 2))
    return {"accuracy": round(float(np.mean(test)), 2), "dev": round(float(np.mean(dev)), 2), "folds": test,
            "c": chosen, "n": int(len(y))}


def kfold_then_test(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, k: int = 10,
                    seed: int = 1111) -> dict:
    """TREC/MRPC: C by k-fold cross-validation on train, then train on all of it and test."""
    y, y_test = np.asarray(y), np.asarray(y_test)
    c, dev = _best_c(x, y, KFOLD_GRID, StratifiedKFold(n_splits=k, shuffle=True, random_state=seed), seed)
    acc = round(100 * _logreg(c, seed).fit(x, y).score(x_test, y_test), 2)
    return {"accuracy": acc, "dev": dev, "c": c, "n": int(len(y) + len(y_test))}


def split_dev_test(x: np.ndarray, y: np.ndarray, x_dev: np.ndarray, y_dev: np.ndarray, x_test: np.ndarray,
                   y_test: np.ndarray, seed: int = 1111) -> dict:
    """SST2: C by dev accuracy, then test."""
    scores = [round(100 * _logreg(c, seed).fit(x, y).score(x_dev, y_dev), 2) for c in INNER_GRID]
    c = INNER_GRID[int(np.argmax(scores))]
    acc = round(100 * _logreg(c, seed).fit(x, y).score(x_test, y_test), 2)
    return {"accuracy": acc, "dev": float(max(scores)), "c": c, "n": int(len(y) + len(y_dev) + len(y_test))}


def pair_features(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """MRPC's features as SentEval builds them: [|u - v|, u * v]."""
    return np.c_[np.abs(u - v), u * v]


def senteval_transfer(encode, tasks, k: int = 10, seed: int = 1111) -> dict:
    """Each task's accuracy by its SentEval protocol; ``encode(texts) -> (n, d)`` gives raw
    (unnormalised) sentence embeddings. Adds the average over the tasks run."""
    out: dict = {}
    for task in tasks:
        def emb(split, task=task):
            texts, labels = task.splits[split]
            if task.pairs:
                x = pair_features(encode([a for a, _ in texts]), encode([b for _, b in texts]))
            else:
                x = encode(list(texts))
            return x, np.asarray(labels)

        if task.protocol == "cv":
            r = inner_kfold(*emb("all"), k, seed)
        elif task.protocol == "split":
            r = split_dev_test(*emb("train"), *emb("dev"), *emb("test"), seed)
        else:
            r = kfold_then_test(*emb("train"), *emb("test"), k, seed)
        out[task.name] = r
    result = {"tasks": out, "protocol": f"SentEval (scikit-learn logistic regression, {k} folds, seed {seed})"}
    if out:
        result["avg"] = round(float(np.mean([r["accuracy"] for r in out.values()])), 2)
    return result


@dataclass
class Transfer:
    """A transfer task with its folds: a SentEval task (scored by its protocol) or a
    text-classification file (scored by :func:`linear_probe`)."""

    task: TransferTask | TextClassificationSet
    folds: int


def load_transfer_tasks(specs, folds: int = 10, text_column: str = "text", label_column: str = "label",
                        skip_bad: bool = False, skipped=None) -> list[Transfer]:
    """The transfer tasks of ``specs``, read and checked before any model runs. A spec is
    ``senteval:DIR`` (SentEval's tasks), a text-classification file (CSV, JSON Lines or a
    JSON array of texts and labels), or for the latter a mapping ``{data: PATH, text: KEY,
    label: KEY, folds: K}`` naming its columns and folds. A class with fewer examples than
    folds is an error naming the file."""
    skipped = skipped if skipped is not None else Skipped()
    tasks: list[Transfer] = []
    for spec in specs:
        if isinstance(spec, str) and spec.startswith("senteval:"):
            tasks += [Transfer(t, folds) for t in load_senteval(spec.split(":", 1)[1], skip_bad, skipped)]
            continue
        spec = spec if isinstance(spec, dict) else {"data": spec}
        if set(spec) - {"data", "text", "label", "folds"} or "data" not in spec:
            raise ConfigError(f"transfer task {spec}: give data (and optionally text, label, folds)")
        k = int(spec.get("folds", folds))
        t = load_text_classification(spec["data"], spec.get("text", text_column), spec.get("label", label_column),
                                     skip_bad, skipped)
        rare = rare_class(t.labels, k)
        if rare is not None:
            raise DataError(f"class {t.class_names[rare]!r} has {t.labels.count(rare)} example(s), fewer than the {k} "
                            "folds; lower the folds", str(spec["data"]))
        tasks.append(Transfer(t, k))
    return tasks


def transfer_eval(encode, tasks: list[Transfer], seed: int | None = None, c: float = 1.0) -> dict:
    """Each task of :func:`load_transfer_tasks` on frozen embeddings; ``encode(texts) ->
    (n, d)`` gives raw (unnormalised) sentence embeddings. SentEval's tasks by its protocol
    with the task's folds (seed 1111 unless ``seed``), the files by :func:`linear_probe`
    (seed 0 unless ``seed``, inverse L2 strength ``c``). Returns ``tasks`` (name -> result,
    with its ``protocol``) and their average ``avg``."""
    out: dict = {}
    for t in tasks:
        if isinstance(t.task, TextClassificationSet):
            r = linear_probe(encode(t.task.texts), np.array(t.task.labels), t.folds, seed or 0, c)
            out[t.task.name] = r | {"class_names": t.task.class_names, "protocol": f"{t.folds}-fold linear probe, C={c}"}
        else:
            r = senteval_transfer(encode, [t.task], t.folds, 1111 if seed is None else seed)["tasks"][t.task.name]
            out[t.task.name] = r | {"protocol": "SentEval"}
    result: dict = {"tasks": out}
    if out:
        result["avg"] = float(np.mean([r["accuracy"] for r in out.values()]))
    return result
