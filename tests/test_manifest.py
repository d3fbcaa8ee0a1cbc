"""Evaluation-set manifests (clapkit.data.manifest, `clapkit manifest`) on copies of a few
clips of the shared ESC-50 subset."""

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from clapkit.data.audio.labelled import load_labelled
from clapkit.data.manifest import (
    FORMAT,
    build_manifest,
    compare,
    item_id,
    read_manifest,
    shared_mask,
    write_manifest,
)
from clapkit.data.records import ArrayImage, LabelledClip, Pair
from clapkit.errors import DataError

N = 11  # clips taken from the shared set


def _rows(shared_data) -> tuple[list[str], list[dict]]:
    with open(shared_data / "esc50" / "meta" / "esc50.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)[:N]
    dense: dict[str, int] = {}  # the reader wants targets 0..classes-1
    for row in rows:
        row["target"] = str(dense.setdefault(row["category"], len(dense)))
    return list(reader.fieldnames), rows


def _copy(shared_data, dest: Path, rows: list[dict], header: list[str]) -> Path:
    """An esc50:ROOT of ``rows`` with their audio files."""
    (dest / "meta").mkdir(parents=True)
    (dest / "audio").mkdir()
    with open(dest / "meta" / "esc50.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, header)
        w.writeheader()
        w.writerows(rows)
    for row in rows:
        name = Path(row["filename"]).with_suffix(".ogg").name  # the shared copy holds .ogg files
        shutil.copyfile(shared_data / "esc50" / "audio" / name, dest / "audio" / name)
    return dest


@pytest.fixture
def copies(tmp_path, shared_data):
    """Copy A: clips 0-9. Copy B: clips 0-9 less 7, 8, 9 (deleted, still in its meta csv),
    clip 0 re-encoded, and clip 10, which A lacks."""
    header, rows = _rows(shared_data)
    a = _copy(shared_data, tmp_path / "a" / "ESC-50", rows[:10], header)
    b = _copy(shared_data, tmp_path / "b" / "ESC-50", rows[:11], header)
    names = [Path(r["filename"]).with_suffix(".ogg").name for r in rows]
    for name in names[7:10]:
        (b / "audio" / name).unlink()
    wave, sr = sf.read(b / "audio" / names[0])
    sf.write(b / "audio" / names[0], wave[: len(wave) // 2], sr, format="OGG")  # re-encoded and truncated
    return a, b, names


def test_manifest_ids_and_hashes_are_the_files(copies):
    a, _, names = copies
    data = load_labelled(f"esc50:{a}")
    m = build_manifest(data, f"esc50:{a}", "audio")
    assert m["format"] == FORMAT and m["spec"] == f"esc50:{a}" and m["medium"] == "audio"
    assert m["root_name"] == "audio" and m["count"] == 10
    assert [e["id"] for e in m["items"]] == sorted(names[:10])
    for e in m["items"]:
        raw = (a / "audio" / e["id"]).read_bytes()
        assert e["sha256"] == hashlib.sha256(raw).hexdigest() and e["bytes"] == len(raw)
    label = {c.media.name: data.class_names[c.label] for c in data.clips}
    assert all(e["label"] == label[e["id"]] for e in m["items"])
    assert item_id(data.clips[0], a) == f"audio/{data.clips[0].media.name}"


def test_compare_and_shared_mask_across_copies(copies, tmp_path):
    a, b, names = copies
    here = load_labelled(f"esc50:{a}").clips
    there = load_labelled(f"esc50:{b}", skip_bad=True)
    mb = tmp_path / "b.json"
    write_manifest(build_manifest(there, f"esc50:{b}", "audio"), mb)
    r = compare(here, read_manifest(mb))
    assert (r["here"], r["there"]) == (10, 8)
    assert r["same"]["count"] == 6 and sorted(r["same"]["examples"]) == sorted(names[1:7])
    assert r["different_content"]["count"] == 1 and r["different_content"]["examples"] == [names[0]]
    assert r["only_here"]["count"] == 3 and sorted(r["only_here"]["examples"]) == sorted(names[7:10])
    assert r["only_there"]["count"] == 1 and r["only_there"]["examples"] == [names[10]]
    assert r["manifest"] == str(mb) and r["spec"] == f"esc50:{b}" and not r["identical"]
    assert compare(here, build_manifest(here, "x", "audio"))["identical"]

    mask = shared_mask(here, [read_manifest(mb)])
    assert mask.dtype == bool and mask.shape == (10,)
    assert sorted(c.media.name for c, keep in zip(here, mask, strict=True) if keep) == sorted(names[1:7])
    # a third copy that also lacks clip 1: only what every copy holds, with equal content
    third = [c for c in here if c.media.name != names[1]]
    mask3 = shared_mask(here, [build_manifest(here, "a", "audio"), read_manifest(mb), build_manifest(third, "c", "audio")])
    assert sorted(c.media.name for c, keep in zip(here, mask3, strict=True) if keep) == sorted(names[2:7])
    assert shared_mask(here, []).all()


def test_subset_ids_match_the_whole_set(tmp_path):
    """A selection whose files all sit in one subfolder keeps the ids of the whole set."""
    root = tmp_path / "set"
    clips = []
    for k, sub in enumerate(("fold1", "fold1", "fold2")):
        f = root / sub / f"{k}.wav"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(bytes([k]) * 100)
        clips.append(LabelledClip(f, k, None, f"row {k}"))
    m = build_manifest(clips, "folder:x", "audio")
    assert m["root_name"] == "set" and [e["id"] for e in m["items"]] == ["fold1/0.wav", "fold1/1.wav", "fold2/2.wav"]
    r = compare(clips[:2], m)
    assert r["same"]["count"] == 2 and r["only_there"]["examples"] == ["fold2/2.wav"] and r["only_here"]["count"] == 0
    assert shared_mask(clips[:2], [m]).all()


def test_captions_of_one_clip_listed_once_and_reencoded_extension(tmp_path):
    wav, ogg = tmp_path / "audio" / "x.wav", tmp_path / "audio" / "y.wav"
    wav.parent.mkdir()
    wav.write_bytes(b"one")
    ogg.write_bytes(b"two")
    pairs = [Pair(wav, "a dog barks", "x", "line 2"), Pair(wav, "barking", "x", "line 3"), Pair(ogg, "rain", "y", "line 4")]
    m = build_manifest(pairs, "clotho:c.csv", "audio")
    assert m["count"] == 2 and [(e["id"], e["label"]) for e in m["items"]] == [("x.wav", "a dog barks"), ("y.wav", "rain")]
    # the other copy re-encoded x.wav as x.ogg: different content, not one missing and one extra
    other = tmp_path / "other" / "audio" / "x.ogg"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"one, re-encoded")
    r = compare([Pair(other, "a dog barks", "x", "line 2")], m)
    assert r["different_content"] == {"count": 1, "examples": ["x.ogg"], "other_extension": 1}
    assert r["only_here"]["count"] == 0 and r["only_there"]["examples"] == ["y.wav"]


def test_media_not_on_disk_refused(tmp_path):
    image = ArrayImage("digits", 0, np.zeros((1, 8, 8)), 16.0)
    with pytest.raises(DataError, match="not a file on disk") as err:
        build_manifest([LabelledClip(image, 0, None, "digits row 0")], "digits", "image")
    assert "digits row 0" in str(err.value)
    with pytest.raises(DataError, match="gone.wav"):
        build_manifest([LabelledClip(tmp_path / "gone.wav", 0, None, "row 1")], "x", "audio")


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "not a JSON manifest"),
    ('{"items": []}', "expected format 'clapkit-manifest/1', found none"),
    ('{"format": "other/2", "items": []}', "found 'other/2'"),
    (json.dumps({"format": FORMAT, "items": [{"id": "a.wav"}]}), "item 0 has no sha256"),
    (json.dumps({"format": FORMAT, "items": [{"sha256": "ab"}]}), "item 0 has no id"),
    (json.dumps({"format": FORMAT, "items": [{"id": "a.wav", "sha256": "ab"}, {"id": "a.wav", "sha256": "cd"}]}),
     "duplicate id 'a.wav'"),
])
def test_read_manifest_errors_name_the_file(tmp_path, text, message):
    path = tmp_path / "broken.json"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as err:
        read_manifest(path)
    assert err.value.where == str(path) and str(path) in str(err.value)


