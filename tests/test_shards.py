"""WebDataset shards: `clapkit shards` writes any manifest as tar shards; `wds:` reads
audio-text (LAION-CLAP's layout) and image-text (open_clip's) shards in place; a run on
the shards equals the run on the manifest they came from."""

import io
import json

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
from clapkit.data.audio.captions import load_pairs
from clapkit.data.files import Skipped, TarMember
from clapkit.data.shards import write_tar
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
        from clapkit.data.image.captions import load_image_pairs

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




def _flac(seconds=0.25, sr=8000, freq=440.0):
    buf = io.BytesIO()
    t = np.arange(int(seconds * sr)) / sr
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, format="FLAC")
    return buf.getvalue()


def test_laion_clap_audio_shards_and_their_bad_samples(tmp_path):
    """LAION-CLAP's layout: {key}.flac + {key}.json whose 'text' is a caption or a list;
    a .txt when there is no json text; bad samples named by shard and key."""
    write_tar(tmp_path / "a-0.tar", [
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
    with pytest.raises(DataError, match="the pattern after 'wds:' is empty"):
        load_pairs("wds:")
    run = CliRunner().invoke(app, ["shards", "--data", f"wds:{tmp_path}/a-0.tar", "--out", str(tmp_path / "o"),
                                   "--shard-size", "0", "--skip-bad"])
    assert run.exit_code != 0 and "--shard-size 0: give at least 1" in str(run.exception)


def _stream_cfg(tiny_bert, spec, *extra):
    return load_config(None, tiny_overrides(tiny_bert) + [
        f"data.train={spec}", "data.stream=true", "data.shuffle_buffer=16", "train.steps=12", "train.steps_per_epoch=5",
        "train.batch_size=8", *extra])


def test_a_stream_reads_every_pair_once_a_pass_and_splits_shards_by_rank_and_worker(tmp_path, tiny_synthetic):
    from clapkit.data.datasets import ClipDataset
    from clapkit.data.stream import ShardStream, stream_shards

    spec, tars = _write(tmp_path, f"csv:{tiny_synthetic / 'train.csv'}", "audio", size=6)
    pairs = load_pairs(f"csv:{tiny_synthetic / 'train.csv'}")
    shards = stream_shards([spec])
    decoder = ClipDataset([], 8000, 0.25, train=True, seed=0)

    def take(stream, n, worker=0, workers=1):
        items = stream._shuffled(worker, workers)
        return [next(items) for _ in range(n)]

    taken = take(ShardStream(shards, "audio", decoder, 8, buffer=16), 3 * len(pairs))  # a buffer spans passes
    one_pass = [t for t in taken if t[0] == 0]
    assert sorted(p.caption for _, _, p in one_pass) == sorted(p.caption for p in pairs)  # each pair once a pass
    assert [o for _, o, _ in one_pass] != sorted(o for _, o, _ in one_pass)  # shuffled
    assert taken == take(ShardStream(shards, "audio", decoder, 8, buffer=16), 3 * len(pairs))  # seeded
    readers = [set(ShardStream(shards, "audio", decoder, 8, rank=r, world=2)._shards(0, w, 2)) for r in (0, 1) for w in (0, 1)]
    assert sum(len(r) for r in readers) == len(shards) == len(set().union(*readers))  # disjoint, all read
    media, captions = next(iter(ShardStream(shards, "audio", decoder, 8, buffer=16)))
    assert media.shape == (8, 2000) and len(captions) == 8
    from clapkit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"12 shard\(s\) for 3 process\(es\) x 5 worker\(s\); each reader needs"):
        ShardStream(shards, "audio", decoder, 8, world=3).readers(5)


@pytest.mark.parametrize("kill_at", [(1, 2), (1, 0)])
def test_streamed_training_by_steps_resumes_exactly_after_sigkill(tmp_path, tiny_bert, tiny_synthetic, kill_at):
    """data.stream: 12 steps in epochs of 5 (validation and checkpoints between them),
    killed after step 7's checkpoint, or at the epoch boundary (the checkpoint after
    epoch 1's last step), resumed: the weights of the run never killed; the resumed
    stream skipped the batches it had taken without decoding them. Each epoch reseeds
    torch, so dropout after a boundary does not depend on the process having lived."""
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    from clapkit.errors import ConfigError

    spec, _ = _write(tmp_path, f"csv:{tiny_synthetic / 'train.csv'}", "audio", size=6)
    cfg = _stream_cfg(tiny_bert, spec, "runtime.save_every_steps=1", f"data.val=[csv:{tiny_synthetic / 'test.csv'}]")
    s = train_clap(cfg, tmp_path / "straight")
    assert s["steps"] == 12 and s["epochs_run"] == 3 and s["streamed_pairs"] == 96 and s["train_pairs"] is None
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(_stream_cfg(tiny_bert, spec, "runtime.save_every_steps=1",
                                                   f"data.val=[csv:{tiny_synthetic / 'test.csv'}]")))
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("kill_worker.py")), str(cfg_path),
                           str(tmp_path / "killed"), *map(str, kill_at)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]
    again = train_clap(load_config(cfg_path), tmp_path / "killed", resume=True)
    assert again["steps"] == 12
    a, b = (load_file(tmp_path / n / "last" / "model.safetensors") for n in ("straight", "killed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="data.stream: true trains by steps: set train.steps"):
        train_clap(_stream_cfg(tiny_bert, spec, "train.steps=0"), tmp_path / "nosteps")
    with pytest.raises(ConfigError, match=r"data.stream: true reads WebDataset shards; data.train has 'csv:"):
        train_clap(_stream_cfg(tiny_bert, f"csv:{tiny_synthetic / 'train.csv'}"), tmp_path / "csv")


def test_streamed_training_with_workers_is_seeded(tmp_path, tiny_bert, tiny_synthetic):
    """2 DataLoader workers read disjoint shards; two runs of the same config agree."""
    spec, _ = _write(tmp_path, f"csv:{tiny_synthetic / 'train.csv'}", "audio", size=6)
    for name in ("a", "b"):
        train_clap(_stream_cfg(tiny_bert, spec, "runtime.num_workers=2", "train.steps=6"), tmp_path / name)
    a, b = (load_file(tmp_path / n / "last" / "model.safetensors") for n in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_streamed_batch_holds_no_two_captions_of_one_sample_and_resumes_exactly(tmp_path, tiny_synthetic):
    """The captions of a sample enter the shuffle buffer together, so without the rule
    streamed batches repeat samples; with it none does, and skipping k batches (resume)
    gives the uninterrupted stream's next batches. one_caption keeps one per sample a pass."""
    from clapkit.data.datasets import ClipDataset
    from clapkit.data.stream import ShardStream, stream_shards

    spec, _ = _write(tmp_path, f"csv:{tiny_synthetic / 'train.csv'}", "audio", size=6)
    shards = stream_shards([spec])
    decoder = ClipDataset([], 8000, 0.25, train=True, seed=0)

    def batches(n, **kw):
        it = ShardStream(shards, "audio", decoder, 8, buffer=4, **kw)._batches(0, 1)
        return [[(p, o, pair.media_id, pair.caption) for p, o, pair in next(it)] for _ in range(n)]

    def repeats(bs):
        return sum(len(b) - len({m for _, _, m, _ in b}) for b in bs)

    assert repeats(batches(12)) > 0  # what the rule is for
    plain = batches(12, no_duplicates=True)
    assert repeats(plain) == 0 and all(len(b) == 8 for b in plain)
    resumed = ShardStream(shards, "audio", decoder, 8, buffer=4, no_duplicates=True, skip_batches=5)
    it, straight = iter(resumed), iter(ShardStream(shards, "audio", decoder, 8, buffer=4, no_duplicates=True))
    for _ in range(5):
        next(straight)
    for _ in range(3):
        (m1, c1), (m2, c2) = next(it), next(straight)
        assert c1 == c2 and torch.equal(m1, m2)
    one = batches(12, one_caption=True)
    first_pass = [x for b in one for x in b if x[0] == 0]
    clips = {p.media for p in load_pairs(f"csv:{tiny_synthetic / 'train.csv'}")}
    assert len(first_pass) == len({m for _, _, m, _ in first_pass}) == len(clips)  # every clip, one caption each
