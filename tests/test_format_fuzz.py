"""Every data format clapkit reads, fed broken copies of a valid fixture: truncated,
bytes replaced or inserted, lines dropped or doubled, invalid UTF-8. Each reader must
either read it or raise clapkit's own error naming the file, never a bare traceback
(property-based, with hypothesis; derandomized so CI sees the same cases every run).

The formats are listed here until the data readers have a registry of spec kinds
(issue 21, item 8); then this test should take its list, and each kind's fixture, from it.
300 random cases per format (``max_examples=300, derandomize=False``) found no reader
that breaks the rule; the suite runs 25 fixed ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from clapkit.errors import ClapkitError


def _wav(path: Path, seconds: float = 0.1, sr: int = 8000) -> None:
    sf.write(path, (0.1 * np.sin(np.arange(int(seconds * sr)) / 5)).astype(np.float32), sr)


def _png(path: Path) -> None:
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(path)


# format -> (write a valid fixture in a folder and return the file to break, read the folder)
def _csv(d):
    for i in range(3):
        _wav(d / f"a{i}.wav")
    (d / "m.csv").write_text("audio,caption\n" + "".join(f"a{i}.wav,a dog barks {i}\n" for i in range(3)))
    return d / "m.csv"


def _jsonl(d):
    for i in range(2):
        _wav(d / f"a{i}.wav")
    (d / "m.jsonl").write_text("".join(json.dumps({"audio": f"a{i}.wav", "caption": [f"rain {i}", "wind"]}) + "\n"
                                       for i in range(2)))
    return d / "m.jsonl"


def _clotho(d):
    for i in range(2):
        _wav(d / f"c{i}.wav")
    caps = ",".join(f"caption_{k}" for k in range(1, 6))
    (d / "clotho.csv").write_text(f"file_name,{caps}\n" + "".join(
        f"c{i}.wav," + ",".join(f"a bird sings {i} {k}" for k in range(5)) + "\n" for i in range(2)))
    return d / "clotho.csv"


def _audiocaps(d):
    for i in range(2):
        _wav(d / f"Y{i}abc.wav")
    (d / "ac.csv").write_text("audiocap_id,youtube_id,start_time,caption\n" +
                              "".join(f"{10 + i},{i}abc,30,an engine idles {i}\n" for i in range(2)))
    return d / "ac.csv"


def _coco(d):
    (d / "val2017").mkdir()
    (d / "annotations").mkdir()
    for i in range(2):
        _png(d / "val2017" / f"{i:012d}.jpg")
    (d / "annotations" / "captions_val2017.json").write_text(json.dumps({
        "images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in range(2)],
        "annotations": [{"image_id": i, "id": 10 + i, "caption": f"a cat on a mat {i}"} for i in range(2)]}))
    return d / "annotations" / "captions_val2017.json"


def _karpathy(d):
    (d / "images").mkdir()
    for i in range(2):
        _png(d / "images" / f"{i}.jpg")
    (d / "dataset_flickr8k.json").write_text(json.dumps({"images": [
        {"filename": f"{i}.jpg", "split": "test", "sentences": [{"raw": f"two dogs run {i}"}]} for i in range(2)]}))
    return d / "dataset_flickr8k.json"


def _flickr(d):
    (d / "Flicker8k_Dataset").mkdir()
    for i in range(2):
        _png(d / "Flicker8k_Dataset" / f"{i}.jpg")
    (d / "Flickr8k.token.txt").write_text("".join(f"{i}.jpg#{k}\ta child plays {i} {k}\n" for i in range(2)
                                                  for k in range(2)))
    return d / "Flickr8k.token.txt"


def _stsb(d):
    (d / "sts-test.csv").write_text("".join(f"main-captions\tMSRvid\t2012test\t{i:04d}\t{i % 5}.000\ta man {i}\t"
                                            f"a woman {i}\n" for i in range(4)))
    return d / "sts-test.csv"


def _sick(d):
    (d / "SICK_test_annotated.txt").write_text(
        "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n" +
        "".join(f"{i}\ta boy runs {i}\ta kid runs {i}\t{1 + i % 4}.5\tNEUTRAL\n" for i in range(4)))
    return d / "SICK_test_annotated.txt"


def _nli(d):
    (d / "nli.csv").write_text("sent0,sent1,hard_neg\n" + "".join(f"a man {i},a person {i},nobody {i}\n" for i in range(3)))
    return d / "nli.csv"


def _senteval(d):
    (d / "MR").mkdir()
    (d / "MR" / "rt-polarity.pos").write_bytes("a good film\nun caf\xe9\n".encode("latin-1"))
    (d / "MR" / "rt-polarity.neg").write_bytes(b"a bad film\nboring\n")
    return d / "MR" / "rt-polarity.pos"


def _task(d):
    (d / "task.jsonl").write_text("".join(json.dumps({"text": f"word {i}", "label": "ab"[i % 2]}) + "\n" for i in range(6)))
    return d / "task.jsonl"


def _labels(d):
    (d / "labels.txt").write_text("dog\nrain\nchurch_bells\n")
    return d / "labels.txt"


def _audio_file(d):
    _wav(d / "clip.wav")
    return d / "clip.wav"


def _image_file(d):
    _png(d / "pic.png")
    return d / "pic.png"


def _read(name: str, d: Path, target: Path):
    from clapkit.data.audio.captions import load_pairs
    from clapkit.data.files import Skipped
    from clapkit.data.image.captions import load_image_pairs

    if name in ("csv", "jsonl", "clotho", "audiocaps"):
        return load_pairs(f"{name}:{target}", audio_dir=d)
    if name in ("coco", "karpathy", "flickr"):
        return load_image_pairs(f"{name}:{target}", split="test" if name == "karpathy" else None)
    if name in ("stsb", "sick"):
        from clapkit.data.text.sts import load_sts

        return load_sts(f"{name}:{d}")
    if name == "nli":
        from clapkit.data.text import load_nli

        return load_nli(target)
    if name == "senteval":
        from clapkit.data.text.senteval import load_senteval

        return load_senteval(d, skipped=Skipped())
    if name == "task":
        from clapkit.data.text import load_text_classification

        return load_text_classification(target)
    if name == "labels":
        from clapkit.data.text import load_label_names

        return load_label_names(f"txt:{target}")
    if name == "audio_file":
        from clapkit.data.audio import load_audio

        return load_audio(target, 8000, "clips.csv line 2")
    from clapkit.data.image.io import open_image

    return open_image(target, f"images.csv line 2: {target}")


FORMATS = {"csv": _csv, "jsonl": _jsonl, "clotho": _clotho, "audiocaps": _audiocaps, "coco": _coco,
           "karpathy": _karpathy, "flickr": _flickr, "stsb": _stsb, "sick": _sick, "nli": _nli, "senteval": _senteval,
           "task": _task, "labels": _labels, "audio_file": _audio_file, "image_file": _image_file}


@st.composite
def broken(draw, data: bytes) -> bytes:
    """One corruption of ``data``."""
    op = draw(st.sampled_from(["truncate", "replace", "insert", "drop_line", "double_line", "bad_utf8", "empty"]))
    n = len(data)
    i = draw(st.integers(0, max(0, n - 1)))
    if op == "truncate":
        return data[:i]
    if op == "replace":
        return data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]
    if op == "insert":
        return data[:i] + draw(st.binary(min_size=1, max_size=8)) + data[i:]
    if op == "bad_utf8":
        return data[:i] + b"\xff\xfe" + data[i:]
    if op == "empty":
        return b""
    lines = data.split(b"\n")
    k = draw(st.integers(0, len(lines) - 1))
    return b"\n".join(lines[:k] + lines[k + 1:]) if op == "drop_line" else b"\n".join(lines[:k + 1] + lines[k:])


@pytest.mark.parametrize("name", list(FORMATS))
def test_a_broken_file_is_read_or_named_never_a_bare_traceback(name, tmp_path_factory):
    folder = tmp_path_factory.mktemp(name)
    target = FORMATS[name](folder)
    original = target.read_bytes()
    _read(name, folder, target)  # the fixture itself reads

    @settings(max_examples=25, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.data())
    def check(data):
        target.write_bytes(data.draw(broken(original)))
        try:
            _read(name, folder, target)
        except ClapkitError as exc:
            assert target.name in str(exc), f"{name}: the error does not name {target.name}: {exc}"
        finally:
            target.write_bytes(original)

    check()
