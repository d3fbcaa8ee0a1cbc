"""Linear probe, few-shot probe and kNN of the media tower on frozen features.

**Features**: the backbone output ``x`` and the projected ``E`` of each item
(:func:`~clapkit.inference.embed.media_features`, optionally from the embedding cache),
each L2-normalised, as CLIP_benchmark's featurizer does by default (``normalize=False``
keeps ``x`` raw for the linear probe; kNN always compares cosines).

**Splits** (:func:`probe_splits`), in this order:

- a set with folds (ESC-50's 5, UrbanSound8K's 10, TUT 2017's 4): leave one fold out,
  once per fold (``--folds`` picks which folds take part);
- a training split named (``train_split``, e.g. ``train`` for CIFAR, STL-10, Food-101,
  VGGSound, FSD50K's dev ``train``): train on it, test on the evaluated split;
- otherwise stratified, seeded ``cv``-fold cross-validation (recorded as such).

Each item is tested once per seed, so the metrics are pooled over the test folds, and the
95% bootstrap interval is over the items (:mod:`.uncertainty`).

Within a training part, the **validation** part is a seeded random ``val_proportion`` of
it (``torch.utils.data.random_split``, as CLIP_benchmark's ``--val_proportion``); the
rest is held in a seeded random permutation's order (:func:`training_order`, as
CLIP_benchmark's ``evaluate`` holds it before its loader shuffles), and a **few-shot**
training set takes the first ``shots`` items of each class in that order (CLIP_benchmark's
rule), once per seed (``seeds`` seeds, ``seed, seed + 1, ...``); a class with fewer than
``shots`` is an error. ``tests/test_clip_benchmark.py`` checks the weight decay and the
accuracies against CLIP_benchmark's own ``linear_probe.evaluate`` on the same features.

Two **linear protocols**, named:

- ``clip_benchmark`` (the default): CLIP_benchmark's ``linear_probe`` — a ``torch.nn.Linear``
  trained with AdamW (lr 0.1, 10 epochs, batch 64, cosine schedule without warm-up,
  cross-entropy), torch seeded with the run's seed before the layer is built; the weight
  decay from ``logspace(-6, 2, 97)`` chosen on the validation part: the 7 values of
  ``logspace(-6, 2, 7)``, then the best and its neighbours at spans 8, 4, 2, 1 (a value
  must be strictly better to win, so the first in the list wins a tie). The final probe is
  trained with that decay on training + validation (full) or on the k-shot set alone
  (few-shot). CLIP_benchmark runs under CUDA autocast; clapkit in fp32.
- ``sklearn``: scikit-learn's ``LogisticRegression`` (L-BFGS, ``max_iter`` 1000) with the L2
  strength λ (``C = 1/λ``) from ``logspace(-6, 6, 97)`` by the same search — the OpenAI
  CLIP paper's protocol (appendix A.3: L-BFGS logistic regression, λ swept from 1e-6 to 1e6
  on a validation set), refit on training + validation.

With ``val_proportion`` 0 nothing is searched: weight decay 0 (CLIP_benchmark's choice
without a validation split) or C = 1.

**kNN**: cosine similarity to the training items (training + validation, or the k-shot
set), the ``knn_k`` nearest vote, a tie goes to the lowest class index (scikit-learn's
``KNeighborsClassifier`` rule).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ConfigError, DataError
from ..inference.embed import unit_rows
from .metrics import classification_metrics, fold_mean_interval, mean_class_accuracy
from .uncertainty import mean_interval, weighted_interval

PROTOCOLS = ("clip_benchmark", "sklearn")
WD_GRID = np.logspace(-6, 2, num=97).tolist()  # CLIP_benchmark's weight decays
WD_COARSE = np.logspace(-6, 2, num=7).tolist()
LAMBDA_GRID = np.logspace(-6, 6, num=97).tolist()  # the CLIP paper's L2 strengths
LAMBDA_COARSE = np.logspace(-6, 6, num=7).tolist()


@dataclass(frozen=True)
class ProbeOptions:
    protocol: str = "clip_benchmark"
    shots: int | None = None  # k per class; None: the full training part
    seeds: int = 1  # few-shot draws (and probe seeds), seed, seed + 1, ...
    seed: int = 0
    knn_k: int = 20
    val_proportion: float = 0.2
    lr: float = 0.1  # clip_benchmark protocol
    epochs: int = 10
    batch_size: int = 64
    normalize: bool = True
    bootstrap: int = 1000

    def check(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"--protocol {self.protocol!r}: choose {' or '.join(PROTOCOLS)}")
        if self.shots is not None and self.shots < 1:
            raise ConfigError(f"--shots {self.shots}: give a number of training items per class >= 1")
        if self.seeds < 1 or self.knn_k < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("--seeds, --knn-k, --epochs and --probe-batch-size must be >= 1")
        if not 0 <= self.val_proportion < 1:
            raise ConfigError(f"--val-proportion {self.val_proportion}: give a fraction in [0, 1)")
        if self.bootstrap < 0:
            raise ConfigError(f"--bootstrap {self.bootstrap}: give 0 (no intervals) or a number of resamples")


@dataclass
class Split:
    """One train/test division of the items (indices into the feature rows)."""

    name: str
    train: np.ndarray
    test: np.ndarray


def probe_splits(y: np.ndarray, folds: Sequence[int | None] | None, cv: int = 5, seed: int = 0,
                 train_mask: np.ndarray | None = None) -> tuple[list[Split], dict]:
    """The splits of the module docstring and a record of which rule made them:
    ``train_mask`` marks a named training split's items; else ``folds`` (each item's
    fold) when every item has one; else stratified ``cv``-fold."""
    y = np.asarray(y)
    if train_mask is not None:
        train_mask = np.asarray(train_mask, bool)
        return ([Split("test", np.flatnonzero(train_mask), np.flatnonzero(~train_mask))],
                {"rule": "train/test split", "train": int(train_mask.sum()), "test": int((~train_mask).sum())})
    if folds is not None and len(folds) and all(f is not None for f in folds):
        f = np.asarray(folds)
        names = sorted(set(f.tolist()))
        if len(names) < 2:
            raise DataError(f"only fold {names[0]} is selected; leave-one-fold-out needs two or more (--folds)")
        return ([Split(f"fold {k}", np.flatnonzero(f != k), np.flatnonzero(f == k)) for k in names],
                {"rule": "leave one fold out", "folds": names})
    from sklearn.model_selection import StratifiedKFold

    from .transfer import rare_class

    rare = rare_class(y, cv)
    if rare is not None:
        raise DataError(f"class {rare} has {int((y == rare).sum())} item(s), fewer than the {cv} cross-validation "
                        "folds; lower --cv or give a set with folds or a --train-split")
    parts = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)
    return ([Split(f"cv {k}", tr, te) for k, (tr, te) in enumerate(parts, 1)],
            {"rule": f"stratified {cv}-fold cross-validation, seed {seed}", "folds": list(range(1, cv + 1))})


def search_peak(n: int, start: Sequence[int], score: Callable[[int], float]) -> int:
    """The index (into a grid of ``n`` values) CLIP_benchmark's ``find_peak`` search
    picks: the best of ``start``, then of (left, best, right) at spans 8, 4, 2, 1; a value
    must score strictly higher than the best so far (from 0) to win. ``score`` is called
    once per index."""
    seen: dict[int, float] = {}

    def best_of(idxs: Sequence[int]) -> int:
        best, top = 0, 0.0
        for i in idxs:
            if i not in seen:
                seen[i] = score(i)
            if top < seen[i]:
                best, top = i, seen[i]
        return best

    peak = best_of(start)
    span = 8
    while span > 0:
        peak = best_of([max(peak - span, 0), peak, min(peak + span, n - 1)])
        span //= 2
    return peak


def train_linear(x: np.ndarray, y: np.ndarray, n_classes: int, weight_decay: float, lr: float, epochs: int,
                 batch_size: int, seed: int):
    """CLIP_benchmark's probe training (module docstring) in fp32 on CPU; the caller's
    torch random state is left as it was."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = torch.nn.Linear(x.shape[1], n_classes)
        opt = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=weight_decay)
        loader = DataLoader(TensorDataset(torch.from_numpy(np.ascontiguousarray(x, np.float32)),
                                          torch.from_numpy(np.asarray(y, np.int64))), batch_size=batch_size, shuffle=True)
        steps = epochs * len(loader)
        for epoch in range(epochs):
            for i, (xb, yb) in enumerate(loader):
                for group in opt.param_groups:
                    group["lr"] = 0.5 * (1 + math.cos(math.pi * (i + epoch * len(loader)) / steps)) * lr
                opt.zero_grad()
                torch.nn.functional.cross_entropy(layer(xb), yb).backward()
                opt.step()
    return layer


