"""WebDataset shards: `clapkit shards` writes any manifest as tar shards; `wds:` reads
audio-text (LAION-CLAP's layout) and image-text (open_clip's) shards in place; a run on
the shards equals the run on the manifest they came from."""

import io
import json
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tiny_image_overrides, tiny_overrides
from safetensors.torch import load_file
from typer.testing import CliRunner

from clapkit.cli import app
from clapkit.config import load_config
from clapkit.data.audio import load_audio
from clapkit.data.files import Skipped, TarMember
from clapkit.data.manifests import load_pairs
from clapkit.errors import DataError
from clapkit.training.clap import train_clap


def _write(tmp_path, data: str, modality: str, size: int = 10):
    out = tmp_path / "shards"
    run = CliRunner().invoke(app, ["shards", "--data", data, "--out", str(out), "--shard-size", str(size),
                                   "--modality", modality])
    assert run.exit_code == 0, run.output
    return run.output.strip().rsplit(": ", 1)[-1], sorted(out.glob("*.tar"))


@pytest.mark.parametrize("modality", ["audio", "image"])
def test_manifest_to_shards_round_trip_and_the_same_run(tmp_path, tiny_bert, tiny_synthetic, tiny_images, modality):
    """manifest -> shards -> the same pairs in the same order (each medium once, with
    all its captions), the same decoded media, and with the same seed the same weights
    after an epoch of training on either."""
    root = tiny_synthetic if modality == "audio" else tiny_images
    manifest = f"csv:{root / 'train.csv'}"
    spec, tars = _write(tmp_path, manifest, modality)
    if modality == "audio":
        original, sharded = load_pairs(manifest), load_pairs(spec)
    else:
        from clapkit.data.image_sets import load_image_pairs

        original, sharded = load_image_pairs(manifest), load_image_pairs(spec)
    media = list(dict.fromkeys(p.media for p in original))
    assert len(tars) == -(-len(media) // 10) and spec.startswith("wds:") and "{000000.." in spec
    assert [p.caption for p in sharded] == [p.caption for p in original]
    assert all(isinstance(p.media, TarMember) for p in sharded)
    assert len({p.media for p in sharded}) == len(media)  # one sample per medium, not per caption
    first = sharded[0].media
    assert first.read() == media[0].read_bytes()
    if modality == "audio":
        np.testing.assert_array_equal(load_audio(first, 8000), load_audio(media[0], 8000))
    base = tiny_overrides(tiny_bert) if modality == "audio" else tiny_image_overrides(tiny_bert)
    for name, data in (("csv", manifest), ("wds", spec)):  # one spec: data.train=SPEC (a brace range is no YAML list)
        train_clap(load_config(None, base + [f"data.train={data}", "train.epochs=1"]), tmp_path / name)
    a, b = (load_file(tmp_path / n / "last" / "model.safetensors") for n in ("csv", "wds"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def _shard(path, members):
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def _flac(seconds=0.25, sr=8000, freq=440.0):
    buf = io.BytesIO()
    t = np.arange(int(seconds * sr)) / sr
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, format="FLAC")
    return buf.getvalue()


def test_laion_clap_audio_shards_and_their_bad_samples(tmp_path):
    """LAION-CLAP's layout: {key}.flac + {key}.json whose 'text' is a caption or a list;
    a .txt when there is no json text; bad samples named by shard and key."""
    _shard(tmp_path / "a-0.tar", [
        ("0001.flac", _flac()), ("0001.json", json.dumps({"text": ["a tone", "a beep"], "tag": ["x"]}).encode()),
        ("0002.flac", _flac(freq=880)), ("0002.txt", b"a high tone"),
        ("0003.flac", _flac()), ("0003.json", b"{not json"),
        ("0004.json", json.dumps({"text": "no audio"}).encode()),
    ])
    with pytest.raises(DataError, match=r"a-0.tar sample 0003: the .json is not valid JSON"):
        load_pairs(f"wds:{tmp_path}/a-0.tar")
    skipped = Skipped()
    pairs = load_pairs(f"wds:{tmp_path}/a-*.tar", skip_bad=True, skipped=skipped)
    assert [p.caption for p in pairs] == ["a tone", "a beep", "a high tone"] and skipped.count == 2
    assert "sample 0004: needs audio (flac|wav|ogg|oga|mp3) and a .json or .txt caption; has json" in str(skipped.to_dict())
    wave = load_audio(pairs[2].media, 8000)
    assert wave.shape == (2000,) and abs(np.fft.rfft(wave)).argmax() == 880 * 2000 // 8000
    with pytest.raises(DataError, match="no shard matches"):
        load_pairs(f"wds:{tmp_path}/nothing-*.tar")
    with pytest.raises(DataError, match="the shard pattern after 'wds:' is empty"):
        load_pairs("wds:")
    run = CliRunner().invoke(app, ["shards", "--data", f"wds:{tmp_path}/a-0.tar", "--out", str(tmp_path / "o"),
                                   "--shard-size", "0", "--skip-bad"])
    assert run.exit_code != 0 and "--shard-size 0: give at least 1" in str(run.exception)
