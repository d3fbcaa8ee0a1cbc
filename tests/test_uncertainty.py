"""Multi-label zero-shot (FSD50K's layout; mAP, mAUC, d', LRAP against scikit-learn) and
the uncertainty of every number (bootstrap intervals, McNemar), issue 22 items 3 and 5."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import (
    average_precision_score,
    label_ranking_average_precision_score,
    roc_auc_score,
)
from test_cli import clapkit

from clapkit.data import specs
from clapkit.data.audio.labelled import load_labelled, write_wavs
from clapkit.errors import DataError
from clapkit.evaluation.metrics import (
    multilabel_metrics,
    retrieval_metrics,
    weighted_average_precision,
)
from clapkit.evaluation.uncertainty import mcnemar, mean_interval, weighted_interval


def _scores(seed=0, n=60, c=7):
    rng = np.random.default_rng(seed)
    s = np.round(rng.normal(size=(n, c)), 1)  # rounded: many ties, which sklearn groups into one threshold
    y = rng.random((n, c)) < 0.3
    y[:, -1] = False  # a class with no positive
    y[0, :-1] = True  # an item with every label but the last
    return s, y


def test_average_precision_is_scikit_learns_with_ties_and_weights():
    s, y = _scores()
    w = np.random.default_rng(1).integers(0, 4, len(s)).astype(float)
    for weights in (None, w):
        ap = weighted_average_precision(s, y, weights)
        for c in range(y.shape[1]):
            if y[:, c].any() and (weights is None or (weights * y[:, c]).sum() > 0):
                assert ap[c] == pytest.approx(average_precision_score(y[:, c], s[:, c], sample_weight=weights), abs=1e-12)
            else:
                assert np.isnan(ap[c])


def test_multilabel_metrics_against_scikit_learn():
    s, y = _scores()
    names = [f"class_{c}" for c in range(y.shape[1])]
    m = multilabel_metrics(s, y, names)
    keep = y.any(axis=0)
    assert m["mAP"] == pytest.approx(average_precision_score(y[:, keep], s[:, keep], average="macro"), abs=1e-12)
    both = keep & (~y).any(axis=0)
    mauc = np.mean([roc_auc_score(y[:, c], s[:, c]) for c in np.flatnonzero(both)])
    assert m["mAUC"] == pytest.approx(mauc, abs=1e-12)
    assert m["d_prime"] == pytest.approx(np.sqrt(2) * norm.ppf(mauc), abs=1e-12)
    assert m["lrap"] == pytest.approx(label_ranking_average_precision_score(y, s), abs=1e-12)
    assert m["classes_without_positives"] == ["class_6"] and m["classes_in_mean"] == 6
    assert m["per_class"]["class_6"] == {"AP": None, "AUC": None, "positives": 0}
    assert m["per_class"]["class_0"]["AP"] == pytest.approx(average_precision_score(y[:, 0], s[:, 0]))


def test_a_bootstrap_interval_covers_a_known_mean_as_often_as_it_says():
    """Bernoulli(0.3) items: the 95% percentile interval of the mean covers 0.3 in about
    95% of 400 simulated test sets and is about as wide as the normal approximation."""
    rng = np.random.default_rng(0)
    covered, widths = 0, []
    for k in range(400):
        x = rng.random(200) < 0.3
        lo, hi = mean_interval(x, resamples=400, seed=k)
        covered += lo <= 0.3 <= hi
        widths.append(hi - lo)
    assert 0.91 <= covered / 400 <= 0.98
    assert np.mean(widths) == pytest.approx(2 * 1.96 * np.sqrt(0.3 * 0.7 / 200), rel=0.08)
    x = rng.random(200) < 0.3
    assert mean_interval(x, 500, seed=3) == mean_interval(x, 500, seed=3) != mean_interval(x, 500, seed=4)
    assert mean_interval(np.ones(50), 100) == (1.0, 1.0)  # no spread, no interval


def test_the_map_interval_covers_the_population_map():
    """Test sets of 300 items drawn from a population of 20,000 whose mAP is known: the 95%
    interval of the mAP (weighted resamples) covers it in about 95% of 120 draws."""
    rng = np.random.default_rng(0)
    y = rng.random((20000, 4)) < [0.15, 0.3, 0.45, 0.6]
    s = y * [0.5, 1.0, 1.5, 2.0] + rng.normal(size=(20000, 4))
    truth = float(np.mean([average_precision_score(y[:, c], s[:, c]) for c in range(4)]))
    covered = 0
    for k in range(120):
        idx = rng.integers(0, 20000, 300)
        lo, hi = weighted_interval(lambda w, idx=idx: float(np.nanmean(weighted_average_precision(s[idx], y[idx], w))),
                                   300, 300, seed=k)
        covered += lo <= truth <= hi
    assert 0.86 <= covered / 120 <= 1.0
    assert weighted_interval(lambda w: float(w.sum()), 10, 50) == (10.0, 10.0)  # a resample keeps the item count


def test_the_mean_class_accuracy_interval_covers_the_population_value():
    """Imbalanced classes with known accuracies (0.9, 0.6, 0.3; shares 0.7, 0.2, 0.1): the
    mean-class accuracy is 0.6 whatever the shares; its interval covers it about 95% of the
    time, and its centre agrees with scipy's percentile bootstrap of the same statistic."""
    from scipy.stats import bootstrap

    from clapkit.evaluation.metrics import classification_metrics, mean_class_accuracy

    rng = np.random.default_rng(2)
    acc, covered = np.array([0.9, 0.6, 0.3]), 0
    for k in range(150):
        y = rng.choice(3, size=300, p=[0.7, 0.2, 0.1])
        correct = rng.random(300) < acc[y]
        scores = np.where(correct[:, None], np.eye(3)[y], np.eye(3)[(y + 1) % 3])
        lo, hi = classification_metrics(scores, y, list("abc"), bootstrap=300, seed=k)["ci"]["mean_class_accuracy"]
        covered += lo <= 0.6 <= hi
    assert 0.88 <= covered / 150 <= 1.0
    theirs = bootstrap((correct.astype(float), y), lambda c, yy: mean_class_accuracy(c, yy.astype(int)), paired=True,
                       vectorized=False, n_resamples=4000, method="percentile", random_state=0).confidence_interval
    ours = classification_metrics(scores, y, list("abc"), bootstrap=4000, seed=0)["ci"]["mean_class_accuracy"]
    assert ours == pytest.approx((theirs.low, theirs.high), abs=0.015)