def _linear_scores(fit_x, fit_y, test_x, n_classes: int, reg: float, opts: ProbeOptions, seed: int) -> np.ndarray:
    if opts.protocol == "clip_benchmark":
        import torch

        layer = train_linear(fit_x, fit_y, n_classes, reg, opts.lr, opts.epochs, opts.batch_size, seed)
        with torch.no_grad():
            return layer(torch.from_numpy(np.ascontiguousarray(test_x, np.float32))).numpy()
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1.0 / reg, max_iter=1000).fit(fit_x, fit_y)
    scores = np.full((len(test_x), n_classes), -np.inf)
    scores[:, clf.classes_] = clf.decision_function(test_x).reshape(len(test_x), -1) if len(clf.classes_) > 2 else \
        np.stack([-clf.decision_function(test_x), clf.decision_function(test_x)], 1)
    return scores


def linear_probe(train_x, train_y, val_x, val_y, test_x, n_classes: int, opts: ProbeOptions, seed: int,
                 refit_on_val: bool = True) -> tuple[np.ndarray, float]:
    """Test scores of the probe and the regularisation the validation part chose (weight
    decay for clip_benchmark, λ for sklearn); see the module docstring."""
    grid, coarse = (WD_GRID, WD_COARSE) if opts.protocol == "clip_benchmark" else (LAMBDA_GRID, LAMBDA_COARSE)
    if len(val_y) == 0:
        reg = 0.0 if opts.protocol == "clip_benchmark" else 1.0
    else:
        def accuracy(i: int) -> float:
            scores = _linear_scores(train_x, train_y, val_x, n_classes, grid[i], opts, seed)
            return float((scores.argmax(1) == val_y).mean())

        reg = grid[search_peak(len(grid), [i for i, v in enumerate(grid) if v in coarse], accuracy)]
    if refit_on_val and len(val_y):
        train_x, train_y = np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y])
    return _linear_scores(train_x, train_y, test_x, n_classes, reg, opts, seed), reg


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int, n_classes: int) -> np.ndarray:
    """The class the ``k`` most cosine-similar training items vote for (lowest index on a tie)."""
    sims = unit_rows(test_x) @ unit_rows(train_x).T
    k = min(k, len(train_y))
    near = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    votes = np.zeros((len(test_x), n_classes), np.int64)
    np.add.at(votes, (np.repeat(np.arange(len(test_x)), k), np.asarray(train_y)[near].ravel()), 1)
    return votes.argmax(1)


