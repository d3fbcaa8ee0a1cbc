"""SentEval's transfer tasks: loaders on fixtures in SentEval's own data/downstream layout,
its protocol (C chosen as SentEval chooses it) against sklearn's own cross-validation,
and `eval transfer --data senteval:DIR` end to end."""

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score

from clapkit.data.files import Skipped
from clapkit.data.text.senteval import load_senteval
from clapkit.errors import DataError
from clapkit.evaluation.transfer import (
    INNER_GRID,
    KFOLD_GRID,
    TORCH_GRID,
    TorchLogReg,
    inner_kfold,
    kfold_then_test,
    pair_features,
    split_dev_test,
)

GOOD = ["a good film", "great acting", "a fine  story", "lovely music", "a nice end", "superb cast"]
BAD = ["a bad film", "awful acting", "a dull story", "ugly music", "a poor end", "terrible cast"]


def write_senteval(root, n=2):
    """Every task in SentEval's layout, ``n`` copies of each line."""
    for task, (pos, neg) in {"MR": ("rt-polarity.pos", "rt-polarity.neg"), "CR": ("custrev.pos", "custrev.neg"),
                             "SUBJ": ("subj.subjective", "subj.objective"), "MPQA": ("mpqa.pos", "mpqa.neg")}.items():
        (root / task).mkdir(parents=True)
        (root / task / pos).write_bytes(("\n".join(f"{g} {i}" for i in range(n) for g in GOOD) + "\n").encode("latin-1"))
        (root / task / neg).write_bytes(("\n".join(f"{b} {i}" for i in range(n) for b in BAD) + "\n").encode("latin-1"))
    (root / "MR" / "rt-polarity.pos").write_bytes((root / "MR" / "rt-polarity.pos").read_bytes() + "un caf\xe9 good\n".encode("latin-1"))
    sst = root / "SST" / "binary"
    sst.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        (sst / f"sentiment-{split}").write_text("".join(f"{g} {i}\t1\n{b} {i}\t0\n" for i in range(n) for g, b in zip(GOOD, BAD, strict=True)))
    (root / "TREC").mkdir()
    questions = {"DESC": "How did serfdom develop in Russia ?", "HUM": "Who killed Gandhi ?", "LOC": "Where is Erie ?",
                 "NUM": "How many ounces in a pound ?", "ENTY": "What fowl grabs the spotlight ?", "ABBR": "What is AIDS ?"}
    for fname in ("train_5500.label", "TREC_10.label"):
        lines = [f"{label}:sub{i} {q} {i}" for i in range(4 * n) for label, q in questions.items()]
        (root / "TREC" / fname).write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    (root / "MRPC").mkdir()
    for split in ("train", "test"):
        rows = ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
        rows += [f"1\t{i}\t{i + 1}\t{g} {i}\t{g} {i}" for i in range(2 * n) for g in GOOD]
        rows += [f"0\t{i}\t{i + 1}\t{g} {i}\t{b} {i}" for i in range(2 * n) for g, b in zip(GOOD, BAD, strict=True)]
        (root / "MRPC" / f"msr_paraphrase_{split}.txt").write_bytes(("\r\n".join(rows) + "\r\n").encode("utf-8-sig"))
    return root


def test_loaders_read_senteval_layout(tmp_path):
    tasks = {t.name: t for t in load_senteval(write_senteval(tmp_path / "downstream"))}
    assert list(tasks) == ["MR", "CR", "SUBJ", "MPQA", "SST2", "TREC", "MRPC"]
    texts, labels = tasks["MR"].splits["all"]
    assert len(texts) == 25 and labels.count(1) == 13 and "un café good" in texts and "a fine story 0" in texts
    # SentEval's order: a stable sort by (words, label): 3-word negatives first, in file order
    assert texts[:3] == ["awful acting 0", "ugly music 0", "terrible cast 0"] and labels[:3] == [0, 0, 0]
    assert [len(t.split()) for t in texts] == sorted(len(t.split()) for t in texts)
    # SUBJ: SentEval passes subj.objective as the positive class, so the fixture's
    # subj.subjective lines (GOOD) are label 0
    subj_texts, subj_labels = tasks["SUBJ"].splits["all"]
    assert subj_labels[subj_texts.index("great acting 0")] == 0 and subj_labels[subj_texts.index("awful acting 0")] == 1
    assert [len(tasks["SST2"].splits[s][1]) for s in ("train", "dev", "test")] == [24, 24, 24]
    trec_texts, trec_labels = tasks["TREC"].splits["train"]
    assert trec_texts[:2] == ["What is AIDS ? 0", "What is AIDS ? 1"] and trec_labels[:2] == [0, 0]  # ABBR, 5 words
    assert sorted(set(trec_labels)) == [0, 1, 2, 3, 4, 5]
    mrpc, y = tasks["MRPC"].splits["train"]
    assert tasks["MRPC"].pairs and mrpc[0] == ("great acting 0", "awful acting 0") and y[0] == 0
    assert y.count(1) == 24 and len(y) == 48