def test_the_retrieval_map_interval_is_scipys_percentile_bootstrap_of_the_query_aps():
    from scipy.stats import bootstrap

    from clapkit.evaluation.metrics import average_precision_at_k

    rng = np.random.default_rng(3)
    sim = rng.normal(size=(300, 60))
    targets = [np.array([i % 60, (i + 7) % 60]) for i in range(300)]
    sim[np.arange(300), np.arange(300) % 60] += 1.5
    m = retrieval_metrics(sim, targets, bootstrap=5000, seed=0)
    theirs = bootstrap((average_precision_at_k(sim, targets, 10),), np.mean, n_resamples=5000, method="percentile",
                       random_state=0).confidence_interval
    assert m["ci"]["mAP@10"] == pytest.approx((theirs.low, theirs.high), abs=0.01)
    assert m["ci"]["mAP@10"][0] < m["mAP@10"] < m["ci"]["mAP@10"][1]


def test_the_paired_bootstrap_covers_a_known_difference_and_is_calibrated_under_the_null():
    """Two models on the same 400 items (A right with p 0.7, B 0.6, correlated): the 95%
    interval of A - B covers 0.1 in about 95% of 150 draws; when both are right with p 0.65
    the two-sided p-value falls under 0.05 in about 5% of draws."""
    from clapkit.evaluation.uncertainty import paired_bootstrap

    rng = np.random.default_rng(4)

    def draw(pa, pb):  # A right with probability pa, B with pb, on correlated items
        u = rng.random(400)  # a shared difficulty: the two models err on the same items more often
        return u < pa, (0.5 * u + 0.5 * rng.random(400)) < _inverse_p_b(pb)

    def diff(a, b):
        d = a.astype(float) - b.astype(float)
        return lambda w: float((w * d).sum() / w.sum())

    covered, rejected = 0, 0
    for k in range(150):
        a, b = draw(0.7, 0.6)
        lo, hi, _ = paired_bootstrap(diff(a, b), 400, 300, seed=k)
        covered += lo <= 0.1 <= hi
        a, b = draw(0.65, 0.65)
        rejected += paired_bootstrap(diff(a, b), 400, 300, seed=k)[2] < 0.05
    assert 0.88 <= covered / 150 <= 1.0
    assert rejected / 150 <= 0.11


def _inverse_p_b(p):
    """The q with P(0.5 u + 0.5 v < q) = p for u, v uniform on [0, 1] (the mean's
    triangular law)."""
    t = np.sqrt(2 * p) if p <= 0.5 else 2 - np.sqrt(2 * (1 - p))
    return t / 2


def test_mcnemar_is_scipys_exact_binomial_test_on_the_discordant_items():
    from scipy.stats import binomtest

    rng = np.random.default_rng(5)
    for _ in range(30):
        a, b = rng.random(60) < rng.uniform(0.3, 0.9), rng.random(60) < rng.uniform(0.3, 0.9)
        only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
        expected = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
        assert mcnemar(a, b)["p_value"] == pytest.approx(expected, abs=1e-12)