def _val_split(n: int, proportion: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    import torch

    # random_split's own rule for fractions: floor each share, the remainder to the first shares
    lengths = [int(np.floor(n * (1 - proportion))), int(np.floor(n * proportion))]
    for i in range(n - sum(lengths)):
        lengths[i % 2] += 1
    if lengths[1] == 0:  # too few items for a validation part: nothing to search
        return np.arange(n), np.arange(0)
    fit, val = torch.utils.data.random_split(range(n), lengths, generator=torch.Generator().manual_seed(seed))
    return np.array(fit.indices, dtype=np.int64), np.array(val.indices, dtype=np.int64)


def training_order(y: np.ndarray, shots: int, seed: int, where: str, class_names: Sequence[str]) -> np.ndarray:
    """Positions of the training items in the order CLIP_benchmark's probe holds them: a
    seeded permutation (``torch.randperm``, a generator seeded with ``seed``), whole, or
    with ``shots`` only the first ``shots`` of each class in it. Its loader then shuffles
    this order, so the order is part of the result. A class with fewer than ``shots``
    items is an error."""
    import torch

    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed)).numpy()
    if not shots:
        return perm
    taken: Counter[int] = Counter()
    keep = []
    for p in perm:
        c = int(y[p])
        if taken[c] < shots:
            taken[c] += 1
            keep.append(int(p))
    short = [c for c, got in sorted(taken.items()) if got < shots]
    if short:
        raise DataError(f"class {class_names[short[0]]!r} has {taken[short[0]]} training item(s), fewer than "
                        f"--shots {shots}; lower --shots", where)
    return np.array(keep, np.int64)


