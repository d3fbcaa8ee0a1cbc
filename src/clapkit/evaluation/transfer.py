"""Transfer evaluation of sentence embeddings: a linear probe with k-fold cross-validation.

As SentEval's transfer tasks: the encoder is frozen, a logistic-regression classifier
(scikit-learn, features standardised, L2 penalty ``C``) is trained on the embeddings of
k - 1 folds and scored on the held-out fold; folds are stratified and seeded. Reported:
mean and standard deviation of the fold accuracies x 100, each fold's accuracy, and the
majority-class rate as the chance level.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def linear_probe(x: np.ndarray, y: np.ndarray, folds: int = 10, seed: int = 0, c: float = 1.0) -> dict:
    y = np.asarray(y)
    counts = np.bincount(y)
    if counts[counts > 0].min() < folds:
        rare = int(np.flatnonzero((counts > 0) & (counts < folds))[0])
        raise ValueError(f"class {rare} has {counts[rare]} example(s), fewer than the {folds} folds; lower --folds")
    accs = []
    for train, test in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
        clf.fit(x[train], y[train])
        accs.append(float((clf.predict(x[test]) == y[test]).mean() * 100))
    return {"accuracy": float(np.mean(accs)), "std": float(np.std(accs)), "folds": accs, "n": int(len(y)),
            "classes": int((counts > 0).sum()), "majority": float(counts.max() / len(y) * 100)}
