"""The media tower on its own: linear probe (two protocols), few-shot, kNN, splits,
the feature cache, and `clapkit eval probe` on the shared ESC-50."""

import json

import numpy as np
import pytest
import torch

from clapkit.errors import ClapkitError, DataError
from clapkit.evaluation.probe import (
    LAMBDA_GRID,
    WD_COARSE,
    WD_GRID,
    ProbeOptions,
    Split,
    _val_split,
    knn_predict,
    probe_eval,
    probe_splits,
    search_peak,
    train_linear,
    training_order,
)


def clusters(classes=4, per=20, dim=8, spread=4.0, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), per)
    return rng.normal(size=(classes, dim))[y] * spread + rng.normal(size=(len(y), dim)), y


NAMES = [f"c{i}" for i in range(6)]


@pytest.mark.parametrize("protocol", ["clip_benchmark", "sklearn"])
def test_separable_features_are_probed_perfectly_and_noise_at_chance(protocol):
    x, y = clusters()
    noise = np.random.default_rng(5).normal(size=x.shape)
    splits, rule = probe_splits(y, list(np.tile([1, 2, 3, 4], 20)))
    assert rule == {"rule": "leave one fold out", "folds": [1, 2, 3, 4]}
    r, correct = probe_eval({"x": x, "noise": noise}, y, NAMES[:4], splits, ProbeOptions(protocol=protocol, knn_k=5))
    assert r["tested"] == 80 and r["chance"] == 0.25
    for head in ("linear", "knn"):
        assert r["features"]["x"][head]["top1"] == 1.0
        assert correct[f"{head}_x"].shape == (80,) and correct[f"{head}_x"].all()
        lo, hi = r["features"]["noise"][head]["ci"]["top1"]
        assert lo <= 0.25 <= hi  # noise is at chance, inside its interval
        assert r["features"]["noise"][head]["top1"] == pytest.approx(correct[f"{head}_noise"].mean())
    runs = r["features"]["x"]["runs"]
    assert [run["split"] for run in runs] == ["fold 1", "fold 2", "fold 3", "fold 4"]
    assert all(run["train"] + run["val"] == 60 and run["test"] == 20 for run in runs)


def test_the_sklearn_protocol_is_scikit_learns_logistic_regression_at_the_chosen_strength():
    from sklearn.linear_model import LogisticRegression

    x, y = clusters(classes=3, per=30, spread=0.7, seed=2)  # overlapping: the strength matters
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    mask = np.zeros(len(y), bool)
    mask[np.random.default_rng(0).permutation(len(y))[:60]] = True
    splits, rule = probe_splits(y, None, train_mask=mask)
    assert rule["rule"] == "train/test split"
    opts = ProbeOptions(protocol="sklearn", bootstrap=0)
    r, correct = probe_eval({"x": x}, y, NAMES[:3], splits, opts)
    lam = r["features"]["x"]["runs"][0]["regularisation"]
    assert lam in LAMBDA_GRID
    train, test = splits[0].train, splits[0].test
    fit, val = _val_split(len(train), 0.2, 0)
    # the strength the search picks is a best validation accuracy over the 97 values ...
    def val_acc(lam_):
        clf = LogisticRegression(C=1 / lam_, max_iter=1000).fit(x[train[fit]], y[train[fit]])
        return (clf.predict(x[train[val]]) == y[train[val]]).mean()

    assert val_acc(lam) >= max(val_acc(v) for v in np.logspace(-6, 6, 7)) - 1e-12
    # ... and the test predictions are scikit-learn's, refit on train + validation at it
    clf = LogisticRegression(C=1 / lam, max_iter=1000).fit(x[train], y[train])
    assert r["features"]["x"]["linear"]["top1"] == pytest.approx((clf.predict(x[test]) == y[test]).mean())
    np.testing.assert_array_equal(correct["linear_x"], clf.predict(x[test]) == y[test])


