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
