"""Sliding-window evaluation of long clips: the window rule, mean pooling equal to the
windows embedded one by one, max pooling of zero-shot scores, and the bad inputs."""

import json

import numpy as np
import pytest
import soundfile as sf
from test_cli import clapkit

from clapkit.data.files import Skipped
from clapkit.data.records import LabelledClip, LabelledSet, Pair
from clapkit.errors import ConfigError, DataError
from clapkit.inference.embed import embed_media
from clapkit.inference.features import embed_items
from clapkit.inference.windows import Windows, windows_of


def test_windows_cover_the_clip_with_a_last_one_at_its_end():
    w = Windows(2.0, 1.5)
    assert w.starts(7.0) == [0.0, 1.5, 3.0, 4.5, 5.0]  # 4.5 + 2 stops short of 7: one more ending at 7
    assert w.starts(6.5) == [0.0, 1.5, 3.0, 4.5]  # 4.5 + 2 = 6.5: the end is covered
    assert w.starts(1.2) == [0.0]  # shorter than a window: one (padded) window
    assert Windows(2.0).starts(6.0) == [0.0, 2.0, 4.0]  # hop defaults to the window
    for bad in ({"seconds": 0}, {"seconds": 1, "hop": -1}, {"seconds": 1, "pool": "median"}):
        with pytest.raises(ConfigError):
            Windows(**bad)