def test_search_peak_follows_clip_benchmarks_coarse_then_halving_search():
    start = [i for i, v in enumerate(WD_GRID) if v in WD_COARSE]
    assert start == [0, 16, 32, 48, 64, 80, 96]  # logspace(-6, 2, 7) sits exactly on logspace(-6, 2, 97)
    calls = []

    def peaked(i, top=37):
        calls.append(i)
        return 1.0 / (1 + abs(i - top))

    assert search_peak(97, start, peaked) == 37  # 32 best of the 7, then 32 -> 40 -> 36 -> 38 -> 37
    assert len(calls) == len(set(calls)) <= 7 + 4 * 2  # each value trained once
    assert search_peak(97, start, lambda i: 0.5) == 0  # a tie keeps the first; the strict "<" of find_peak
    assert search_peak(97, start, lambda i: 0.0) == 0  # nothing beats 0: index 0, as find_peak returns
    # a plateau to the right of the best start: the left neighbour wins the ties
    assert search_peak(97, start, lambda i: 1.0 if 30 <= i <= 50 else 0.1) == 30


def test_train_linear_is_seeded_and_leaves_the_callers_random_state_alone():
    x, y = clusters(classes=3, per=10)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = train_linear(x, y, 3, 1e-4, 0.1, 2, 8, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    b = train_linear(x, y, 3, 1e-4, 0.1, 2, 8, seed=7)
    c = train_linear(x, y, 3, 1e-4, 0.1, 2, 8, seed=8)
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, c.weight)
    # the schedule: cosine from lr to ~0 over epochs x batches, no warm-up (one batch: plain GD steps)
    layer = train_linear(x[:4], y[:4], 3, 0.0, 0.1, 1, 64, seed=0)
    torch.manual_seed(0)
    ref = torch.nn.Linear(8, 3)
    opt = torch.optim.AdamW(ref.parameters(), lr=0.1, weight_decay=0.0)
    torch.nn.functional.cross_entropy(ref(torch.tensor(x[:4], dtype=torch.float32)), torch.tensor(y[:4])).backward()
    opt.step()  # step 0 of 1: lr 0.1 * 0.5 * (1 + cos 0) = 0.1
    assert torch.allclose(layer.weight, ref.weight)


def test_knn_by_hand_and_against_scikit_learn():
    from sklearn.neighbors import KNeighborsClassifier

    train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.1]])
    labels = np.array([0, 0, 1, 1, 2])
    test = np.array([[1.0, 0.05], [0.05, 1.0], [-1.0, 0.0], [0.7, 0.7]])
    # k=1: the single nearest; [0.7, 0.7] is nearest to items 1 and 3 (cosine 0.78 each): the first, class 0
    np.testing.assert_array_equal(knn_predict(train, labels, test, 1, 3), [0, 1, 2, 0])
    # k=2: [-1, 0] has item 4 (cosine 0.995, class 2) and item 2 (cosine 0, class 1): a 1-1 tie goes to class 1;
    # [0.7, 0.7] has items 1 and 3 (classes 0 and 1): class 0
    np.testing.assert_array_equal(knn_predict(train, labels, test, 2, 3), [0, 1, 1, 0])
    rng = np.random.default_rng(3)
    a, b, ya = rng.normal(size=(60, 5)), rng.normal(size=(25, 5)), rng.integers(0, 4, 60)
    ref = KNeighborsClassifier(n_neighbors=7, metric="cosine", algorithm="brute").fit(a, ya).predict(b)
    np.testing.assert_array_equal(knn_predict(a, ya, b, 7, 4), ref)


def test_few_shot_takes_k_per_class_per_seed_and_names_a_short_class():
    y = np.repeat(np.arange(3), [5, 6, 7])
    a, b = training_order(y, 2, 0, "x", NAMES), training_order(y, 2, 1, "x", NAMES)
    assert np.bincount(y[a]).tolist() == [2, 2, 2] and not np.array_equal(a, b)
    perm = torch.randperm(18, generator=torch.Generator().manual_seed(0)).tolist()
    assert a.tolist() == [p for p in perm if p in set(a.tolist())]  # in the permutation's order
    assert training_order(y, 0, 0, "x", NAMES).tolist() == perm  # the full set: the whole permutation
    with pytest.raises(DataError, match=r"class 'c0' has 5 training item\(s\), fewer than --shots 6"):
        training_order(y, 6, 0, "esc50:X, fold 1", NAMES)
    x, yy = clusters(classes=3, per=12)
    splits, _ = probe_splits(yy, None, cv=3)
    r, correct = probe_eval({"x": x}, yy, NAMES[:3], splits, ProbeOptions(shots=2, seeds=3, knn_k=3))
    runs = r["features"]["x"]["runs"]
    assert len(runs) == 9 and {run["train"] for run in runs} == {6} and r["seeds"] == [0, 1, 2]
    assert "top1_std_over_seeds" in r["features"]["x"]["linear"]
    assert set(np.unique(correct["linear_x"] * 3)) <= {0, 1, 2, 3}  # the mean over three seeds per item


