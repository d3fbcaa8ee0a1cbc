"""clapkit's metrics and linear probe against CLIP_benchmark's own code (the installed
``clip_benchmark`` package, the dev environment's ``reference`` extra) on the same inputs.

CLIP_benchmark's linear probe insists on CUDA (``assert device == 'cuda'``, ``.cuda()``
calls); here those calls are pointed at the CPU and its autocast is off, which runs its
code unchanged in fp32, as clapkit's probe runs."""

import builtins

import numpy as np
import pytest
import torch
from clip_benchmark.metrics import zeroshot_classification as cb_classification

from clapkit.evaluation.metrics import (
    audio_text_retrieval,
    classification_metrics,
    weighted_average_precision,
)
from clapkit.evaluation.probe import ProbeOptions, Split, _val_split, probe_eval


@pytest.fixture(autouse=True)
def numpy2_float(monkeypatch):
    """CLIP_benchmark's ``accuracy`` (its linear probe's too) ends in ``float()`` of a
    one-element array, which NumPy 2.4 refuses; its module's ``float`` takes that element."""
    monkeypatch.setattr(cb_classification, "float", lambda v: builtins.float(np.asarray(v).reshape(-1)[0]),
                        raising=False)


def test_top_k_and_mean_per_class_recall_are_clip_benchmarks():
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(0)
    scores, y = rng.normal(size=(300, 12)).astype(np.float32), rng.integers(0, 12, 300)
    ours = classification_metrics(scores, y, [f"c{i}" for i in range(12)])
    acc1, acc5 = cb_classification.accuracy(torch.from_numpy(scores), torch.from_numpy(y), topk=(1, 5))
    assert ours["top1"] == pytest.approx(acc1, abs=1e-12) and ours["top5"] == pytest.approx(acc5, abs=1e-12)
    # CLIP_benchmark's mean_per_class_recall is scikit-learn's balanced accuracy of the argmax
    assert ours["mean_class_accuracy"] == pytest.approx(balanced_accuracy_score(y, scores.argmax(1)), abs=1e-12)


def test_multilabel_average_precision_is_clip_benchmarks():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(200, 7))
    targets = (rng.random((200, 7)) < 0.2).astype(np.int64)
    targets[0] = 1  # every class has a positive item
    theirs = cb_classification.average_precision_per_class(torch.from_numpy(scores), torch.from_numpy(targets)).numpy()
    # continuous scores (no ties), where the two readings of AP agree
    np.testing.assert_allclose(weighted_average_precision(scores, targets), theirs, atol=1e-6)


def test_map_clip_benchmark_counts_a_class_without_positives_as_zero_as_it_does():
    """CLIP_benchmark's mean of ``average_precision_per_class`` (zeroshot_classification.py:
    its AP divides by max(positives, 1), so a class with none adds an AP of 0 to the mean),
    beside clapkit's mAP, which leaves such a class out (scikit-learn's, HEAR's)."""
    from clapkit.evaluation.metrics import multilabel_metrics

    rng = np.random.default_rng(5)
    scores = rng.normal(size=(150, 6))
    targets = (rng.random((150, 6)) < 0.25).astype(np.int64)
    targets[:, 4] = 0  # no positive for class 4
    theirs = cb_classification.average_precision_per_class(torch.from_numpy(scores), torch.from_numpy(targets))
    m = multilabel_metrics(scores, targets, [f"c{i}" for i in range(6)])
    assert m["mAP_clip_benchmark"] == pytest.approx(float(theirs.mean()), abs=1e-6)
    assert m["mAP"] == pytest.approx(float(theirs[[0, 1, 2, 3, 5]].mean()), abs=1e-6) and m["mAP"] > m["mAP_clip_benchmark"]


