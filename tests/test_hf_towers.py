"""Pretrained transformers audio encoders as the CLAP's audio tower (``model.audio.name:
hf:PATH``): x equals the owner's extractor, forward and pooling; the leakage paper's recipe
(frozen, then unfrozen) and LiT (the tower frozen throughout, its outputs cached) train with
them, resume exactly, leave a frozen tower bit-identical, and reload to the same embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_overrides, train_clap_stopped_then_resumed, write_tiny_public_model
from safetensors.torch import load_file

from clapkit.errors import ConfigError
from clapkit.models.towers.hf_audio import HFAudioTower

SMALL = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)


def _write(kind: str, folder):
    """A tiny random model of ``kind`` saved with its feature extractor."""
    import transformers as tf

    torch.manual_seed(0)
    if kind == "ast":
        tf.ASTModel(tf.ASTConfig(**SMALL, num_mel_bins=32, max_length=64)).save_pretrained(folder)
        tf.ASTFeatureExtractor(num_mel_bins=32, max_length=64).save_pretrained(folder)
    elif kind in ("wav2vec2", "hubert", "wavlm"):
        conv = dict(conv_dim=(8, 8), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=16,
                    num_conv_pos_embedding_groups=2)
        config, model = {"wav2vec2": (tf.Wav2Vec2Config, tf.Wav2Vec2Model), "hubert": (tf.HubertConfig, tf.HubertModel),
                         "wavlm": (tf.WavLMConfig, tf.WavLMModel)}[kind]
        model(config(**SMALL, **conv)).save_pretrained(folder)
        tf.Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=True).save_pretrained(folder)
    elif kind == "whisper":
        tf.WhisperModel(tf.WhisperConfig(d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                         decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                                         num_mel_bins=80, vocab_size=64, max_target_positions=16, pad_token_id=1,
                                         bos_token_id=2, eos_token_id=2, decoder_start_token_id=3)).save_pretrained(folder)
        tf.WhisperFeatureExtractor().save_pretrained(folder)
    else:  # the audio half of a CLAP or a Perception Encoder audio model
        write_tiny_public_model(kind, folder)
    return folder


def _owner(kind: str, folder, wave: np.ndarray) -> torch.Tensor:
    """The owner's own extractor, forward and pooling, written out per model."""
    import transformers as tf

    fx = tf.AutoFeatureExtractor.from_pretrained(folder)
    inputs = fx(list(wave), sampling_rate=fx.sampling_rate, return_tensors="pt")
    with torch.no_grad():
        if kind == "ast":
            return tf.ASTModel.from_pretrained(folder).eval()(**inputs).pooler_output
        if kind == "whisper":
            encoder = tf.WhisperModel.from_pretrained(folder).eval().get_encoder()
            return encoder(inputs["input_features"]).last_hidden_state.mean(1)
        if kind == "clap":
            return tf.ClapModel.from_pretrained(folder).eval().audio_model(**inputs).pooler_output
        if kind == "pe_audio":
            return tf.PeAudioModel.from_pretrained(folder).eval().audio_encoder(**inputs).pooler_output
        model = tf.AutoModel.from_pretrained(folder).eval()
        return model(inputs["input_values"], attention_mask=inputs["attention_mask"]).last_hidden_state.mean(1)


KINDS = ["ast", "wav2vec2", "hubert", "wavlm", "whisper", "clap", "pe_audio"]


@pytest.mark.parametrize("kind", KINDS)
def test_tower_x_equals_the_owners_forward_and_pooling(tmp_path, kind):
    folder = _write(kind, tmp_path / kind)
    tower = HFAudioTower(str(folder)).eval()
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal((2, tower.sample_rate))).astype(np.float32)
    with torch.no_grad():
        x = tower(torch.from_numpy(wave))
    want = _owner(kind, folder, wave)
    assert x.shape == (2, tower.embed_dim)
    torch.testing.assert_close(x, want, rtol=0, atol=1e-6)
    assert tower.pooling == ("pooled" if kind in ("ast", "clap", "pe_audio") else "mean")


def test_poolings_and_bad_names(tmp_path):
    folder = _write("wav2vec2", tmp_path / "w2v")
    wave = torch.randn(2, 16000) * 0.1
    first, mean = HFAudioTower(str(folder), "first").eval(), HFAudioTower(str(folder), "mean").eval()
    with torch.no_grad():
        hidden = first.model(**first.features(wave)).last_hidden_state
        torch.testing.assert_close(first(wave), hidden[:, 0])
        torch.testing.assert_close(mean(wave), hidden.mean(1))
    with pytest.raises(ConfigError, match="has no pooled output"):
        HFAudioTower(str(folder), "pooled")(wave)
    with pytest.raises(ConfigError, match="pooling = 'max'"):
        HFAudioTower(str(folder), "max")
    with pytest.raises(ConfigError, match="hf:/no/such: not a transformers audio model"):
        HFAudioTower("/no/such")