def test_write_read_round_trip(copies, tmp_path):
    a, _, _ = copies
    m = build_manifest(load_labelled(f"esc50:{a}"), f"esc50:{a}", "audio")
    write_manifest(m, tmp_path / "m" / "a.json")
    back = read_manifest(tmp_path / "m" / "a.json")
    assert back.pop("path") == str(tmp_path / "m" / "a.json") and back == m
    assert not list((tmp_path / "m").glob(".*"))  # no temporary file left


def test_manifest_command(copies, tmp_path):
    from clapkit.cli import app

    a, b, names = copies
    out = tmp_path / "out" / "b.json"
    result = CliRunner().invoke(app, ["manifest", f"esc50:{b}", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "8 files" in result.output and "3 missing or skipped" in result.output
    m = read_manifest(out)
    assert m["count"] == 8 and m["skipped"]["count"] == 3 and m["spec"] == f"esc50:{b}"
    r = compare(load_labelled(f"esc50:{a}").clips, m)
    assert [r[k]["count"] for k in ("same", "different_content", "only_here", "only_there")] == [6, 1, 3, 1]
    bad = CliRunner().invoke(app, ["manifest", f"esc50:{b}", "--out", str(out), "--medium", "video"])
    assert bad.exit_code != 0 and "choose audio or image" in str(bad.exception)