def probe_eval(features: dict[str, np.ndarray], y: np.ndarray, class_names: Sequence[str], splits: Sequence[Split],
               opts: ProbeOptions, where: str = "probe") -> tuple[dict, dict[str, np.ndarray]]:
    """The linear probe and kNN of each feature kind over ``splits`` (module docstring).

    Returns the JSON-able result and, per ``"{linear|knn}_{kind}"``, each tested item's
    correctness (mean over seeds; 0/1 with one seed), in the order of the tested items.
    """
    opts.check()
    y = np.asarray(y, np.int64)
    n_classes = len(class_names)
    tested = np.sort(np.concatenate([s.test for s in splits]))
    if len(np.unique(tested)) != len(tested):
        raise ValueError("the test parts of the splits overlap")
    pos = np.full(len(y), -1)
    pos[tested] = np.arange(len(tested))
    for s in splits:
        if len(np.unique(y[s.train])) < 2:
            only = class_names[int(y[s.train][0])] if len(s.train) else "none"
            raise DataError(f"{s.name}: its training part has {len(s.train)} item(s) of one class ({only}); a probe "
                            "needs two classes or more", where)
    seeds = [opts.seed + i for i in range(opts.seeds)]
    result: dict = {"options": asdict(opts), "classes": n_classes, "tested": int(len(tested)), "seeds": seeds,
                    "features": {}}
    correct: dict[str, np.ndarray] = {}
    for kind, feats in features.items():
        feats = np.asarray(feats, np.float32)
        if opts.normalize:
            feats = unit_rows(feats)
        linear = np.zeros((len(seeds), len(tested), n_classes), np.float32)
        knn = np.zeros((len(seeds), len(tested)), np.int64)
        runs = []
        for si, seed in enumerate(seeds):
            for s in splits:
                fit, val = _val_split(len(s.train), opts.val_proportion, seed)
                fit, val = s.train[fit], s.train[val]
                fit = fit[training_order(y[fit], opts.shots, seed, f"{where}, {s.name}", class_names)]
                scores, reg = linear_probe(feats[fit], y[fit], feats[val], y[val], feats[s.test], n_classes, opts,
                                           seed, refit_on_val=not opts.shots)
                linear[si, pos[s.test]] = scores
                neighbours = fit if opts.shots else np.concatenate([fit, val])
                knn[si, pos[s.test]] = knn_predict(feats[neighbours], y[neighbours], feats[s.test], opts.knn_k,
                                                   n_classes)
                runs.append({"split": s.name, "seed": seed, "train": int(len(fit)), "val": int(len(val)),
                             "test": int(len(s.test)), "regularisation": reg,
                             "linear_top1": float((scores.argmax(1) == y[s.test]).mean()),
                             "knn_top1": float((knn[si, pos[s.test]] == y[s.test]).mean())})
        yt = y[tested]
        out = {"dim": int(feats.shape[1]), "runs": runs}
        for name, per_seed in (("linear", linear), ("knn", knn)):
            metrics = [classification_metrics(sc if name == "linear" else np.eye(n_classes)[sc], yt, list(class_names),
                                              ks=(1, 5) if name == "linear" else (1,), keep_ranks=True)
                       for sc in per_seed]
            ok = np.stack([(sc.argmax(1) if name == "linear" else sc) == yt for sc in per_seed])
            m = {k: float(np.mean([mm[k] for mm in metrics])) for k in ("top1", "top5", "mean_class_accuracy")
                 if k in metrics[0]}
            if len(seeds) > 1:
                m["top1_std_over_seeds"] = float(np.std([mm["top1"] for mm in metrics]))
            item = ok.mean(axis=0) if len(seeds) > 1 else ok[0]
            split_of = np.empty(len(tested), np.int64)
            for i, s in enumerate(splits):
                split_of[pos[s.test]] = i
            if len(splits) > 1:  # each split's top-1, then their mean (HEAR's and X-ARES's fold protocol)
                m["top1_per_split"] = {s.name: float(item[pos[s.test]].mean()) for s in splits}
                m["top1_fold_mean"] = float(np.mean(list(m["top1_per_split"].values())))
            if opts.bootstrap:
                m["ci"] = {"top1": mean_interval(item, opts.bootstrap, opts.seed),
                           "mean_class_accuracy": weighted_interval(lambda w, item=item, yt=yt: mean_class_accuracy(item, yt, w),
                                                                    len(yt), opts.bootstrap, opts.seed)}
                if len(splits) > 1:
                    m["ci"]["top1_fold_mean"] = fold_mean_interval(item, split_of, opts.bootstrap, opts.seed)
                if "top5" in m:
                    top5 = np.stack([mm["ranks"] <= 5 for mm in metrics]).mean(axis=0)  # its pessimistic ties
                    m["ci"]["top5"] = mean_interval(top5, opts.bootstrap, opts.seed)
            m["per_class"] = {c: float(np.mean([mm["per_class"][c]["accuracy"] for mm in metrics]))
                              for c in metrics[0]["per_class"]}
            out[name] = m
            correct[f"{name}_{kind}"] = item
        out["linear"]["regularisation"] = "weight_decay" if opts.protocol == "clip_benchmark" else "lambda"
        result["features"][kind] = out
    result["chance"] = 1.0 / n_classes
    return result, correct


