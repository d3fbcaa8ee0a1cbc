"""``audio.crop: variable``: whole clips in training, batched by length and padded with a
mask. A padded clip embeds as the clip alone (SmallCNN, CNN14, an HF tower); the
bucketed epochs are seeded, visit each row at most once, keep captions of one clip
apart and split into per-rank shares; a run on real clips of differing lengths trains
and resumes exactly; towers and models that cannot take a mask are refused."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import same_weights, tiny_overrides, train_clap_stopped_then_resumed

from clapkit.config import load_config
from clapkit.data.audio.io import load_audio, normalize
from clapkit.data.datasets import ClipDataset, clip_seconds, collate_padded
from clapkit.data.records import Pair
from clapkit.errors import ConfigError
from clapkit.models.towers.audio import Cnn14, SmallCNN, frame_mask, masked_batch_norm
from clapkit.training.backbone import BackboneTrainer
from clapkit.training.clap import ClapTrainer, train_clap
from clapkit.training.sources import batches_per_epoch, epoch_batches

# FSDD recordings of differing lengths (8 kHz): 0.28 to 0.61 s
CLIPS = ["0_george_0", "3_jackson_12", "5_lucas_7", "7_nicolas_30", "9_theo_44", "2_yweweler_3"]


def _fsdd_waves(shared_data: Path, names=CLIPS) -> list[torch.Tensor]:
    return [torch.from_numpy(load_audio(shared_data / "fsdd" / "recordings" / f"{n}.flac", 8000)) for n in names]


def _with_running_stats(tower: torch.nn.Module) -> torch.nn.Module:
    """Eval mode with BatchNorm statistics that are not the identity."""
    gen = torch.Generator().manual_seed(1)
    for m in tower.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return tower.eval()


@pytest.mark.parametrize("kind", ["small_cnn", "cnn14"])
def test_a_padded_clip_with_its_mask_embeds_as_the_clip_alone(shared_data, kind):
    torch.manual_seed(0)
    if kind == "small_cnn":
        tower = SmallCNN(sample_rate=8000, n_fft=256, hop_length=128, n_mels=16, fmax=4000, channels=[4, 8])
    else:  # PANNs' widths; a short hop so that every clip has the 32 frames five pools need
        tower = Cnn14(sample_rate=8000, n_fft=256, hop_length=64, n_mels=32, fmax=4000)
    tower = _with_running_stats(tower)
    waves = _fsdd_waves(shared_data, CLIPS if kind == "small_cnn" else CLIPS[:3])
    batch, _ = collate_padded([(w, i) for i, w in enumerate(waves)])
    assert batch["wave"].shape == (len(waves), max(len(w) for w in waves))
    assert batch["mask"].sum(1).tolist() == [len(w) for w in waves]
    with torch.no_grad():
        padded = tower(batch["wave"], batch["mask"])
        alone = torch.cat([tower(w[None]) for w in waves])
        plain = tower(batch["wave"])  # the padded batch without its mask is another input
    torch.testing.assert_close(padded, alone, rtol=0, atol=1e-5)
    assert (plain - alone).abs().max() > 1e-3
    if kind == "small_cnn":  # training mode runs and back-propagates through the masked path
        tower.train()
        tower(batch["wave"], batch["mask"]).sum().backward()
        assert all(p.grad is not None for p in tower.parameters() if p.requires_grad)
        # a batch shorter than its pools need (two of hop 128: 384 samples) is padded further
        short, _ = collate_padded([(waves[0][:200], 0), (waves[1][:300], 1)])
        assert torch.isfinite(tower.eval()(short["wave"], short["mask"])).all()


def test_a_padded_clip_embeds_as_the_clip_alone_in_an_hf_tower(tmp_path):
    """A wav2vec2 with per-frame LayerNorm and an extractor that returns an attention mask:
    the real-length waves go to the extractor, the mask to the model and the mean pooling."""
    import transformers as tf

    from clapkit.models.towers.hf_audio import HFAudioTower

    torch.manual_seed(0)
    tf.Wav2Vec2Model(tf.Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                       conv_dim=(8, 8), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=16,
                                       num_conv_pos_embedding_groups=2, feat_extract_norm="layer",
                                       do_stable_layer_norm=True)).save_pretrained(tmp_path)
    tf.Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=True).save_pretrained(tmp_path)
    tower = HFAudioTower(str(tmp_path)).eval()
    assert tower.accepts_mask and tower.pooling == "mean"
    gen = torch.Generator().manual_seed(0)
    waves = [0.1 * torch.randn(n, generator=gen) for n in (16000, 9000, 5003)]
    batch, _ = collate_padded([(w, i) for i, w in enumerate(waves)])
    with torch.no_grad():
        padded = tower(batch["wave"], batch["mask"])
        alone = torch.cat([tower(w[None]) for w in waves])
    torch.testing.assert_close(padded, alone, rtol=0, atol=1e-5)


def test_training_batchnorm_takes_its_statistics_over_real_frames_only():
    torch.manual_seed(0)
    bn, ref = torch.nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    torch.nn.init.uniform_(bn.weight)
    torch.nn.init.normal_(bn.bias)
    ref.load_state_dict(bn.state_dict())
    x = (3 * torch.randn(2, 3, 10, 4) + 5).requires_grad_()
    up = torch.randn(2, 3, 10, 4)  # a gradient from above
    out = masked_batch_norm(bn, x, frame_mask(torch.tensor([10, 6]), 10))
    real = torch.cat([out[0], out[1, :, :6]], dim=1)
    (real * torch.cat([up[0], up[1, :, :6]], dim=1)).sum().backward()
    got, x.grad = x.grad, None
    want = ref(torch.cat([x[0], x[1, :, :6]], dim=1)[None])[0]  # the real frames of both clips as one
    (want * torch.cat([up[0], up[1, :, :6]], dim=1)).sum().backward()
    torch.testing.assert_close(real, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(got, x.grad, rtol=0, atol=1e-6)
    torch.testing.assert_close(bn.running_mean, ref.running_mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(bn.running_var, ref.running_var, rtol=0, atol=1e-6)
    assert int(bn.num_batches_tracked) == 1


def test_a_variable_training_item_is_the_whole_clip_up_to_max_seconds(shared_data):
    clips = [Pair(shared_data / "fsdd" / "recordings" / f"{n}.flac", "x", n, n) for n in CLIPS[:3]]
    seconds = clip_seconds(clips)
    lengths = [len(w) for w in _fsdd_waves(shared_data, CLIPS[:3])]
    assert seconds.tolist() == [n / 8000 for n in lengths]
    ds = ClipDataset(clips, 8000, 0.5, train=True, crop="variable", max_seconds=0.4, seed=3)
    assert ds.padded
    got = [len(ds.tensor(i, epoch=0)) for i in range(3)]
    assert got == [min(n, 3200) for n in lengths]
    whole = load_audio(clips[0].media, 8000)  # 0.298 s: whole, normalised as a segment is
    assert torch.equal(ds.tensor(0, 0), torch.from_numpy(normalize(whole)))
    longest = int(np.argmax(lengths))
    assert not torch.equal(ds.tensor(longest, 0), ds.tensor(longest, 1))  # a seeded crop of a longer clip
    assert torch.equal(ds.tensor(longest, 1), ds.tensor(longest, 1))
    # evaluation keeps the fixed centre segment
    fixed = ClipDataset(clips, 8000, 0.5, crop="fixed")
    evaluated = ClipDataset(clips, 8000, 0.5, crop="variable", max_seconds=0.4)
    assert not evaluated.padded
    for i in range(3):
        assert len(evaluated[i][0]) == 4000 and torch.equal(evaluated[i][0], fixed[i][0])


def _pairs(clips: int, captions: int, seed: int = 0) -> tuple[list[Pair], np.ndarray]:
    """``captions`` pairs of each of ``clips`` clips, their lengths 1 to 30 s."""
    length = np.random.default_rng(seed).uniform(1, 30, clips)
    pairs = [Pair(Path(f"c{c}.wav"), f"caption {k} of {c}", f"c{c}", f"row {c}") for c in range(clips) for k in range(captions)]
    return pairs, np.repeat(length, captions)


def _bucket_cfg(*extra):
    return load_config(None, ["audio.crop=variable", "train.batch_size=16", "data.bucket_batches=10", *extra])


def test_bucketed_epochs_visit_each_row_once_in_batches_of_similar_length():
    pairs, seconds = _pairs(16 * 20, 1)
    cfg = _bucket_cfg()
    batches = epoch_batches(pairs, cfg, 0, seconds=seconds)
    assert len(batches) == batches_per_epoch(pairs, cfg) == 20 and all(len(b) == 16 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(len(pairs)))  # every row exactly once
    spread = np.mean([np.ptp(seconds[b]) for b in batches])
    plain = np.mean([np.ptp(seconds[b]) for b in epoch_batches(pairs, cfg, 0)])
    assert spread < 0.15 * plain, (spread, plain)  # two buckets of 10 batches: a tenth of the range each
    # seeded by (seed, epoch): a resumed epoch draws the same batches; another epoch others
    assert epoch_batches(pairs, cfg, 0, seconds=seconds) == batches
    assert epoch_batches(pairs, cfg, 1, seconds=seconds) != batches
    assert epoch_batches(pairs, _bucket_cfg("seed=1"), 0, seconds=seconds) != batches
    # rows that do not fill a batch: each visited at most once, as many full batches as before
    odd, odd_seconds = _pairs(16 * 20 + 7, 1)
    rows = [i for b in epoch_batches(odd, cfg, 2, seconds=odd_seconds) for i in b]
    assert len(rows) == len(set(rows)) == 16 * 20
    # the batches' order is shuffled, not sorted by length
    starts = [seconds[b].min() for b in batches]
    assert starts != sorted(starts)


def test_bucketed_batches_hold_one_caption_per_clip_and_split_into_rank_shares():
    pairs, seconds = _pairs(100, 5)  # every clip's five captions have one length: sorted side by side
    cfg = _bucket_cfg()
    batches = epoch_batches(pairs, cfg, 0, seconds=seconds)
    assert len(batches) == batches_per_epoch(pairs, cfg) == 500 // 16
    for b in batches:
        assert len(b) == 16 and max(Counter(pairs[i].media_id for i in b).values()) == 1
    rows = [i for b in batches for i in b]
    assert len(rows) == len(set(rows))
    plain = epoch_batches(pairs, cfg, 0)  # the unbucketed epoch: the same rows, as many batches
    assert sorted(rows) == sorted(i for b in plain for i in b) and len(plain) == len(batches)
    spread = np.median([np.ptp(seconds[b]) for b in batches])  # similar lengths, a clip's captions apart
    assert spread < 0.35 * np.median([np.ptp(seconds[b]) for b in plain]), spread  # 100 clips: chunks of 160 rows
    off = epoch_batches(pairs, _bucket_cfg("data.no_duplicate_media=false"), 0, seconds=seconds)
    assert any(max(Counter(pairs[i].media_id for i in b).values()) > 1 for b in off)  # what the rule is for
    # data.captions: one: one caption per clip, every clip once when the counts divide
    one = epoch_batches(pairs[: 5 * 96], _bucket_cfg("data.captions=one"), 0, seconds=seconds[: 5 * 96])
    assert sorted(pairs[i].media_id for b in one for i in b) == sorted(f"c{c}" for c in range(96))
    # under torchrun each process takes its share of every global batch, in rank order
    shares = [epoch_batches(pairs, cfg, 0, rank, 4, seconds=seconds) for rank in range(4)]
    for k, glob in enumerate(batches):
        assert [i for share in shares for i in share[k]] == glob


def _fsdd_subset(shared_data: Path, folder: Path, count: int = 40) -> Path:
    folder.mkdir()
    for f in sorted((shared_data / "fsdd" / "recordings").glob("*.flac"))[::75][:count]:
        shutil.copy(f, folder)
    return folder


def _run_cfg(tiny_bert: str, data: Path, *extra):
    return load_config(None, tiny_overrides(tiny_bert) + [f"data.train=[fsdd:{data}]", "audio.crop=variable",
                                                          "train.batch_size=8", "data.bucket_batches=2", *extra])


def test_variable_crop_trains_on_fsdd_and_resumes_exactly(tmp_path, tiny_bert, shared_data, monkeypatch):
    """Spoken digits of 0.2 to 1.1 s, whole, in batches of similar length: the tower gets
    padded batches with their masks; a run stopped at an epoch's start and one stopped
    mid-epoch (SIGTERM) resume to the uninterrupted run's weights."""
    import os
    import signal

    data = _fsdd_subset(shared_data, tmp_path / "fsdd", 20)
    cfg = _run_cfg(tiny_bert, data, "train.epochs=2")
    seen: list[list[int]] = []
    masked = SmallCNN._masked

    def record(self, wave, mask):
        seen.append(mask.sum(1).tolist())
        return masked(self, wave, mask)

    monkeypatch.setattr(SmallCNN, "_masked", record)
    summary = train_clap(cfg, tmp_path / "straight")
    monkeypatch.setattr(SmallCNN, "_masked", masked)
    assert summary["epochs_run"] == 2 and summary["steps"] == 2 * (16 // 8)  # 20 clips, 4 held out
    assert len(seen) == 4 and len({n for b in seen for n in b}) > 10  # whole clips, of many lengths
    assert all(max(b) - min(b) < 0.5 * 8000 for b in seen)
    train_clap_stopped_then_resumed(cfg, tmp_path / "stopped", 1, monkeypatch)
    same_weights(tmp_path / "straight" / "last", tmp_path / "stopped" / "last")
    step = ClapTrainer.train_step

    def step_then_term(self, idx, media=None, captions=None):
        loss = step(self, idx, media, captions)
        if self.state["step"] == 0:  # mid-epoch: the resumed epoch skips its first batch
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    monkeypatch.setattr(ClapTrainer, "train_step", step_then_term)
    stopped = train_clap(cfg, tmp_path / "term")
    assert stopped["stopped"] == "SIGTERM" and stopped["steps"] == 1
    monkeypatch.setattr(ClapTrainer, "train_step", step)
    train_clap(cfg, tmp_path / "term", resume=True)
    same_weights(tmp_path / "straight" / "last", tmp_path / "term" / "last")


def test_the_frozen_cache_holds_each_whole_clips_embedding(tmp_path, tiny_bert, shared_data):
    from clapkit.data.media import media_dataset
    from clapkit.data.records import clip_index
    from clapkit.training.pairs import FeatureCache

    data = _fsdd_subset(shared_data, tmp_path / "fsdd", 20)
    tr = ClapTrainer(_run_cfg(tiny_bert, data, "train.frozen_epochs=1", "train.epochs=1", "audio.max_seconds=0.4",
                              "runtime.eval_batch_size=4"), tmp_path / "run")
    tr.model.freeze_backbones(("media", "text"))
    tr.model.eval()
    cache = FeatureCache(tr.model, tr.data.train, tr.cfg, True, torch.device("cpu"))
    clips, rows = clip_index(tr.data.train)
    assert cache.media_rows.tolist() == rows and len(cache.x_m) == len(clips)
    ds = media_dataset(tr.cfg, clips, train=True, seed=tr.cfg["seed"])
    assert ds.padded
    with torch.no_grad():
        for k in range(len(clips)):
            wave = ds.tensor(k, epoch=0)  # the clip whole, or a seeded 0.4 s of a longer one
            assert len(wave) == min(3200, round(clip_seconds([clips[k]])[0] * 8000))
            torch.testing.assert_close(cache.x_m[k], tr.model.media_backbone(wave[None])[0], rtol=0, atol=1e-5)


def test_variable_crop_refuses_a_tower_without_a_mask_and_a_public_model(tmp_path, tiny_bert, tiny_synthetic):
    from conftest import write_tiny_public_model
    from torch import nn

    from clapkit.models import towers

    class NoMask(nn.Module):
        embed_dim = 4

        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(1, 4)

        def forward(self, wave):
            return self.proj(wave.mean(dim=1, keepdim=True))

    towers.register_tower("audio", "no_mask", "a test's own tower")(lambda settings, sample_rate, **_: NoMask())
    base = tiny_overrides(tiny_bert) + [f"data.train=[csv:{tiny_synthetic / 'train.csv'}]", "audio.crop=variable"]
    try:
        with pytest.raises(ConfigError, match=r"audio.crop: variable needs an audio tower that accepts a padding mask.*"
                                              r"model.audio.name = no_mask .*set audio.crop: fixed"):
            ClapTrainer(load_config(None, base + ["model.audio.name=no_mask"]), tmp_path / "a")
    finally:
        towers._TOWERS.pop(("audio", "no_mask"), None)
    public = write_tiny_public_model("clap", tmp_path / "clap")
    with pytest.raises(ConfigError, match=r"audio.crop: variable .*public model fine-tuned from model.init_from "
                                          r"\(HFDualEncoder\).*set audio.crop: fixed"):
        ClapTrainer(load_config(None, base + [f"model.init_from={public}"]), tmp_path / "b")
    with pytest.raises(ConfigError, match="'data.bucket_batches' = 0: give 1 or more"):
        load_config(None, base + ["data.bucket_batches=0"])
    with pytest.raises(ConfigError, match=r"'audio.max_seconds' = 0: give the longest training input in seconds, > 0"):
        load_config(None, base + ["audio.max_seconds=0"])
    with pytest.raises(ConfigError, match="audio.crop = variable applies to train clap.*set audio.crop: fixed"):
        BackboneTrainer(load_config(None, base + ["backbone.data=folder:x"]), tmp_path / "d")
    with pytest.raises(ConfigError, match="audio.crop"):
        load_config(None, ["audio.crop=random"])
