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
from ..data.text import TextClassificationSet, load_text_classification
from ..data.text.senteval import TransferTask, load_senteval
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
    accs, fits = [], Fits()
    for train, test in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y):
        clf = fits(make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)), x[train], y[train])
        accs.append(float((clf.predict(x[test]) == y[test]).mean() * 100))
    return {"accuracy": float(np.mean(accs)), "std": float(np.std(accs)), "folds": accs, "n": int(len(y)),
            "classes": int((counts > 0).sum()), "majority": float(counts.max() / len(y) * 100), **fits.record()}


class Fits:
    """Fits scikit-learn classifiers and counts those that stop before converging: each
    would print a ConvergenceWarning (SentEval's scikit-learn path, 100 L-BFGS iterations,
    leaves hundreds on TREC); the count goes into the result and one summary line instead."""

    def __init__(self):
        self.fits = self.unconverged = 0

    def __call__(self, clf, x, y):
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            clf.fit(x, y)
        self.fits += 1
        self.unconverged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
        for w in caught:  # anything else is shown as usual
            if not issubclass(w.category, ConvergenceWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return clf

    def record(self) -> dict:
        return {"fits": self.fits, "unconverged_fits": self.unconverged}


# --- SentEval's protocols --------------------------------------------------------------
# Two classifiers, as SentEval offers them (senteval/tools/validation.py):
# - ``sklearn`` (SentEval's usepytorch=False): scikit-learn's LogisticRegression(C=...,
#   random_state=seed) and nothing else, i.e. today's defaults of the pinned scikit-learn
#   (lbfgs, 100 iterations: TREC does not converge in 100 and warns). SentEval's 2018
#   tables were computed with the liblinear solver, scikit-learn's default then, so they
#   are not reproduced to the digit. C from 2^-2 .. 2^3 (inner k-fold, dev) or
#   2^-1 .. 2^5 (k-fold on train).
# - ``simcse`` (SentEval's usepytorch=True with SimCSE's test-mode classifier: nhid 0,
#   Adam, batch 64, tenacity 5, epoch size 4; :class:`TorchLogReg`): the protocol behind
#   SimCSE's published transfer tables. L2 strength from 1e-5 .. 1e-2 on the held-out part.
# Raw embeddings, no scaling. Folds: StratifiedKFold, shuffled, seeded 1111 for the
# inner-k-fold tasks and `seed` for the others, as SentEval seeds them.
INNER_GRID = tuple(2.0**t for t in range(-2, 4))
KFOLD_GRID = tuple(2.0**t for t in range(-1, 6))
TORCH_GRID = tuple(10.0**t for t in range(-5, -1))
PROTOCOLS = ("sklearn", "simcse")


def check_protocol(protocol: str | None) -> None:
    """An unknown ``--protocol`` is an error naming the choices (None: the default)."""
    if protocol is not None and protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol {protocol!r}: choose {' or '.join(PROTOCOLS)}")


class TorchLogReg:
    """SentEval's PyTorch logistic regression (``senteval/tools/classifier.py``: MLP with
    nhid 0) with SimCSE's test-mode settings: a Linear layer, Adam (lr 1e-3) with weight
    decay ``l2reg`` on every parameter, batch 64, cross-entropy (mean), each ``fit``
    epoch 4 passes in a fresh numpy permutation, at most 200 epochs, stopping after 5
    epochs without a better held-out accuracy and keeping the best model. numpy and
    torch are seeded with ``seed`` on construction, as SentEval does; runs on CPU."""

    def __init__(self, inputdim: int, nclasses: int, l2reg: float, seed: int = 1111, batch_size: int = 64,
                 tenacity: int = 5, epoch_size: int = 4, max_epoch: int = 200):
        import torch

        np.random.seed(seed)
        torch.manual_seed(seed)
        self.model = torch.nn.Linear(inputdim, nclasses)
        self.optimizer = torch.optim.Adam(self.model.parameters(), weight_decay=l2reg)
        self.batch_size, self.tenacity, self.epoch_size, self.max_epoch = batch_size, tenacity, epoch_size, max_epoch

    def fit(self, x: np.ndarray, y: np.ndarray, validation_data=None, validation_split: float | None = None) -> float:
        import copy

        import torch

        if validation_data is not None:
            (tx, ty), (dx, dy) = (x, y), validation_data
        else:
            perm = np.random.permutation(len(x))
            cut = int(validation_split * len(x))
            tx, ty, dx, dy = x[perm[cut:]], y[perm[cut:]], x[perm[:cut]], y[perm[:cut]]
        tx, ty = torch.from_numpy(np.asarray(tx)).float(), torch.from_numpy(np.asarray(ty)).long()
        epoch, best, count, best_model = 0, -1.0, 0, None
        while epoch <= self.max_epoch:
            self.model.train()
            for _ in range(self.epoch_size):
                perm = np.random.permutation(len(tx))
                for i in range(0, len(tx), self.batch_size):
                    idx = torch.from_numpy(perm[i : i + self.batch_size]).long()
                    loss = torch.nn.functional.cross_entropy(self.model(tx[idx]), ty[idx])
                    self.optimizer.zero_grad()
                    loss.backward()
                    self.optimizer.step()
            epoch += self.epoch_size
            acc = self.score(dx, dy)
            if acc > best:
                best, best_model = acc, copy.deepcopy(self.model)
            else:  # SentEval's count: never reset, stop once it has reached the tenacity
                if count >= self.tenacity:
                    break
                count += 1
        self.model = best_model
        return best

    def predict(self, x: np.ndarray) -> np.ndarray:
        import torch

        self.model.eval()
        with torch.no_grad():
            return self.model(torch.from_numpy(np.asarray(x)).float()).argmax(1).numpy()

    def score(self, x: np.ndarray, y: np.ndarray) -> float:
        return float((self.predict(x) == np.asarray(y)).mean())


class _Classifiers:
    """The classifier of a protocol and the C / L2 grids it searches."""

    def __init__(self, protocol: str, seed: int, nclasses: int):
        check_protocol(protocol)
        self.protocol, self.seed, self.nclasses = protocol, seed, nclasses
        self.counted = Fits()
        self.torch = protocol == "simcse"
        self.inner_grid = TORCH_GRID if self.torch else INNER_GRID
        self.kfold_grid = TORCH_GRID if self.torch else KFOLD_GRID

    def fit(self, reg: float, x, y, held_out=None, split: float | None = None):
        """Fit at ``reg``: the torch classifier early-stops on ``held_out`` or on a
        ``split`` of the training rows (SentEval's 5% for final fits)."""
        if not self.torch:
            return self.counted(LogisticRegression(C=reg, random_state=self.seed), x, y)
        clf = TorchLogReg(x.shape[1], self.nclasses, reg, self.seed)
        clf.fit(x, y, validation_data=held_out, validation_split=split)
        return clf


def _best(scores: list[float], grid) -> tuple[float, float]:
    """(the first grid value with the best rounded score, that score)."""
    return grid[int(np.argmax(scores))], float(max(scores))


def _cv_scores(clf: _Classifiers, x, y, grid, folds: StratifiedKFold) -> list[float]:
    return [round(100 * float(np.mean([clf.fit(r, x[a], y[a], (x[b], y[b])).score(x[b], y[b])
                                       for a, b in folds.split(x, y)])), 2) for r in grid]


def inner_kfold(x: np.ndarray, y: np.ndarray, k: int = 10, seed: int = 1111, protocol: str = "sklearn") -> dict:
    """MR/CR/SUBJ/MPQA: k outer folds; in each, C by inner k-fold on the training part."""
    y = np.asarray(y)
    clf = _Classifiers(protocol, seed, int(y.max()) + 1)
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=1111)
    dev, test, chosen = [], [], []
    for a, b in folds.split(x, y):
        c, d = _best(_cv_scores(clf, x[a], y[a], clf.inner_grid, folds), clf.inner_grid)
        dev.append(d)
        chosen.append(c)
        test.append(round(100 * clf.fit(c, x[a], y[a], split=0.05).score(x[b], y[b]), 2))
    return {"accuracy": round(float(np.mean(test)), 2), "dev": round(float(np.mean(dev)), 2), "folds": test,
            "c": chosen, "n": int(len(y)), **clf.counted.record()}


