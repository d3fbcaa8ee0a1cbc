"""SentEval's transfer tasks: loaders on fixtures in SentEval's own data/downstream layout,
its protocol (C chosen as SentEval chooses it) against sklearn's own cross-validation,
and `eval transfer --data senteval:DIR` end to end."""

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score

from clapkit.data.files import Skipped
from clapkit.data.senteval import load_senteval
from clapkit.errors import DataError
from clapkit.evaluation.transfer import (
    INNER_GRID,
    KFOLD_GRID,
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
    assert tasks["SUBJ"].splits["all"][1][0] == 1  # subj.subjective is label 1
    assert [len(tasks["SST2"].splits[s][1]) for s in ("train", "dev", "test")] == [24, 24, 24]
    trec_texts, trec_labels = tasks["TREC"].splits["train"]
    assert trec_texts[0] == "How did serfdom develop in Russia ? 0" and trec_labels[0] == 1  # DESC
    assert sorted(set(trec_labels)) == [0, 1, 2, 3, 4, 5]
    mrpc, y = tasks["MRPC"].splits["train"]
    assert tasks["MRPC"].pairs and mrpc[0] == ("a good film 0", "a good film 0") and y.count(1) == 24 and len(y) == 48


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
    scores = [round(100 * cross_val_score(LogisticRegression(C=c, random_state=1111, max_iter=1000), x, y, cv=cv).mean(), 2)
              for c in KFOLD_GRID]
    c = KFOLD_GRID[int(np.argmax(scores))]
    r = kfold_then_test(x, y, xt, yt, k=5)
    assert r["c"] == c and r["dev"] == max(scores)
    assert r["accuracy"] == round(100 * LogisticRegression(C=c, random_state=1111, max_iter=1000).fit(x, y).score(xt, yt), 2)
    # the inner k-fold: C chosen on each outer training part
    r = inner_kfold(x, y, k=5)
    outer = list(cv.split(x, y))
    assert len(r["folds"]) == 5 and r["n"] == 60
    a, b = outer[0]
    inner = [round(100 * cross_val_score(LogisticRegression(C=c, random_state=1111, max_iter=1000), x[a], y[a],
                                         cv=cv).mean(), 2) for c in INNER_GRID]
    assert r["c"][0] == INNER_GRID[int(np.argmax(inner))]
    assert r["folds"][0] == round(100 * LogisticRegression(C=r["c"][0], random_state=1111, max_iter=1000)
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
