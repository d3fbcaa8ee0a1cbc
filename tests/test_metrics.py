import numpy as np
import pytest

from clapkit.evaluation.metrics import (
    audio_text_retrieval,
    average_precision_at_k,
    classification_metrics,
    ranks_of_targets,
    retrieval_metrics,
)


def test_ranks_with_ties_are_pessimistic():
    sim = np.array([[0.5, 0.5, 0.1], [0.9, 0.2, 0.9], [0.1, 0.2, 0.3]])
    # q0 target 0 ties with 1 -> rank 2; q1 target 2 ties with 0 -> rank 2; q2 target 2 best -> 1
    assert ranks_of_targets(sim, [np.array([0]), np.array([2]), np.array([2])]).tolist() == [2, 2, 1]


def test_constant_scores_give_worst_rank():
    sim = np.zeros((3, 4))
    assert ranks_of_targets(sim, [np.array([i]) for i in range(3)]).tolist() == [4, 4, 4]


def test_average_precision_hand_computed():
    # relevant at ranks 1 and 3 of 4: AP = (1/1 + 2/3) / 2
    sim = np.array([[0.9, 0.8, 0.7, 0.6]])
    ap = average_precision_at_k(sim, [np.array([0, 2])], k=10)
    assert ap[0] == pytest.approx((1 + 2 / 3) / 2)
    # with k=2 only the first hit counts; normalised by min(2, k)=2
    assert average_precision_at_k(sim, [np.array([0, 2])], k=2)[0] == pytest.approx(0.5)


def test_retrieval_multi_caption_hand_built():
    # 3 audio, 5 captions: captions 0,1 -> audio 0; 2,3 -> audio 1; 4 -> audio 2
    text_audio = np.array([0, 0, 1, 1, 2])
    audio = np.eye(3)
    text = np.array([
        [1.0, 0.0, 0.0],   # -> audio 0, rank 1
        [0.0, 1.0, 0.0],   # -> says audio 1; its audio 0 is rank 2 (tie with audio 2 at 0 -> pessimistic 3)
        [0.0, 0.9, 0.1],   # -> audio 1, rank 1
        [0.2, 0.1, 0.7],   # audio 1 scores 0.1: below 0.7 and 0.2 -> rank 3
        [0.0, 0.0, 1.0],   # -> audio 2, rank 1
    ])
    m = audio_text_retrieval(audio, text, text_audio)
    t2a = m["text_to_audio"]
    # text->audio ranks: [1, 3, 1, 3, 1]
    assert t2a["R@1"] == pytest.approx(3 / 5)
    assert t2a["R@5"] == 1.0
    assert t2a["median_rank"] == 1.0
    assert t2a["queries"] == 5
    # audio->text: audio 0 scores captions [1, 0, 0, .2, 0]: caption 0 is best -> rank 1
    # audio 1 scores [0, 1, .9, .1, 0]: caption 1 (not its own) beats caption 2 -> rank 2
    # audio 2 scores [0, 0, .1, .7, 1] -> caption 4 rank 1
    a2t = m["audio_to_text"]
    assert a2t["R@1"] == pytest.approx(2 / 3)
    assert a2t["R@5"] == 1.0
    assert a2t["queries"] == 3
    # mAP@10 of audio 0: its captions 0,1 at ranks 1 and ? : sorted [c0=1, c3=.2, c1=0, c2=0, c4=0]
    # ties at 0 put non-relevant first: order c0, c3, c2, c4, c1 -> hits at 1 and 5: (1 + 2/5)/2
    ap0 = (1 + 2 / 5) / 2
    # audio 1: order c1(1, rel... no: c1 belongs to audio 0) -> c1, c2(.9 rel), c3(.1 rel): hits at 2,3
    ap1 = (1 / 2 + 2 / 3) / 2
    ap2 = 1.0
    assert a2t["mAP@10"] == pytest.approx((ap0 + ap1 + ap2) / 3)


def test_median_rank_is_laion_claps_integer():
    # ranks 1, 2, 3, 4 (query q's target at column q, beaten by q others): LAION-CLAP
    # reports floor(median(0-based ranks)) + 1 = floor(1.5) + 1 = 2, not 2.5
    sim = np.array([[1.0, 0, 0, 0], [2.0, 1, 0, 0], [2.0, 2, 1, 0], [2.0, 2, 2, 1]])
    m = retrieval_metrics(sim, [np.array([q]) for q in range(4)])
    assert m["median_rank"] == 2 and isinstance(m["median_rank"], int)
    assert m["mean_rank"] == 2.5
    # an odd count: ranks 1, 5, 9 -> floor(4) + 1 = 5
    sim3 = np.zeros((3, 10))
    for q, beaten in enumerate([0, 4, 8]):
        sim3[q, 9] = 1.0
        sim3[q, :beaten] = 2.0
    assert retrieval_metrics(sim3, [np.array([9])] * 3)["median_rank"] == 5