def kfold_then_test(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, k: int = 10,
                    seed: int = 1111, protocol: str = "sklearn", f1: bool = False) -> dict:
    """TREC/MRPC: C by k-fold cross-validation on train, then train on all of it and test
    (``f1``: also the binary F1 x 100 of the test predictions, as SentEval reports MRPC's)."""
    y, y_test = np.asarray(y), np.asarray(y_test)
    clf = _Classifiers(protocol, seed, int(max(y.max(), y_test.max())) + 1)
    grid = clf.kfold_grid
    c, dev = _best(_cv_scores(clf, x, y, grid, StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)), grid)
    final = clf.fit(c, x, y, split=0.05)
    pred = final.predict(x_test)
    out = {"accuracy": round(100 * float((pred == y_test).mean()), 2), "dev": dev, "c": c,
           "n": int(len(y) + len(y_test)), **clf.counted.record()}
    if f1:
        from sklearn.metrics import f1_score

        out["f1"] = round(100 * float(f1_score(y_test, pred)), 2)
    return out


def split_dev_test(x: np.ndarray, y: np.ndarray, x_dev: np.ndarray, y_dev: np.ndarray, x_test: np.ndarray,
                   y_test: np.ndarray, seed: int = 1111, protocol: str = "sklearn") -> dict:
    """SST2: C by dev accuracy, then test (the final fit early-stops on dev, as SentEval's)."""
    y = np.asarray(y)
    clf = _Classifiers(protocol, seed, int(y.max()) + 1)
    grid = clf.inner_grid
    c, dev = _best([round(100 * clf.fit(r, x, y, (x_dev, y_dev)).score(x_dev, y_dev), 2) for r in grid], grid)
    acc = round(100 * clf.fit(c, x, y, (x_dev, y_dev)).score(x_test, y_test), 2)
    return {"accuracy": acc, "dev": dev, "c": c, "n": int(len(y) + len(y_dev) + len(y_test)), **clf.counted.record()}