def test_mcnemar_against_a_hand_computation():
    a = np.array([1] * 7 + [0] * 1 + [1] * 10 + [0] * 2, dtype=bool)  # 7 only A right, 1 only B right, 10 both, 2 neither
    b = np.array([0] * 7 + [1] * 1 + [1] * 10 + [0] * 2, dtype=bool)
    r = mcnemar(a, b)
    assert (r["only_a"], r["only_b"]) == (7, 1)
    assert r["p_value"] == pytest.approx(2 * (1 + 8) / 2**8)  # 2 P(X <= 1), X ~ Bin(8, 1/2) = 18/256
    assert r["difference"] == pytest.approx((17 - 11) / 20)
    assert mcnemar(a, a)["p_value"] == 1.0
    with pytest.raises(ValueError, match="different items"):
        mcnemar(a, b[:-1])


def test_retrieval_r_at_k_gets_an_interval_over_the_queries():
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(80, 40))
    targets = [np.array([i % 40]) for i in range(80)]
    m = retrieval_metrics(sim, targets, bootstrap=300, seed=0)
    for k in (1, 5, 10):
        lo, hi = m["ci"][f"R@{k}"]
        assert lo <= m[f"R@{k}"] <= hi
    assert "ci" not in retrieval_metrics(sim, targets)


def _fsd50k(root, vocabulary="0,Electric_guitar,/m/02sgy\n1,Guitar,/m/0342h\n2,Bark,/m/05tny_\n3,Rain,/m/06mb1\n"):
    gt = root / "FSD50K.ground_truth"
    gt.mkdir(parents=True)
    (gt / "vocabulary.csv").write_text(vocabulary)
    rows = [("11", "Electric_guitar,Guitar"), ("12", "Guitar"), ("13", "Bark"), ("14", "Bark,Guitar"), ("15", "Bark")]
    (gt / "eval.csv").write_text("fname,labels,mids\n" + "".join(f'{f},"{labels}","/m/x"\n' for f, labels in rows))
    (gt / "dev.csv").write_text('fname,labels,mids,split\n21,"Guitar",/m/0342h,train\n22,Bark,/m/05tny_,val\n')
    write_wavs(root / "FSD50K.eval_audio", [f"{f}.wav" for f, _ in rows], seconds=0.5)
    write_wavs(root / "FSD50K.dev_audio", ["21.wav", "22.wav"], seconds=0.5)
    return gt


def test_fsd50k_is_read_in_its_own_layout(tmp_path):
    gt = _fsd50k(tmp_path)
    data = load_labelled(f"fsd50k:{tmp_path}")
    assert data.multilabel and data.class_names == ["Electric_guitar", "Guitar", "Bark", "Rain"]
    assert [c.labels for c in data.clips] == [(0, 1), (1,), (2,), (2, 1), (2,)]
    assert data.targets()[:, 3].sum() == 0  # Rain: in the vocabulary, no positive here
    assert [c.media.name for c in load_labelled(f"fsd50k:{tmp_path}", split="val").clips] == ["22.wav"]
    assert len(load_labelled(f"fsd50k:{tmp_path}", split="dev").clips) == 2
    guitar = load_labelled(f"fsd50k:{tmp_path}", classes=["Guitar"])  # items keep only the selected labels
    assert [c.labels for c in guitar.clips] == [(0,), (0,), (0,)] and guitar.class_names == ["Guitar"]
    (gt / "eval.csv").write_text('fname,labels,mids\n11,"Electric_guitar,Banjo",/m/x\n')
    with pytest.raises(DataError, match=r"eval.csv line 2: label\(s\) Banjo not in .*vocabulary.csv"):
        load_labelled(f"fsd50k:{tmp_path}")
    (gt / "eval.csv").write_text("fname,labels,mids\n99,Bark,/m/x\n")
    with pytest.raises(DataError, match=r"eval.csv line 2: audio file not found: .*99.wav"):
        load_labelled(f"fsd50k:{tmp_path}")
    with pytest.raises(DataError, match="no clips left"):  # the only row skipped, and counted
        load_labelled(f"fsd50k:{tmp_path}", skip_bad=True)
    with pytest.raises(DataError, match="fsd50k split 'test': choose one of eval, dev, train, val"):
        load_labelled(f"fsd50k:{tmp_path}", split="test")
    assert "fsd50k" in specs.names_of(specs.LABELLED, "audio")