def test_retrieval_recall_at_k_is_clip_benchmarks():
    from clip_benchmark.metrics.zeroshot_retrieval import recall_at_k

    rng = np.random.default_rng(2)
    audio, text = rng.normal(size=(40, 16)), rng.normal(size=(200, 16))
    text_audio = np.repeat(np.arange(40), 5)  # five captions a clip, as Clotho and COCO have
    ours = audio_text_retrieval(audio, text, text_audio)
    scores = torch.from_numpy(text @ audio.T)  # CLIP_benchmark's (texts, images)
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(200), torch.from_numpy(text_audio)] = True
    for k in (1, 5, 10):
        t2a = float((recall_at_k(scores, positive, k) > 0).float().mean())
        a2t = float((recall_at_k(scores.T, positive.T, k) > 0).float().mean())
        # float32 means there: a step of 1/200 apart
        assert ours["text_to_audio"][f"R@{k}"] == pytest.approx(t2a, abs=1e-6), k
        assert ours["audio_to_text"][f"R@{k}"] == pytest.approx(a2t, abs=1e-6), k


@pytest.fixture
def cuda_on_cpu(monkeypatch):
    """CLIP_benchmark's probe, whose ``.cuda()`` and ``.to('cuda')`` calls land on the CPU."""
    real_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        args = tuple("cpu" if a == "cuda" else a for a in args)
        if kwargs.get("device") == "cuda":
            kwargs["device"] = "cpu"
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "cuda", lambda self, *a, **k: self)
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    monkeypatch.setattr(torch.Tensor, "to", to)
    from clip_benchmark.metrics import linear_probe

    return linear_probe


@pytest.mark.parametrize("shots,share", [(None, 0.2), (4, 0.2), (None, 0.0)])
def test_linear_probe_is_clip_benchmarks_evaluate(tmp_path, cuda_on_cpu, shots, share):
    """The same training, validation and test features: CLIP_benchmark's ``evaluate``
    (its global torch generator seeded with the run's seed, as its permutation reads it)
    chooses the weight decay clapkit chooses and scores the same accuracies. With
    ``val_proportion`` 0 (clapkit's) it is called as its CLI calls it without
    --val_proportion: ``val_dataloader=None``, weight decay 0, no search."""
    import warnings

    rng = np.random.default_rng(3)
    classes, dim = 6, 24
    centres = rng.normal(size=(classes, dim))
    y = np.repeat(np.arange(classes), 40)
    feats = (centres[y] + 1.6 * rng.normal(size=(len(y), dim))).astype(np.float32)  # overlapping: the decay matters
    test = np.arange(len(y)) % 4 == 0
    split = Split("test", np.flatnonzero(~test), np.flatnonzero(test))
    seed = 5
    opts = ProbeOptions(knn_k=3, bootstrap=0, seed=seed, shots=shots, seeds=1, val_proportion=share)  # None: all
    ours, _ = probe_eval({"x": feats}, y, [f"c{i}" for i in range(classes)], [split], opts)
    run = ours["features"]["x"]["runs"][0]

    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)  # CLIP_benchmark's featurizer normalises
    fit, val = _val_split(len(split.train), share, seed)  # tested equal to torch's random_split
    folder = tmp_path / "features" / "model"
    folder.mkdir(parents=True)
    for name, rows in (("train", split.train[fit]), ("val", split.train[val]), ("test", split.test)):
        torch.save(torch.from_numpy(unit[rows]), folder / f"features_{name}.pt")
        torch.save(torch.from_numpy(y[rows]), folder / f"targets_{name}.pt")
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pin_memory and autocast without CUDA
        theirs = cuda_on_cpu.evaluate(None, None, None, shots or -1, opts.batch_size, 0, opts.lr, opts.epochs, "model",
                                      seed, str(tmp_path / "features"), "cuda",
                                      val_dataloader=object() if share else None, amp=False)
    assert run["regularisation"] == theirs["weight_decay"] and (share or theirs["weight_decay"] == 0)
    assert run["val"] == len(val) and (share or len(val) == 0)
    assert run["train"] == (shots * classes if shots else len(fit))
    assert ours["features"]["x"]["linear"]["top1"] == pytest.approx(theirs["lp_acc1"], abs=1e-12)
    assert ours["features"]["x"]["linear"]["top5"] == pytest.approx(theirs["lp_acc5"], abs=1e-12)
    assert ours["features"]["x"]["linear"]["mean_class_accuracy"] == pytest.approx(theirs["lp_mean_per_class_recall"],
                                                                                 abs=1e-12)