def pair_features(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """MRPC's features as SentEval builds them: [|u - v|, u * v]."""
    return np.c_[np.abs(u - v), u * v]


def senteval_transfer(encode, tasks, k: int = 10, seed: int = 1111, protocol: str = "sklearn") -> dict:
    """Each task's accuracy by its SentEval protocol with the ``sklearn`` or ``simcse``
    classifier; ``encode(texts) -> (n, d)`` gives raw (unnormalised) sentence embeddings.
    Adds the average over the tasks run (MRPC also reports its F1)."""
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
            r = inner_kfold(*emb("all"), k, seed, protocol)
        elif task.protocol == "split":
            r = split_dev_test(*emb("train"), *emb("dev"), *emb("test"), seed, protocol)
        else:
            r = kfold_then_test(*emb("train"), *emb("test"), k, seed, protocol, f1=task.pairs)
        out[task.name] = r
    name = "scikit-learn logistic regression" if protocol == "sklearn" else "SimCSE's PyTorch logistic regression"
    result = {"tasks": out, "protocol": f"SentEval ({name}, {k} folds, seed {seed})"}
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


def transfer_eval(encode, tasks: list[Transfer], seed: int | None = None, c: float = 1.0,
                  protocol: str | None = None) -> dict:
    """Each task of :func:`load_transfer_tasks` on frozen embeddings; ``encode(texts) ->
    (n, d)`` gives raw (unnormalised) sentence embeddings. SentEval's tasks by its protocol
    with the task's folds (seed 1111 unless ``seed``) and the ``protocol``'s classifier
    (``sklearn`` unless given). A task file by :func:`linear_probe` (seed 0 unless ``seed``,
    inverse L2 strength ``c``) when ``protocol`` is None, else by SentEval's inner k-fold
    (as its MR/CR/SUBJ/MPQA) with that classifier. Returns ``tasks`` (name -> result, with
    its ``protocol``) and their average ``avg``."""
    check_protocol(protocol)
    out: dict = {}
    for t in tasks:
        if isinstance(t.task, TextClassificationSet) and protocol is None:
            r = linear_probe(encode(t.task.texts), np.array(t.task.labels), t.folds, seed or 0, c)
            out[t.task.name] = r | {"class_names": t.task.class_names, "protocol": f"{t.folds}-fold linear probe, C={c}"}
        elif isinstance(t.task, TextClassificationSet):
            x, y = encode(t.task.texts), np.array(t.task.labels)
            r = inner_kfold(x, y, t.folds, 1111 if seed is None else seed, protocol)
            out[t.task.name] = r | {"class_names": t.task.class_names, "protocol": f"SentEval ({protocol})"}
        else:
            proto = protocol or "sklearn"
            r = senteval_transfer(encode, [t.task], t.folds, 1111 if seed is None else seed,
                                  proto)["tasks"][t.task.name]
            out[t.task.name] = r | {"protocol": f"SentEval ({proto})"}
    result: dict = {"tasks": out, "fits": sum(r.get("fits", 0) for r in out.values()),
                    "unconverged_fits": sum(r.get("unconverged_fits", 0) for r in out.values())}
    if out:
        result["avg"] = float(np.mean([r["accuracy"] for r in out.values()]))
    return result