def test_splits_and_the_bad_inputs_a_user_meets():
    y = np.array([0, 1] * 6)
    with pytest.raises(DataError, match="only fold 2 is selected"):
        probe_splits(y, [2] * 12)
    splits, rule = probe_splits(y, [None] * 12, cv=3, seed=4)
    assert rule["rule"] == "stratified 3-fold cross-validation, seed 4" and len(splits) == 3
    assert sorted(np.concatenate([s.test for s in splits]).tolist()) == list(range(12))
    with pytest.raises(DataError, match="class 1 has 1 item"):
        probe_splits(np.array([0, 0, 0, 1]), None, cv=3)
    x = np.random.default_rng(0).normal(size=(12, 4))
    one_class = [Split("fold 3", np.array([0, 2, 4]), np.array([1, 3]))]
    with pytest.raises(DataError, match=r"esc50:E: fold 3: its training part has 3 item\(s\) of one class \(c0\)"):
        probe_eval({"x": x}, y, NAMES[:2], one_class, ProbeOptions(), where="esc50:E")
    for bad in (ProbeOptions(protocol="liblinear"), ProbeOptions(shots=0), ProbeOptions(val_proportion=1.0)):
        with pytest.raises(ClapkitError):
            bad.check()


def test_a_multi_label_set_is_refused(tmp_path):
    from clapkit.data.specs import LABELLED, lookup
    from clapkit.evaluation.probe import load_probe_data

    spec, _ = lookup("fsd50k:x", LABELLED, "audio")[0].example(tmp_path)
    with pytest.raises(DataError, match="multi-label"):
        load_probe_data(spec, "audio")


def test_eval_probe_on_shared_esc50_folds_with_the_cache(tmp_path, tiny_checkpoint, shared_data):
    from clapkit.data.audio.labelled import load_labelled
    from clapkit.inference.embed import embed_media
    from clapkit.models.dual import DualEncoder
    from tests.test_cli import clapkit

    out, cache = tmp_path / "probe.json", tmp_path / "cache"
    args = ["eval", "probe", "--model", tiny_checkpoint, "--data", f"esc50:{shared_data / 'esc50'}", "--cache", cache,
            "--knn-k", "3", "--device", "cpu"]
    proc = clapkit(*args, "--out", out)
    r = json.loads(out.read_text())
    assert r["splits"]["rule"] == "leave one fold out" and r["tested"] == 414 and r["classes"] == 50
    assert r["cache"]["audio_computed"] == 414 and r["cache"]["audio-x_computed"] == 414
    assert set(r["features"]) == {"x", "E"} and "linear top-1" in proc.stdout
    # kNN recomputed here from the model's own E, fold by fold
    data = load_labelled(f"esc50:{shared_data / 'esc50'}")
    e = embed_media(DualEncoder.load(tiny_checkpoint), data.clips)
    y, folds = np.array([c.label for c in data.clips]), np.array([c.fold for c in data.clips])
    right = sum(int((knn_predict(e[folds != f], y[folds != f], e[folds == f], 3, 50) == y[folds == f]).sum())
                for f in np.unique(folds))
    assert r["features"]["E"]["knn"]["top1"] == pytest.approx(right / 414)
    clapkit(*args, "--out", tmp_path / "again.json")  # a second run embeds nothing and scores the same
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["cache"]["audio_computed"] == 0 and again["cache"]["audio_reused"] == 414
    assert again["features"] == r["features"]
    bad = clapkit("eval", "probe", "--model", tiny_checkpoint, "--data", f"esc50:{shared_data / 'esc50'}",
                  "--features", "z", check=False)
    assert bad.returncode == 2 and "--features 'z'" in bad.stderr


def test_the_validation_part_is_torch_random_splits_own():
    import warnings

    for n in (3, 4, 5, 10, 37, 200):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns of an empty split for tiny n
            fit, val = torch.utils.data.random_split(range(n), [0.8, 0.2], generator=torch.Generator().manual_seed(3))
        mine_fit, mine_val = _val_split(n, 0.2, 3)
        assert mine_val.tolist() == list(val.indices)
        assert not len(val.indices) or mine_fit.tolist() == list(fit.indices)