def test_empty_lines_are_items_as_senteval_keeps_them(tmp_path):
    """SentEval's CR and MPQA files hold empty lines, which SentEval keeps as empty
    sentences (3,775 CR items): they sort first (0 words) and count."""
    root = tmp_path / "d"
    (root / "CR").mkdir(parents=True)
    (root / "CR" / "custrev.pos").write_bytes(b"i love it\n\nworks  well\n")
    (root / "CR" / "custrev.neg").write_bytes(b"broke \xe0 once\n\n")  # Latin-1
    (task,) = load_senteval(root)
    texts, labels = task.splits["all"]
    assert texts == ["", "", "works well", "broke \xe0 once", "i love it"] and labels == [0, 1, 1, 0, 1]


def test_sentevals_folds_follow_its_order(tmp_path):
    """The same seed gives SentEval's folds only on SentEval's order: the inner k-fold on
    the loaded (sorted) items equals scikit-learn's LogisticRegression on that order, and
    differs from the file order's."""
    rng = np.random.default_rng(0)
    root = tmp_path / "d"
    (root / "MR").mkdir(parents=True)
    pos = [" ".join(["good"] * int(rng.integers(1, 9)) + ["x"] * int(rng.integers(0, 3))) for _ in range(40)]
    neg = [" ".join(["bad"] * int(rng.integers(1, 9)) + ["x"] * int(rng.integers(0, 3))) for _ in range(40)]
    (root / "MR" / "rt-polarity.pos").write_text("\n".join(pos) + "\n")
    (root / "MR" / "rt-polarity.neg").write_text("\n".join(neg) + "\n")
    (task,) = load_senteval(root)
    texts, labels = task.splits["all"]
    file_labels = [1] * 40 + [0] * 40
    assert texts == [(pos + neg)[i] for i in sorted(range(80), key=lambda i: (len((pos + neg)[i].split()), file_labels[i]))]

    noise = {t: v for t, v in zip(pos + neg, rng.standard_normal(80) * 3, strict=True)}  # one value per sentence

    def feats(ts):
        return np.array([[0.3 * (t.count("good") - t.count("bad")) + noise[t], len(t.split())] for t in ts], float)

    x, y = feats(texts), np.array(labels)
    r = inner_kfold(x, y, k=5)
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=1111)
    a, b = next(iter(cv.split(x, y)))
    assert r["folds"][0] == round(100 * LogisticRegression(C=r["c"][0], random_state=1111).fit(x[a], y[a])
                                  .score(x[b], y[b]), 2)
    file_order = inner_kfold(feats(pos + neg), np.array(file_labels), k=5)
    assert file_order["folds"] != r["folds"]