def _cfg(tiny_bert, tiny_synthetic, folder, *extra):
    from clapkit.config import load_config

    keep = [o for o in tiny_overrides(tiny_bert) if not o.startswith(("model.audio.", "audio.sample_rate"))]
    return load_config(None, keep + [f"model.audio.name=hf:{folder}", f"data.train=[csv:{tiny_synthetic / 'train.csv'}]",
                                     "train.cache_frozen=false", *extra])


def test_clap_on_a_pretrained_tower_trains_resumes_and_reloads(tmp_path, tiny_bert, tiny_synthetic, monkeypatch):
    """The leakage paper's recipe (one frozen epoch, then unfrozen) on an AST tower: 3 epochs
    straight equal 3 epochs stopped after the frozen one and resumed; the checkpoint reloads
    without the source folder and embeds as the trained model does."""
    import shutil

    from clapkit.inference.embed import embed_media
    from clapkit.models.dual import DualEncoder
    from clapkit.training.clap import train_clap

    folder = _write("ast", tmp_path / "ast")
    extra = ("train.epochs=3", "train.frozen_epochs=1", "train.lr_frozen=3e-3")
    train_clap(_cfg(tiny_bert, tiny_synthetic, folder, *extra), tmp_path / "straight")
    train_clap_stopped_then_resumed(_cfg(tiny_bert, tiny_synthetic, folder, *extra), tmp_path / "resumed", 1, monkeypatch)
    a = load_file(tmp_path / "straight" / "last" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "last" / "model.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("audio.model.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    shutil.rmtree(folder)  # the checkpoint holds the tower's config and extractor itself
    model = DualEncoder.load(tmp_path / "straight" / "checkpoint")
    assert (tmp_path / "straight" / "checkpoint" / "audio_tower" / "preprocessor_config.json").is_file()
    assert model.cfg["audio"]["sample_rate"] == 16000 and model.cfg["audio"]["normalize"] is False
    from clapkit.data.media import load_labelled_media

    clips = load_labelled_media(f"folder:{tiny_synthetic / 'unseen'}", "audio").clips
    again = embed_media(DualEncoder.load(tmp_path / "straight" / "checkpoint"), clips)
    np.testing.assert_array_equal(embed_media(model, clips), again)
    assert np.isfinite(again).all() and again.shape == (len(clips), 16)
    # the commands that read the media tower's own output take it: a linear probe on x, the audit of x_a and E_a
    import json
    import subprocess
    import sys

    ckpt, unseen = tmp_path / "straight" / "checkpoint", f"folder:{tiny_synthetic / 'unseen'}"
    for args in (["eval", "probe", "--data", unseen, "--features", "x", "--cv", "2", "--out", str(tmp_path / "probe.json")],
                 ["audit", "embeddings", "--data", unseen, "--out", str(tmp_path / "audit")]):
        proc = subprocess.run([sys.executable, "-m", "clapkit.cli", args[0], args[1], "--model", str(ckpt), *args[2:]],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
    probe = json.loads((tmp_path / "probe.json").read_text())
    assert probe["features"]["x"]["dim"] == model.media_tower.embed_dim == 16  # the AST's own width
    assert probe["model_provenance"]["family"].startswith("hf:") and probe["model_provenance"]["kind"] == "clapkit"
    report = json.loads((tmp_path / "audit" / "report.json").read_text())
    assert set(report["silhouette"]) == {"x_a", "E_a"} and report["dims"]["x_a"] == 16


def test_lit_keeps_a_frozen_pretrained_tower_bit_identical(tmp_path, tiny_bert, tiny_synthetic):
    """LiT: the audio tower frozen throughout (its outputs cached once), text and projectors trained."""
    from clapkit.training.clap import train_clap

    folder = _write("wav2vec2", tmp_path / "w2v")
    before = load_file(folder / "model.safetensors")
    train_clap(_cfg(tiny_bert, tiny_synthetic, folder, "train.epochs=2", "train.frozen_epochs=2",
                    "train.frozen_backbones=[media]", "train.keep_frozen=[media]", "train.cache_frozen=true",
                    "train.lr_frozen=3e-3"), tmp_path / "lit")
    after = load_file(tmp_path / "lit" / "checkpoint" / "model.safetensors")
    tower = {k[len("audio.model."):]: v for k, v in after.items() if k.startswith("audio.model.")}
    assert tower and set(tower) <= set(before)
    for k, v in tower.items():
        assert torch.equal(v, before[k]), k
    text_before = load_file(f"{tiny_bert}/model.safetensors")
    text_after = load_file(tmp_path / "lit" / "checkpoint" / "text" / "model.safetensors")
    assert any(not torch.equal(text_after[k], text_before[k]) for k in text_after if k in text_before)


def test_timm_tower_reads_a_local_weights_file_as_timm_does(tmp_path):
    import timm
    from safetensors.torch import save_file

    from clapkit.models.towers import build_tower

    torch.manual_seed(1)
    source = timm.create_model("test_resnet", num_classes=0)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    tower = build_tower("image", {"name": "timm:test_resnet", "checkpoint": str(tmp_path / "w.safetensors")}).eval()
    theirs = timm.create_model("test_resnet", pretrained=True, num_classes=0,
                               pretrained_cfg_overlay=dict(file=str(tmp_path / "w.safetensors"))).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(tower(x), theirs(x), rtol=0, atol=0)
        assert tower(x).shape == (2, tower.embed_dim)
        random = build_tower("image", {"name": "timm:test_resnet", "checkpoint": None}).eval()
        assert not torch.allclose(random(x), theirs(x))
    assert tower.preprocess["size"] == timm.data.resolve_data_config({}, model=theirs)["input_size"][-1]
    with pytest.raises(ConfigError, match="timm has no model of that name"):
        build_tower("image", {"name": "timm:no_such_net", "checkpoint": None})
    with pytest.raises(ConfigError, match="file not found"):
        build_tower("image", {"name": "timm:test_resnet", "checkpoint": str(tmp_path / "missing.pth")})


def test_clip_on_a_timm_tower_trains_and_reloads(tmp_path, tiny_bert, tiny_images):
    from conftest import tiny_image_overrides

    from clapkit.config import load_config
    from clapkit.data.media import load_labelled_media
    from clapkit.inference.embed import embed_media
    from clapkit.models.dual import DualEncoder
    from clapkit.training.clap import train_clap

    cfg = load_config(None, tiny_image_overrides(tiny_bert) + ["model.image.name=timm:test_resnet", "train.epochs=1",
                                                             f"data.train=[csv:{tiny_images / 'train.csv'}]"])
    train_clap(cfg, tmp_path / "run")
    model = DualEncoder.load(tmp_path / "run" / "checkpoint")
    items = load_labelled_media(f"folder:{tiny_images / 'unseen'}", "image").clips
    np.testing.assert_array_equal(embed_media(model, items), embed_media(DualEncoder.load(tmp_path / "run" / "checkpoint"), items))
    assert model.cfg["model"]["image"]["name"] == "timm:test_resnet" and model.cfg["image"]["size"] == 32


@pytest.mark.slow
def test_leakage_experiment_compares_a_supervised_and_a_self_supervised_tower(tmp_path, tiny_bert):
    """The CPU smoke run of the tower comparison (`leakage-towers`' question on tiny models): a
    tiny AST and a tiny WavLM, each trained on the dirty and the clean captions of a small copy of
    the synthetic leakage set; every cell has its interval and the named / never-named split, and the clean
    training data names no evaluation class."""
    import json

    from clapkit.config import load_config
    from clapkit.data.audio.synthetic import write_leakage_set
    from clapkit.experiments.leakage import run_leakage_matrix

    ast, wavlm = _write("ast", tmp_path / "ast"), _write("wavlm", tmp_path / "wavlm")
    data = tmp_path / "leakage-set"
    write_leakage_set(data, seed=2, sr=16000, seconds=1.0, pretrain_clips=1, train_clips=2, eval_clips=2)
    cfg = load_config("leakage-cpu", [f"model.text.name={tiny_bert}", "model.text.max_length=16", "model.projector.dim=16",
                                      "model.projector.hidden=32", "audio.segment_seconds=1.0", "train.epochs=2",
                                      "train.frozen_epochs=1", "train.batch_size=32", "experiment.synthetic=false",
                                      f"experiment.train_captions=[csv:{data / 'train_dirty.csv'}]",
                                      f"experiment.eval=folder:{data / 'eval'}",
                                      f"experiment.towers={{ast: {{name: 'hf:{ast}'}}, wavlm: {{name: 'hf:{wavlm}', pooling: mean}}}}"])
    r = run_leakage_matrix(cfg, tmp_path / "out")
    assert set(r["towers"]) == {"ast_dirty", "ast_clean", "wavlm_dirty", "wavlm_clean"}
    for row in r["towers"].values():
        lo, hi = row["top1_ci"]
        assert 0 <= lo <= row["top1"] <= hi <= 1 and row["n"] > 0
        named, never = row["top1_named_classes"], row["top1_unnamed_classes"]
        assert named["n"] + never["n"] == row["n"]
    assert r["towers"]["ast_clean"]["classes_named"] == [] and r["towers"]["ast_dirty"]["classes_named"]
    assert r["towers"]["ast_clean"]["train_pairs"] < r["towers"]["ast_dirty"]["train_pairs"]
    assert json.loads((tmp_path / "out" / "results.json").read_text())["towers"] == r["towers"]
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| ast (`hf:" in table and "| wavlm (`hf:" in table
    assert not (tmp_path / "out" / "backbone_dirty").exists()  # no backbone of clapkit's own is pre-trained