@dataclass
class ProbeData:
    """The items a probe sees: their labels, classes, folds, and which are training items
    when a training split is named (else None)."""

    items: list
    y: np.ndarray
    class_names: list[str]
    folds: list
    train_mask: np.ndarray | None
    skipped: dict  # Skipped.to_dict() of the set, or {"test": ..., "train": ...} with a training split

    @property
    def skipped_count(self) -> int:
        parts = [self.skipped] if "count" in self.skipped else list(self.skipped.values())
        return sum(p["count"] for p in parts)


def load_probe_data(spec: str, medium: str, folds: list[int] | None = None, classes: list[str] | None = None,
                    split: str | None = None, train_split: str | None = None, skip_bad: bool = False,
                    media_dir=None) -> ProbeData:
    """A single-label set for the probe (its files checked); with ``train_split`` that
    split's items join it as training items, their classes matched by name."""
    from ..data.media import load_labelled_media

    test = load_labelled_media(spec, medium, folds, classes, skip_bad, checked=True, split=split, media_dir=media_dir)
    if test.multilabel:
        raise DataError("a multi-label set; the probe scores one label per item (use eval zeroshot for mAP)", spec)
    items, y = list(test.clips), [c.label for c in test.clips]
    mask, skipped = None, test.skipped.to_dict()
    if train_split:
        if train_split == (split or ""):
            raise ConfigError(f"--train-split {train_split}: the same split as --split; give the training split")
        train = load_labelled_media(spec, medium, folds, classes, skip_bad, checked=True, split=train_split,
                                    media_dir=media_dir)
        index = {n: i for i, n in enumerate(test.class_names)}
        missing = sorted(set(train.class_names[c.label] for c in train.clips) - set(index))
        if missing:
            raise DataError(f"split {train_split} has class {missing[0]!r}, which the evaluated split's classes "
                            f"({len(index)}) lack; choose --classes", spec)
        items += train.clips
        y += [index[train.class_names[c.label]] for c in train.clips]
        mask = np.r_[np.zeros(len(test.clips), bool), np.ones(len(train.clips), bool)]
        skipped = {"test": skipped, "train": train.skipped.to_dict()}
    return ProbeData(items, np.array(y, np.int64), list(test.class_names), [c.fold for c in items], mask, skipped)