def test_absent_tasks_are_left_out_and_broken_ones_named(tmp_path):
    root = write_senteval(tmp_path / "d")
    import shutil

    shutil.rmtree(root / "CR")
    assert [t.name for t in load_senteval(root)] == ["MR", "SUBJ", "MPQA", "SST2", "TREC", "MRPC"]
    (root / "MR" / "rt-polarity.neg").unlink()
    with pytest.raises(DataError, match=r"MR/rt-polarity.neg: missing"):
        load_senteval(root)
    shutil.rmtree(root / "MR")
    with open(root / "TREC" / "TREC_10.label", "a", encoding="latin-1") as fh:
        fh.write("COLOR:x What colour is the sky ?\n")
    with pytest.raises(DataError, match=r"TREC_10.label line 49: expected 'LABEL:sub question'"):
        load_senteval(root)
    (root / "SST" / "binary" / "sentiment-dev").write_text("a good film\t1\nno label here\n")
    skipped = Skipped()
    tasks = {t.name: t for t in load_senteval(root, skip_bad=True, skipped=skipped)}
    assert skipped.count == 2 and len(tasks["SST2"].splits["dev"][1]) == 1
    (root / "MRPC" / "msr_paraphrase_test.txt").write_text("not a header\n")
    with pytest.raises(DataError, match=r"msr_paraphrase_test.txt line 1: expected the header 'Quality"):
        load_senteval(root, skip_bad=True)
    with pytest.raises(DataError, match="none of SentEval's task folders"):
        load_senteval(tmp_path)


def _data(n=60, d=4, seed=0, signal=1.5):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.standard_normal((n, d))
    x[:, 0] += signal * (2 * y - 1)
    return x, y


def test_protocols_against_sklearn_cross_validation():
    """C is the first grid value with the best rounded mean fold accuracy, as SentEval
    picks it; the test accuracy is the classifier's at that C (sklearn's own
    cross_val_score computes the expected values here)."""
    x, y = _data()
    xt, yt = _data(seed=1)
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=1111)
    scores = [round(100 * cross_val_score(LogisticRegression(C=c, random_state=1111), x, y, cv=cv).mean(), 2)
              for c in KFOLD_GRID]
    c = KFOLD_GRID[int(np.argmax(scores))]
    r = kfold_then_test(x, y, xt, yt, k=5)
    assert r["c"] == c and r["dev"] == max(scores)
    assert r["accuracy"] == round(100 * LogisticRegression(C=c, random_state=1111).fit(x, y).score(xt, yt), 2)
    # the inner k-fold: C chosen on each outer training part
    r = inner_kfold(x, y, k=5)
    outer = list(cv.split(x, y))
    assert len(r["folds"]) == 5 and r["n"] == 60
    a, b = outer[0]
    inner = [round(100 * cross_val_score(LogisticRegression(C=c, random_state=1111), x[a], y[a],
                                         cv=cv).mean(), 2) for c in INNER_GRID]
    assert r["c"][0] == INNER_GRID[int(np.argmax(inner))]
    assert r["folds"][0] == round(100 * LogisticRegression(C=r["c"][0], random_state=1111)
                                  .fit(x[a], y[a]).score(x[b], y[b]), 2)
    assert r["accuracy"] == round(float(np.mean(r["folds"])), 2)
    # a separable feature: every protocol is perfect
    sep = np.c_[2.0 * y - 1.0, np.zeros(60)]
    assert inner_kfold(sep, y, k=5)["accuracy"] == 100.0
    assert split_dev_test(sep, y, sep, y, sep, y)["accuracy"] == 100.0
    assert kfold_then_test(sep, y, sep, y, k=5)["accuracy"] == 100.0
    np.testing.assert_array_equal(pair_features(np.array([[1.0, 2.0]]), np.array([[3.0, 5.0]])), [[2.0, 3.0, 3.0, 10.0]])


def test_eval_transfer_runs_senteval_tasks(tmp_path, tiny_bert):
    from typer.testing import CliRunner

    from clapkit.cli import app

    root = write_senteval(tmp_path / "downstream", n=3)
    run = CliRunner().invoke(app, ["eval", "transfer", "--model", tiny_bert, "--data", f"senteval:{root}", "--folds", "3",
                                   "--out", str(tmp_path / "t.json")])
    assert run.exit_code == 0, run.output
    r = json.loads((tmp_path / "t.json").read_text())
    assert list(r["tasks"]) == ["MR", "CR", "SUBJ", "MPQA", "SST2", "TREC", "MRPC"]
    assert r["tasks"]["MR"]["n"] == 37 and r["tasks"]["MRPC"]["n"] == 144 and r["tasks"]["TREC"]["n"] == 144
    assert r["avg"] == pytest.approx(np.mean([t["accuracy"] for t in r["tasks"].values()]), abs=0.01)
    assert all(t["c"] in KFOLD_GRID for n, t in r["tasks"].items() if n in ("TREC", "MRPC"))
    assert r["fits"] == sum(t["fits"] for t in r["tasks"].values()) > 0 and "unconverged_fits" in r