def test_retrieval_requires_captions_for_every_audio():
    with pytest.raises(ValueError, match="at least one caption"):
        audio_text_retrieval(np.eye(2), np.eye(2)[:1], np.array([0]))


def test_retrieval_metrics_perfect():
    m = retrieval_metrics(np.eye(4), [np.array([i]) for i in range(4)])
    assert m["R@1"] == 1.0 and m["mAP@10"] == 1.0 and m["median_rank"] == 1.0


def test_zeroshot_classification_on_constructed_embeddings():
    # 3 classes, text embeddings = basis; audio near their class except one mistake
    text = np.eye(3)
    audio = np.array([[0.9, 0.1, 0.0], [0.8, 0.0, 0.1], [0.1, 0.9, 0.0], [0.0, 0.2, 0.8], [0.6, 0.0, 0.5]])
    labels = np.array([0, 0, 1, 2, 2])
    m = classification_metrics(audio @ text.T, labels, ["a", "b", "c"], ks=(1, 2))
    assert m["top1"] == pytest.approx(4 / 5)
    assert m["top2"] == 1.0
    assert m["per_class"]["c"] == {"accuracy": 0.5, "clips": 2}
    assert m["mean_class_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["confusion"] == [[2, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert m["chance"] == pytest.approx(1 / 3)


def test_confusion_follows_the_accuracy_tie_rule():
    """A constant model: accuracy 0 and an empty confusion diagonal (before, argmax gave
    class 0 to every clip, a diagonal entry for class 0 beside an accuracy of 0)."""
    labels = np.array([0, 0, 1, 2, 2, 2])
    m = classification_metrics(np.zeros((6, 3)), labels, ["a", "b", "c"])
    assert m["top1"] == 0.0
    assert np.trace(np.array(m["confusion"])) == 0
    assert np.array(m["confusion"]).tolist() == [[0, 2, 0], [1, 0, 0], [3, 0, 0]]


def test_confusion_diagonal_equals_per_class_accuracy_with_partial_ties():
    scores = np.array([
        [0.9, 0.9, 0.1],  # true 0, tied with 1 -> wrong, predicted 1
        [0.9, 0.2, 0.1],  # true 0, clear -> right
        [0.5, 0.5, 0.5],  # true 1, all tied -> wrong, predicted 0 (first other)
        [0.1, 0.1, 0.7],  # true 2, clear -> right
        [0.3, 0.8, 0.8],  # true 2, tied with 1 -> wrong, predicted 1
    ])
    labels = np.array([0, 0, 1, 2, 2])
    m = classification_metrics(scores, labels, ["a", "b", "c"])
    cm = np.array(m["confusion"])
    assert cm.tolist() == [[1, 1, 0], [1, 0, 0], [0, 1, 1]]
    assert m["top1"] == pytest.approx(2 / 5) == np.trace(cm) / cm.sum()
    for c, name in enumerate("abc"):
        assert m["per_class"][name]["accuracy"] == pytest.approx(cm[c, c] / cm[c].sum())


def test_laions_audio_to_text_map_keeps_the_captions_in_caption_order():
    """LAION-CLAP's evaluate_clotho_audiocaps: one audio whose 5 captions sit at 0-based
    positions 6, 0, 8, 1, 9 of its ranking (caption order). Its code sums i / (pos_i + 1)
    in caption order: (1/7 + 2/1 + 3/9 + 4/2 + 5/10) / 5 = 0.9952; the definition sorts the
    positions first: (1/1 + 2/2 + 3/7 + 4/9 + 5/10) / 5 = 0.6746."""
    from clapkit.evaluation.metrics import laion_audio_to_text_map10

    positions = [6, 0, 8, 1, 9]
    sim = np.zeros((1, 12))
    sim[0] = -np.arange(12, dtype=float)  # column j is at position j
    caps = np.array(positions)  # the captions, in caption order, are these columns
    laion = laion_audio_to_text_map10(sim, [caps])[0]
    assert laion == pytest.approx((1 / 7 + 2 / 1 + 3 / 9 + 4 / 2 + 5 / 10) / 5)
    assert average_precision_at_k(sim, [caps], 10)[0] == pytest.approx((1 + 1 + 3 / 7 + 4 / 9 + 5 / 10) / 5)
    # in rank order the two agree; captions beyond position 9 count 0 and the divisor stays 5
    assert laion_audio_to_text_map10(sim, [np.array([0, 1, 6, 8, 11])])[0] == pytest.approx((1 + 1 + 3 / 7 + 4 / 9) / 5)
    assert laion_audio_to_text_map10(sim, [np.array([4, 3, 2, 1, 0])])[0] > 1  # no AP can exceed 1; this one does
    rng = np.random.default_rng(0)
    audio, text = rng.normal(size=(30, 8)), rng.normal(size=(150, 8))
    r = audio_text_retrieval(audio, text, np.repeat(np.arange(30), 5), bootstrap=200)["audio_to_text"]
    assert r["mAP@10_laion"] >= r["mAP@10"] and set(r["ci"]) >= {"mAP@10", "mAP@10_laion", "R@1"}


def test_the_mean_of_the_fold_scores_is_not_the_pooled_score():
    """UrbanSound8K's protocol as HEAR and X-ARES report it: each fold's accuracy, then their
    mean; folds of unequal size make it differ from the pooled accuracy."""
    from clapkit.evaluation.metrics import per_fold

    correct = np.array([1] * 8 + [0] * 2 + [1] * 1 + [0] * 1, dtype=bool)  # fold 1: 8 of 10, fold 2: 1 of 2
    folds = [1] * 10 + [2] * 2
    r = per_fold(correct, folds)
    assert r["folds"] == {1: 0.8, 2: 0.5} and r["mean"] == pytest.approx(0.65)
    assert correct.mean() == pytest.approx(9 / 12) and r["std"] == pytest.approx(np.std([0.8, 0.5], ddof=1))
    assert per_fold(correct, [None] * 12) is None and per_fold(correct, [3] * 12) is None


def test_hears_d_prime_is_the_mean_of_the_class_d_primes():
    """HEAR (heareval/score.py): roc_auc_score(average=None), then the mean of
    norm.ppf(auc) * sqrt(2); PANNs and AST: norm.ppf(mean AUC) * sqrt(2)."""
    from scipy.stats import norm
    from sklearn.metrics import roc_auc_score

    from clapkit.evaluation.metrics import multilabel_metrics

    rng = np.random.default_rng(1)
    y = rng.random((200, 5)) < 0.3
    s = y * rng.uniform(0, 2, size=5) + rng.normal(size=(200, 5))  # classes of different separability
    m = multilabel_metrics(s, y, list("abcde"))
    auc = roc_auc_score(y, s, average=None)
    assert m["d_prime_hear"] == pytest.approx(float(np.mean(norm.ppf(auc) * np.sqrt(2.0))), abs=1e-12)
    assert m["d_prime"] == pytest.approx(float(norm.ppf(auc.mean()) * np.sqrt(2.0)), abs=1e-12)
    assert m["d_prime_hear"] != pytest.approx(m["d_prime"], abs=1e-3)


def test_the_fold_mean_interval_covers_the_mean_of_the_fold_accuracies():
    """Folds of 30 and 300 items with accuracies 0.5 and 0.8: the fold mean is 0.65 (the
    pooled accuracy about 0.77); its interval covers 0.65 about 95% of the time."""
    from clapkit.evaluation.metrics import fold_mean_interval, per_fold

    rng = np.random.default_rng(0)
    folds = np.r_[np.ones(30, int), 2 * np.ones(300, int)]
    covered = 0
    for k in range(150):
        correct = rng.random(330) < np.where(folds == 1, 0.5, 0.8)
        lo, hi = fold_mean_interval(correct, folds, 300, k)
        covered += lo <= 0.65 <= hi
        assert lo <= per_fold(correct, folds)["mean"] <= hi
    assert 0.88 <= covered / 150 <= 1.0


def test_laions_map_ranks_tied_captions_in_caption_order():
    """Two captions of one audio tied at the top (duplicate captions embed alike): positions
    0 and 1, in caption order, as a stable descending sort gives them; another candidate tied
    with a caption ranks before it."""
    from clapkit.evaluation.metrics import laion_audio_to_text_map10

    sim = np.array([[0.9, 0.9, 0.1, 0.2]])
    assert laion_audio_to_text_map10(sim, [np.array([0, 1])])[0] == pytest.approx((1 / 1 + 2 / 2) / 2)
    sim = np.array([[0.9, 0.5, 0.5, 0.2]])  # caption 1 tied with the non-caption 2: after it
    assert laion_audio_to_text_map10(sim, [np.array([0, 1])])[0] == pytest.approx((1 / 1 + 2 / 3) / 2)