def test_voc2007_labels_are_clip_benchmarks(tmp_path):
    """Multi-label VOC 2007 from the devkit's files: every object's class, ``difficult``
    ones included, as CLIP_benchmark's ``PASCALVoc2007`` reads them (its split from
    ``aeroplane_test.txt``'s ids, clapkit's from ``test.txt``: the same list in the devkit)."""
    from clip_benchmark.datasets.voc2007 import PASCALVoc2007
    from PIL import Image

    from clapkit.data.image.labelled import load_labelled_images

    voc = tmp_path / "VOCdevkit" / "VOC2007"
    for sub in ("ImageSets/Main", "Annotations", "JPEGImages"):
        (voc / sub).mkdir(parents=True)
    objects = {"000001": [("dog", 0), ("person", 1)], "000003": [("sofa", 1)], "000004": [("car", 0), ("car", 1)],
               "000006": [("pottedplant", 0), ("diningtable", 0), ("chair", 1), ("tvmonitor", 0)]}
    for image_id, objs in objects.items():
        Image.new("RGB", (8, 8), (40, 90, 200)).save(voc / "JPEGImages" / f"{image_id}.jpg")
        body = "".join(f"<object><name>{n}</name><pose>Left</pose><truncated>0</truncated><difficult>{d}</difficult>"
                       "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>6</xmax><ymax>6</ymax></bndbox></object>"
                       for n, d in objs)
        (voc / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><folder>VOC2007</folder><filename>{image_id}.jpg</filename>{body}</annotation>")
    (voc / "ImageSets" / "Main" / "test.txt").write_text("".join(f"{i}\n" for i in objects))
    (voc / "ImageSets" / "Main" / "aeroplane_test.txt").write_text("".join(f"{i} -1\n" for i in objects))
    theirs = PASCALVoc2007(str(tmp_path), "test")
    ours = load_labelled_images(f"voc2007:{tmp_path}")
    assert ours.class_names == theirs.classes
    multi_hot = np.zeros((len(ours.clips), 20))
    for row, clip in enumerate(ours.clips):
        multi_hot[row, list(clip.labels)] = 1
    np.testing.assert_array_equal(multi_hot, theirs.labels.numpy())
    assert [c.media.stem for c in ours.clips] == list(theirs.paths)


def test_zero_shot_classifier_is_clip_benchmarks(tiny_checkpoint):
    """The class embeddings from a template ensemble: each prompt's embedding normalised,
    averaged, renormalised, as CLIP_benchmark's ``zero_shot_classifier`` builds them from
    the same text tower; names given by --classnames keep their "_" as it keeps them."""
    from clapkit.data.files import Skipped
    from clapkit.data.records import LabelledClip, LabelledSet
    from clapkit.evaluation.prompts import zeroshot_texts
    from clapkit.evaluation.zeroshot import class_text_embeddings, zeroshot_scores
    from clapkit.inference.embed import embed_text
    from clapkit.models.dual import DualEncoder

    model = DualEncoder.load(tiny_checkpoint)
    scale = np.random.default_rng(4)

    class Texts(list):
        def to(self, device):
            return self

    class Tower:  # CLIP_benchmark's model interface; unnormalised rows, which it normalises itself
        def encode_text(self, texts):
            e = embed_text(model, list(texts))
            return torch.from_numpy(e * scale.uniform(0.5, 3.0, size=(len(e), 1)).astype(np.float32))

    names = ["aquarium_fish", "maple tree", "dog"]
    templates = ["a photo of a {c}.", "a blurry photo of the {c}.", "{c}"]
    theirs = cb_classification.zero_shot_classifier(Tower(), Texts, names, templates, "cpu", amp=False).T.numpy()
    ours = class_text_embeddings(model, names, [t.replace("{c}", "{label}") for t in templates])
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    data = LabelledSet([LabelledClip(tiny_checkpoint, 0, None, "row")], ["fish", "tree", "dog"], Skipped())
    texts = zeroshot_texts(data.class_names, "audio", [t.replace("{c}", "{label}") for t in templates], names)
    assert texts.texts[0] == [t.format(c="aquarium_fish") for t in templates]  # as given, as CLIP_benchmark formats it
    scores = zeroshot_scores(model, data, texts, media_emb=np.ones((1, ours.shape[1]), np.float32))
    np.testing.assert_allclose(scores[0], theirs.sum(axis=1), atol=1e-5)