def test_eval_zeroshot_on_a_multilabel_set_reports_map_with_an_interval(tmp_path, tiny_checkpoint):
    _fsd50k(tmp_path / "FSD50K")
    out = tmp_path / "zs.json"
    proc = clapkit("eval", "zeroshot", "--model", tiny_checkpoint, "--data", f"fsd50k:{tmp_path / 'FSD50K'}",
                   "--out", out, "--bootstrap", "200")
    m = json.loads(out.read_text())
    assert m["multilabel"] and m["clips"] == 5 and m["classes"] == 4 and m["classes_without_positives"] == ["Rain"]
    # recomputed here from the model's own cosines
    from clapkit.evaluation.zeroshot import class_text_embeddings
    from clapkit.inference.embed import embed_media
    from clapkit.models.dual import DualEncoder

    model = DualEncoder.load(tiny_checkpoint)
    data = load_labelled(f"fsd50k:{tmp_path / 'FSD50K'}")
    sim = embed_media(model, data.clips) @ class_text_embeddings(model, data.label_texts(), m["templates"]).T
    y = data.targets()
    assert m["mAP"] == pytest.approx(average_precision_score(y[:, :3], sim[:, :3], average="macro"), abs=1e-6)
    lo, hi = m["ci"]["mAP"]
    assert lo <= m["mAP"] <= hi and m["bootstrap"] == {"resamples": 200, "seed": 0, "level": 0.95, "over": "clips"}
    assert "mAP" in proc.stdout and "3 of 4 classes" in proc.stdout
    # a multi-label result records the names it prompted with, as a single-label one does
    assert m["class_names_used"] == ["Electric guitar", "Guitar", "Bark", "Rain"] and m["prompts"] == "clapkit"


def test_eval_zeroshot_gives_each_accuracy_an_interval(tmp_path, tiny_checkpoint, tiny_synthetic):
    out = tmp_path / "zs.json"
    clapkit("eval", "zeroshot", "--model", tiny_checkpoint, "--data", f"folder:{tiny_synthetic / 'unseen'}",
            "--out", out, "--bootstrap", "300", "--seed", "1")
    m = json.loads(out.read_text())
    assert not m["multilabel"] and m["ci"]["top1"][0] <= m["top1"] <= m["ci"]["top1"][1]
    assert m["bootstrap"]["seed"] == 1
    names = sorted(p.name for p in (tiny_synthetic / "unseen").iterdir() if p.is_dir())
    captions = tmp_path / "train.csv"  # training captions that name the first unseen class only
    captions.write_text(f"audio,caption\na.wav,we hear a {names[0].replace('_', ' ')}\nb.wav,silence\n")
    leak = tmp_path / "leak.json"
    clapkit("eval", "zeroshot", "--model", tiny_checkpoint, "--data", f"folder:{tiny_synthetic / 'unseen'}",
            "--out", leak, "--bootstrap", "0", "--captions", captions)
    r = json.loads(leak.read_text())["leakage"]
    assert r["dirty_fraction"] == 0.5 and names[0] in r["classes_named"]
    assert r["top1_named_classes"]["n"] + r["top1_unnamed_classes"]["n"] == m["clips"]
    none = tmp_path / "none.json"
    clapkit("eval", "zeroshot", "--model", tiny_checkpoint, "--data", f"folder:{tiny_synthetic / 'unseen'}",
            "--out", none, "--bootstrap", "0")
    assert "ci" not in json.loads(none.read_text())


def test_the_clip_benchmark_map_interval_is_not_biased_by_resamples_missing_a_rare_class():
    """40 classes with 2 positives each: a resample often misses a class's positives. Such a
    class is left out of that resample's mean (its 0 is only for classes without positives
    in the data), so the interval stays around the estimate, a fixed share of the mAP's."""
    from clapkit.data.files import Skipped
    from clapkit.data.records import LabelledClip, LabelledSet
    from clapkit.evaluation.zeroshot import zeroshot_metrics

    rng = np.random.default_rng(0)
    y = np.zeros((200, 41), bool)
    for c in range(40):
        y[rng.choice(200, 2, replace=False), c] = True
    y[y.sum(1) == 0, 0] = True
    s = y * 2.0 + rng.normal(size=y.shape)  # class 40: no positive in the data
    clips = [LabelledClip(Path(f"{i}.wav"), int(np.flatnonzero(r)[0]), None, "row", tuple(np.flatnonzero(r)))
             for i, r in enumerate(y)]
    m = zeroshot_metrics(s, LabelledSet(clips, [str(c) for c in range(41)], Skipped(), True), bootstrap=300)
    lo, hi = m["ci"]["mAP_clip_benchmark"]
    assert lo < m["mAP_clip_benchmark"] < hi
    assert m["mAP_clip_benchmark"] == pytest.approx(m["mAP"] * 40 / 41)
    assert (lo, hi) == pytest.approx((m["ci"]["mAP"][0] * 40 / 41, m["ci"]["mAP"][1] * 40 / 41))