def test_simcse_protocol_is_sentevals_pytorch_logistic_regression():
    """One epoch of TorchLogReg (max_epoch 0, epoch size 1) is SentEval's loop by hand:
    numpy and torch seeded on construction, a numpy permutation, batches of 64, Adam with
    weight decay on every parameter, mean cross-entropy."""
    import torch

    x, y = _data(n=150, d=3)
    clf = TorchLogReg(3, 2, l2reg=1e-3, seed=7, epoch_size=1, max_epoch=0)
    clf.fit(x, y, validation_data=(x, y))
    np.random.seed(7)
    torch.manual_seed(7)
    ref = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(ref.parameters(), weight_decay=1e-3)
    perm = np.random.permutation(150)
    tx, ty = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    for i in range(0, 150, 64):
        idx = torch.from_numpy(perm[i : i + 64])
        loss = torch.nn.functional.cross_entropy(ref(tx[idx]), ty[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    for a, b in zip(clf.model.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b)
    # the protocols: simcse searches SentEval's PyTorch grid, is seeded, and separates a separable task
    sep = np.c_[2.0 * y - 1.0, np.zeros(150)]
    r = inner_kfold(sep, y, k=3, protocol="simcse")
    assert r["accuracy"] == 100.0 and set(r["c"]) <= set(TORCH_GRID)
    xt, yt = _data(n=60, d=3, seed=1)
    one = kfold_then_test(x, y, xt, yt, k=3, protocol="simcse", f1=True)
    assert one == kfold_then_test(x, y, xt, yt, k=3, protocol="simcse", f1=True)
    assert 0 < one["f1"] <= 100 and one["c"] in TORCH_GRID
    with pytest.raises(Exception, match="choose sklearn or simcse"):
        inner_kfold(sep, y, k=3, protocol="liblinear")


def test_early_stopping_counts_as_senteval_does():
    """SentEval never resets its no-improvement count and stops once it has reached the
    tenacity: with a constant held-out accuracy, tenacity t runs t + 2 fit epochs."""
    x, y = _data(n=80, d=2)
    for tenacity in (0, 2):
        clf = TorchLogReg(2, 2, l2reg=0.0, seed=0, tenacity=tenacity, epoch_size=1)
        calls = []
        clf.score = lambda a, b, calls=calls: calls.append(1) or 0.5
        clf.fit(x, y, validation_data=(x, y))
        assert len(calls) == tenacity + 2


def test_unconverged_fits_are_counted_not_printed_one_by_one(capsys):
    """SentEval's scikit-learn path stops L-BFGS at 100 iterations; on poorly scaled
    features most fits stop early. Each would print a ConvergenceWarning; the count goes
    into the result instead (as many as scikit-learn itself warns for the same fits)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(6), 20)
    x = rng.normal(size=(120, 40)) * np.logspace(0, 4, 40) + y[:, None]  # badly scaled: L-BFGS needs > 100 steps
    xt, yt = x[::2] + 0.1, y[::2]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = kfold_then_test(x, y, xt, yt, k=3)
    assert not [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    expected = 0
    with warnings.catch_warnings(record=True) as theirs:  # the same fits, by scikit-learn alone
        warnings.simplefilter("always", ConvergenceWarning)
        cv = StratifiedKFold(n_splits=3, shuffle=True, random_state=1111)
        for c in KFOLD_GRID:
            for a, _ in cv.split(x, y):
                LogisticRegression(C=c, random_state=1111).fit(x[a], y[a])
        LogisticRegression(C=r["c"], random_state=1111).fit(x, y)
        expected = sum(issubclass(w.category, ConvergenceWarning) for w in theirs)
    assert r["fits"] == 3 * len(KFOLD_GRID) + 1 and r["unconverged_fits"] == expected > 0
