"""Sentence-encoder training data: corpus, NLI, images (MNIST IDX, folders, digits), FSDD, augmentations."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from clapkit.data.audio.labelled import load_labelled
from clapkit.data.files import Skipped
from clapkit.data.image_datasets import ImageAugment, load_images
from clapkit.data.text import load_corpus, load_nli, load_text_classification
from clapkit.errors import DataError


def test_corpus_one_sentence_a_line(tmp_path):
    f = tmp_path / "wiki.txt"
    f.write_text("First sentence.\n  Second one.  \nThird.\n", encoding="utf-8")
    assert load_corpus(f"txt:{f}") == ["First sentence.", "Second one.", "Third."]
    assert load_corpus(str(f)) == load_corpus(f"txt:{f}")  # a bare path is a txt corpus


def test_corpus_empty_line_names_the_line_then_skips_and_counts(tmp_path):
    f = tmp_path / "wiki.txt"
    f.write_text("One.\n\nTwo.\nThree.\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"wiki.txt line 2: empty line"):
        load_corpus(f"txt:{f}")
    skipped = Skipped()
    assert load_corpus(f"txt:{f}", skip_bad=True, skipped=skipped) == ["One.", "Two.", "Three."]
    assert skipped.count == 1 and skipped.reasons["empty sentence"] == 1


def test_corpus_not_utf8_and_too_small(tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes("first\ncaf\xe9 au lait\nsecond\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt line 2: not UTF-8 text \(invalid continuation byte at byte 9\)"):
        load_corpus(f"txt:{f}")
    bom = tmp_path / "bom.txt"
    bom.write_bytes("One.\nTwo.\n".encode("utf-8-sig"))  # Windows editors write a byte-order mark
    assert load_corpus(f"txt:{bom}") == ["One.", "Two."]
    one = tmp_path / "one.txt"
    one.write_text("only one\n")
    with pytest.raises(DataError, match="at least 2"):
        load_corpus(f"txt:{one}")
    with pytest.raises(DataError, match="file not found"):
        load_corpus(f"txt:{tmp_path / 'missing.txt'}")


def test_corpus_from_shared_stsb_train_sentences(shared_data):
    sentences = load_corpus(f"stsb:{shared_data / 'sts' / 'stsbenchmark'}")
    assert len(sentences) == len(set(sentences)) == 10536  # distinct sentences of the 5,749 training pairs
    assert sentences[0] == "A plane is taking off."


def test_nli_triplets_and_bad_rows(tmp_path):
    f = tmp_path / "nli.csv"
    f.write_text('sent0,sent1,hard_neg\n"Two dogs run.",Animals are outside.,The pets sit on a couch.\n'
                 "A man sings.,Someone makes music.,Nobody is singing.\n", encoding="utf-8")
    t = load_nli(f)
    assert [(x.anchor, x.positive, x.negative) for x in t] == [
        ("Two dogs run.", "Animals are outside.", "The pets sit on a couch."),
        ("A man sings.", "Someone makes music.", "Nobody is singing.")]
    bad = tmp_path / "bad.csv"
    bad.write_text("sent0,sent1\na,b\n")
    with pytest.raises(DataError, match=r"bad.csv line 1: missing column\(s\) hard_neg"):
        load_nli(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("sent0,sent1,hard_neg\na,b,c\nd,,f\ng,h,i\n")
    with pytest.raises(DataError, match=r"empty.csv line 3: empty sent1"):
        load_nli(empty)
    skipped = Skipped()
    assert len(load_nli(empty, skip_bad=True, skipped=skipped)) == 2 and skipped.count == 1


def test_snli_jsonl_triplets_in_the_published_layout(tmp_path):
    """SNLI / MultiNLI .jsonl: each premise's entailment paired with its contradiction,
    '-' (no gold label) dropped and counted, an unknown label named by line."""
    import json

    rows = [
        {"gold_label": "neutral", "sentence1": "A man plays guitar.", "sentence2": "He is famous.", "pairID": "1n"},
        {"gold_label": "contradiction", "sentence1": "A man plays guitar.", "sentence2": "Nobody plays.", "pairID": "1c"},
        {"gold_label": "entailment", "sentence1": "A man plays guitar.", "sentence2": "Music is made.", "pairID": "1e"},
        {"gold_label": "-", "sentence1": "Two dogs run.", "sentence2": "Pets move.", "pairID": "2e"},
        {"gold_label": "entailment", "sentence1": "Two dogs run.", "sentence2": "Animals move.", "pairID": "2e2"},
        {"gold_label": "contradiction", "sentence1": "Two dogs run.", "sentence2": "Cats sleep.", "pairID": "2c"},
        {"gold_label": "entailment", "sentence1": "A cat naps.", "sentence2": "An animal rests.", "pairID": "3e"},
    ]
    f = tmp_path / "snli_1.0_train.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    skipped = Skipped()
    t = load_nli(f, skipped=skipped)
    assert [(x.anchor, x.positive, x.negative) for x in t] == [
        ("A man plays guitar.", "Music is made.", "Nobody plays."), ("Two dogs run.", "Animals move.", "Cats sleep.")]
    assert skipped.count == 1  # the '-' line
    with open(f, "a") as fh:
        fh.write(json.dumps({"gold_label": "maybe", "sentence1": "x", "sentence2": "y"}) + "\n" + '{"sentence1": "x"}\n')
    with pytest.raises(DataError, match=r"snli_1.0_train.jsonl line 8: gold_label 'maybe'; expected one of entailment"):
        load_nli(f)
    skipped = Skipped()
    assert len(load_nli(f, skip_bad=True, skipped=skipped)) == 2 and skipped.count == 3
    assert "line 9: missing key(s) sentence2, gold_label" in str(skipped.to_dict())


def _write_idx(path, array: np.ndarray, dims=None):
    dims = array.shape if dims is None else dims
    head = bytes([0, 0, 0x08, len(dims)]) + b"".join(struct.pack(">i", d) for d in dims)
    with gzip.open(path, "wb") as fh:
        fh.write(head + array.astype(np.uint8).tobytes())


def test_mnist_idx_fixture_and_bad_header(tmp_path):
    x = np.arange(3 * 4 * 4).reshape(3, 4, 4) % 256
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", x)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([2, 0, 1]))
    s = load_images(f"mnist:{tmp_path}")
    assert len(s) == 3 and s.batch(range(3)).shape == (3, 1, 4, 4)
    assert torch.allclose(s[1][0][0], torch.tensor(x[1] / 255.0, dtype=torch.float32)) and s[1][1] == 0
    assert s.labels.tolist() == [2, 0, 1] and s.class_names == ["0", "1", "2"]
    # a header that promises more bytes than the file holds
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", x, dims=(3, 5, 5))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: header says shape \(3, 5, 5\)"):
        load_images(f"mnist:{tmp_path}")
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", x)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([2, 0]))
    with pytest.raises(DataError, match="2 labels for 3 images"):
        load_images(f"mnist:{tmp_path}")


def test_shared_mnist_and_digits(shared_data):
    s = load_images(f"mnist:{shared_data / 'images' / 'mnist'}")
    assert len(s) == 10000 and s.labels[:5].tolist() == [7, 2, 1, 0, 4]
    first = s.batch(range(100))
    assert first.shape == (100, 1, 28, 28) and float(first.min()) == 0.0 and float(first.max()) == 1.0
    d = load_images("digits")
    assert len(d) == 1797 and d.batch([0]).shape == (1, 1, 8, 8) and len(d.class_names) == 10
    assert float(d.batch(range(1797)).max()) == 1.0  # digits' 0..16 scaled to [0, 1]


def test_image_folder_resizes_and_reports_bad_files(tmp_path):
    from PIL import Image

    for cls, value in (("cat", 0), ("dog", 255)):
        (tmp_path / cls).mkdir()
        for i, size in enumerate((10, 20)):
            Image.new("RGB", (size, size + 3), (value, value, value)).save(tmp_path / cls / f"{i}.png")
    s = load_images(f"folder:{tmp_path}", size=8, channels=3)
    x = s.batch(range(4))
    assert x.shape == (4, 3, 8, 8) and s.labels.tolist() == [0, 0, 1, 1] and s.class_names == ["cat", "dog"]
    assert float(x[0].max()) == 0.0 and float(x[3].min()) == 1.0
    (tmp_path / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken.png: cannot decode image"):
        load_images(f"folder:{tmp_path}", size=8, channels=3)
    s = load_images(f"folder:{tmp_path}", size=8, channels=1, skip_bad=True)
    assert s.batch(range(len(s))).shape == (4, 1, 8, 8) and s.skipped.count == 1


def test_image_folder_decodes_lazily_and_in_workers(tmp_path):
    """A folder set holds file names, not pixels: a file damaged after reading is found
    when its batch is decoded; DataLoader workers decode the same tensors as this process."""
    import pickle

    from PIL import Image
    from torch.utils.data import DataLoader

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    s = load_images(f"folder:{tmp_path}", size=16, channels=3)
    assert all(isinstance(p, Path) for p in s.items) and len(pickle.dumps(s)) < 4000  # 12 paths, no pixels
    batches = [[0, 5, 7], [11, 2], [3, 4, 6, 8]]
    loader = DataLoader(s, batch_sampler=batches, num_workers=2)
    for idx, (x, y) in zip(batches, loader, strict=True):
        assert torch.equal(x, s.batch(idx)) and y.tolist() == s.labels[idx].tolist()
    (tmp_path / "b" / "5.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match=r"b/5.png: cannot decode image"):
        s.batch([11])


def test_fsdd_naming_digit_or_speaker_label(tmp_path):
    rec = tmp_path / "recordings"
    rec.mkdir()
    for name in ("0_alice_0", "0_bob_1", "7_alice_2", "10_bob_3"):
        sf.write(rec / f"{name}.wav", np.zeros(800, np.float32), 8000)
    digits = load_labelled(f"fsdd:{tmp_path}")
    assert digits.class_names == ["0", "7", "10"] and [c.label for c in digits.clips] == [0, 0, 2, 1]
    speakers = load_labelled(f"fsdd:{rec}", label="speaker")
    assert speakers.class_names == ["alice", "bob"] and [c.label for c in speakers.clips] == [0, 1, 1, 0]
    sf.write(rec / "README.wav", np.zeros(10, np.float32), 8000)
    with pytest.raises(DataError, match=r"README.wav: name is not \{digit\}_\{speaker\}_\{index\}"):
        load_labelled(f"fsdd:{tmp_path}")
    assert len(load_labelled(f"fsdd:{tmp_path}", skip_bad=True).clips) == 4


def test_shared_fsdd(shared_data):
    s = load_labelled(f"fsdd:{shared_data / 'fsdd'}", label="speaker")
    assert len(s.clips) == 3000 and len(s.class_names) == 6
    assert np.bincount([c.label for c in s.clips]).tolist() == [500] * 6


def test_text_classification_csv(tmp_path):
    f = tmp_path / "sst.csv"
    f.write_text("text,label\ngood film,pos\nbad film,neg\n,pos\nfine,pos\n")
    with pytest.raises(DataError, match=r"sst.csv line 4: empty text"):
        load_text_classification(f)
    t = load_text_classification(f, skip_bad=True)
    assert t.texts == ["good film", "bad film", "fine"] and t.labels == [1, 0, 1] and t.class_names == ["neg", "pos"]
    with pytest.raises(DataError, match="missing column"):
        load_text_classification(f, label_column="sentiment")


def test_text_classification_json_and_jsonl(tmp_path):
    j = tmp_path / "tasks.json"
    j.write_text('[{"name": "GRINNING FACE", "category": "Smileys"}, {"name": "DOG", "category": 3}, '
                 '{"name": "CAT"}, "x", {"name": "  ", "category": "Animals"}]')
    with pytest.raises(DataError, match=r"tasks.json item 2: no value for category"):
        load_text_classification(j, "name", "category")
    skipped = Skipped()
    t = load_text_classification(j, "name", "category", skip_bad=True, skipped=skipped)
    assert t.texts == ["GRINNING FACE", "DOG"] and t.labels == [1, 0] and t.class_names == ["3", "Smileys"]
    assert skipped.count == 3
    lines = tmp_path / "tasks.jsonl"
    lines.write_text('{"text": "good", "label": "pos"}\n\n{"text": "bad", "label": "neg"}\n{bad json\n')
    with pytest.raises(DataError, match=r"tasks.jsonl line 4: not valid JSON"):
        load_text_classification(lines)
    assert load_text_classification(lines, skip_bad=True).texts == ["good", "bad"]
    (tmp_path / "obj.json").write_text('{"text": "good"}')
    with pytest.raises(DataError, match="expected a JSON array"):
        load_text_classification(tmp_path / "obj.json")


def test_shared_emoji_names_as_a_text_task(shared_data):
    t = load_text_classification(shared_data / "images" / "emoji" / "emoji.json", "name", "category")
    assert len(t.texts) == 1911 and len(t.class_names) == 10 and t.texts[0] == "HASH KEY"
    assert np.bincount(t.labels).min() == 5  # Component: the skin-tone modifiers


def test_transfer_tasks_are_checked_when_read(shared_data):
    """A class with fewer examples than folds, or a task mapping with an unknown key, is an
    error when the tasks are read, before any model runs."""
    from clapkit.errors import ConfigError
    from clapkit.evaluation.transfer import load_transfer_tasks

    emoji = str(shared_data / "images" / "emoji" / "emoji.json")
    with pytest.raises(DataError, match=r"emoji.json: class 'Component' has 5 example\(s\), fewer than the 10 folds"):
        load_transfer_tasks([{"data": emoji, "text": "name", "label": "category"}])
    (task,) = load_transfer_tasks([{"data": emoji, "text": "name", "label": "category", "folds": 5}])
    assert (task.folds, task.task.name, len(task.task.texts)) == (5, "emoji", 1911)
    with pytest.raises(ConfigError, match="give data"):
        load_transfer_tasks([{"path": emoji}])


def test_augment_identity_flip_and_determinism():
    x = torch.rand(5, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    identity = ImageAugment(12, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter=0.0, gray_p=0.0)
    assert torch.allclose(identity(x, g), x, atol=1e-5)
    flip = ImageAugment(12, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=1.0, jitter=0.0, gray_p=0.0)
    assert torch.allclose(flip(x, g), x.flip(-1), atol=1e-5)
    gray = ImageAugment(12, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter=0.0, gray_p=1.0)
    y = gray(x, g)
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert torch.allclose(y[:, 1], luma, atol=1e-5) and torch.allclose(y[:, 0], y[:, 2])
    full = ImageAugment(8)
    a, b = full(x, torch.Generator().manual_seed(3)), full(x, torch.Generator().manual_seed(3))
    assert a.shape == (5, 3, 8, 8) and torch.equal(a, b)  # same generator state, same views
    assert not torch.allclose(full(x, torch.Generator().manual_seed(4)), a)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