def _long_clip(path, seconds, sr=8000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    wave = 0.3 * np.sin(2 * np.pi * (300 + 200 * t) * t) + 0.05 * rng.normal(size=t.shape)
    sf.write(path, wave.astype(np.float32), sr, subtype="PCM_16")
    return path


def test_mean_pooling_is_the_mean_of_the_windows_embedded_one_by_one(tmp_path, tiny_checkpoint):
    from clapkit.models.dual import DualEncoder

    net = DualEncoder.load(tiny_checkpoint)
    sr = net.cfg["audio"]["sample_rate"]
    clips = [_long_clip(tmp_path / "a.wav", 3.3, sr), _long_clip(tmp_path / "b.wav", 0.4, sr, seed=1)]
    items = [Pair(c, "", str(c), str(c)) for c in clips]
    spec = Windows(1.0, 0.75)
    feats, info = embed_items(net, items, ("x", "E"), windows=spec)
    assert info["windows"] == {"window": 1.0, "hop": 0.75, "pool": "mean", "windows": 5 + 1,
                               "clips_shorter_than_window": 1}
    # each window written as its own file and embedded as a clip of its own
    wave, _ = sf.read(clips[0], dtype="float32")
    one_by_one = []
    for k, start in enumerate(spec.starts(len(wave) / sr)):
        a = int(round(start * sr))
        sf.write(tmp_path / f"w{k}.wav", wave[a : a + sr], sr, subtype="FLOAT")
        one_by_one.append(Pair(tmp_path / f"w{k}.wav", "", "w", "w"))
    e = embed_media(net, one_by_one)
    mean = e.mean(axis=0)
    np.testing.assert_allclose(feats["E"][0], mean / np.linalg.norm(mean), atol=1e-5)
    np.testing.assert_allclose(feats["x"][0], embed_media(net, one_by_one, projected=False).mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(feats["E"][1], embed_media(net, items[1:])[0], atol=1e-5)  # one window: the clip itself


def test_max_pooling_takes_each_class_score_from_its_best_window(tmp_path, tiny_checkpoint):
    from clapkit.evaluation.zeroshot import class_text_embeddings, zeroshot_scores
    from clapkit.models.dual import DualEncoder

    net = DualEncoder.load(tiny_checkpoint)
    sr = net.cfg["audio"]["sample_rate"]
    clips = [LabelledClip(_long_clip(tmp_path / f"{k}.wav", 2.5, sr, seed=k), k % 2, None, f"row {k}") for k in range(3)]
    data = LabelledSet(clips, ["rain", "dog"], Skipped())
    spec = Windows(1.0, pool="max")
    feats, info = embed_items(net, clips, ("E",), windows=spec, pooled=False)
    owner = info["owner"]
    assert owner.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # 0, 1, and one ending at 2.5
    scores = zeroshot_scores(net, data, media_emb=feats["E"], owner=owner)
    text = class_text_embeddings(net, ["rain", "dog"], ["This is a sound of {label}."])
    by_window = feats["E"] @ text.T
    np.testing.assert_allclose(scores, np.stack([by_window[owner == i].max(axis=0) for i in range(3)]), atol=1e-6)


def test_the_cache_holds_windows_for_both_poolings_and_any_hop(tmp_path, tiny_checkpoint):
    from clapkit.models.dual import DualEncoder

    net = DualEncoder.load(tiny_checkpoint)
    sr = net.cfg["audio"]["sample_rate"]
    clips = [Pair(_long_clip(tmp_path / f"{k}.wav", 3.0, sr, seed=k), "", "c", f"row {k}") for k in range(2)]
    cache = {"cache": tmp_path / "cache", "model_spec": tiny_checkpoint}

    def counts(info):
        return info["cache"]["audio_computed"], info["cache"]["audio_reused"]

    by_window, info = embed_items(net, clips, ("E",), windows=Windows(1.0, pool="max"), pooled=False, **cache)
    assert counts(info) == (6, 0) and info["owner"].tolist() == [0, 0, 0, 1, 1, 1]  # windows at 0, 1 and 2 s
    np.testing.assert_array_equal(by_window["E"], embed_items(net, clips, ("E",), windows=Windows(1.0, pool="max"),
                                                              pooled=False)[0]["E"])
    mean, info = embed_items(net, clips, ("E",), windows=Windows(1.0), **cache)  # mean pooling reads the same windows
    assert counts(info) == (0, 6) and info["windows"]["windows"] == 6
    np.testing.assert_array_equal(mean["E"], embed_items(net, clips, ("E",), windows=Windows(1.0))[0]["E"])
    _, info = embed_items(net, clips, ("E",), windows=Windows(1.0, 0.5), **cache)  # 0, 0.5, 1, 1.5, 2 s: two new a clip
    assert counts(info) == (4, 6)
    _, info = embed_items(net, clips, ("E",), **cache)  # the centre segment is an entry of its own
    assert counts(info) == (2, 0)


def test_a_window_longer_than_every_clip_names_the_longest(tmp_path):
    clips = [Pair(_long_clip(tmp_path / f"{k}.wav", s), "", "c", f"train.csv line {k + 2}") for k, s in enumerate((0.5, 1.5))]
    with pytest.raises(DataError, match=r"train.csv line 3: .*1.wav: --window 30 s is longer than every clip \(the "
                                        r"longest is 1.50 s\)"):
        windows_of(clips, Windows(30.0))


def test_eval_and_embed_take_windows_and_record_them(tmp_path, tiny_checkpoint, shared_data):
    esc = f"esc50:{shared_data / 'esc50'}"
    out = tmp_path / "zs.json"
    clapkit("eval", "zeroshot", "--model", tiny_checkpoint, "--data", esc, "--folds", "2,3", "--window", "1",
            "--hop", "0.5", "--pool", "max", "--bootstrap", "0", "--out", out)
    r = json.loads(out.read_text())
    assert r["windows"]["pool"] == "max" and r["windows"]["windows"] == 12 * 9  # 5 s clips: 0, 0.5, ..., 4 s
    npz = tmp_path / "e.npz"
    clapkit("embed", "--model", tiny_checkpoint, "--audio", esc, "--window", "2", "--out", npz)
    saved = np.load(npz)
    assert json.loads(str(saved["windows"]))["windows"] == 414 * 3 and saved["embeddings"].shape[0] == 414
    bad = clapkit("eval", "retrieval", "--model", tiny_checkpoint, "--data", esc, "--hop", "1", check=False)
    assert bad.returncode == 2 and "--hop and --pool need --window" in bad.stderr
