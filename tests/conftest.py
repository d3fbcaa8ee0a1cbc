"""Shared fixtures: the shared data folder, a tiny BERT, tiny configs, a tiny trained model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def pytest_sessionfinish(session, exitstatus):
    """No skipped test: a suite that passes with skips has not run what it claims (the
    golden writer's own run, CLAPKIT_WRITE_GOLDENS=1, skips its checks by design)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped and exitstatus == 0 and os.environ.get("CLAPKIT_WRITE_GOLDENS") != "1":
        reporter.write_line(f"error: {len(skipped)} test(s) skipped; make test runs every test "
                            f"(first: {skipped[0].nodeid})", red=True)
        session.exitstatus = 1


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; a missing folder fails the test (it must exist in CI)."""
    if not (SHARED / "esc50" / "meta" / "esc50.csv").is_file():
        pytest.fail(f"shared data not found at {SHARED}: the data tests need ../shared/data beside the repository")
    return SHARED


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A 2-layer, 32-wide random BERT with MiniLM's tokenizer, saved as a HF folder."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from clapkit.models.text import resolve_text_model

    folder = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(resolve_text_model("minilm"))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    import torch

    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_bert_no_dropout(tmp_path_factory, tiny_bert) -> str:
    """The tiny BERT with dropout off (runs that must match to rounding)."""
    from transformers import AutoConfig, AutoModel

    folder = tmp_path_factory.mktemp("tiny-bert-nodrop")
    model = AutoModel.from_pretrained(tiny_bert, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model.save_pretrained(folder)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    assert AutoConfig.from_pretrained(folder).hidden_dropout_prob == 0.0
    return str(folder)


def write_tones(folder: Path) -> Path:
    """16 FSDD-named clips (``{digit}_{speaker}_{n}.wav``, 8 kHz, 3000 samples): a tone per
    digit 0-3 with a little noise, two speakers."""
    import numpy as np
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for digit in range(4):
        for n in range(4):
            tone = np.sin(2 * np.pi * (200 + 100 * digit) * np.arange(3000) / 8000) + 0.05 * rng.standard_normal(3000)
            sf.write(folder / f"{digit}_spk{n % 2}_{n}.wav", tone.astype(np.float32), 8000)
    return folder


def tiny_overrides(text_model: str) -> list[str]:
    """A model and recipe small enough for a unit test."""
    return [
        f"model.text.name={text_model}",
        "model.text.max_length=16",
        "model.audio.name=small_cnn",
        "model.audio.channels=[4, 8]",
        "model.audio.n_fft=256",
        "model.audio.hop_length=128",
        "model.audio.n_mels=16",
        "model.audio.fmax=4000",
        "model.projector.dim=16",
        "model.projector.hidden=32",
        "audio.sample_rate=8000",
        "audio.segment_seconds=0.5",
        "train.batch_size=16",
        "runtime.eval_batch_size=16",
        "runtime.progress=false",
        "train.frozen_epochs=0",
        "train.lr_unfrozen=3e-3",
        "train.early_stopping_patience=0",
    ]


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    """A small copy of the embedded synthetic set (8 kHz, 0.5 s clips)."""
    from clapkit.data.audio.synthetic import write_synthetic

    folder = tmp_path_factory.mktemp("synthetic")
    write_synthetic(folder, seed=1, sr=8000, seconds=0.5, train_clips=3, test_clips=1, unseen_clips=2, captions_per_clip=2)
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_bert, tiny_synthetic) -> Path:
    """A tiny model trained for one epoch on the tiny synthetic set."""
    from clapkit.config import load_config
    from clapkit.training.clap import train_clap

    out = tmp_path_factory.mktemp("tiny-run")
    cfg = load_config(None, tiny_overrides(tiny_bert) + [f"data.train=[csv:{tiny_synthetic / 'train.csv'}]", "train.epochs=1"])
    train_clap(cfg, out)
    return out / "checkpoint"


def tiny_image_overrides(text_model: str) -> list[str]:
    """A CLIP small enough for a unit test: 32 x 32 pictures, a 2-block CNN."""
    keep = [o for o in tiny_overrides(text_model) if not o.startswith(("model.audio.", "audio."))]
    return keep + [
        "model.modality=image",
        "model.image.name=small_cnn",
        "model.image.channels=[4, 8]",
        "image.size=32",
        "image.mean=[0.5, 0.5, 0.5]",
        "image.std=[0.25, 0.25, 0.25]",
        "image.flip_p=0.5",
        "image.crop_scale=[0.5, 1.0]",
    ]


@pytest.fixture(scope="session")
def tiny_image_checkpoint(tmp_path_factory, tiny_bert, tiny_images) -> Path:
    """A tiny CLIP trained for one epoch on the tiny synthetic pictures."""
    from clapkit.config import load_config
    from clapkit.training.clap import train_clap

    out = tmp_path_factory.mktemp("tiny-clip")
    train_clap(load_config(None, tiny_image_overrides(tiny_bert) + [f"data.train=[csv:{tiny_images / 'train.csv'}]",
                                                                   "train.epochs=1"]), out)
    return out / "checkpoint"


@pytest.fixture(scope="session")
def tiny_images(tmp_path_factory) -> Path:
    """A small copy of the embedded synthetic picture set (48 x 48 PNGs)."""
    from clapkit.data.image.synthetic import write_synthetic_images

    folder = tmp_path_factory.mktemp("synthetic-images")
    write_synthetic_images(folder, seed=1, pixels=48, train_images=3, test_images=1, unseen_images=2, captions_per_image=2)
    return folder


def write_tiny_public_model(family: str, folder: Path, dropout: bool = True, fusion: bool = False) -> Path:
    """A tiny random transformers ClapModel, CLIPModel, SiglipModel or PeAudioModel saved with its
    processor and a tokenizer (MiniLM's, cut to 64 tokens), as a user's downloaded
    model folder is laid out. ``dropout=False`` sets every dropout rate to 0;
    ``fusion=True`` writes a fused CLAP (``enable_fusion``, ``truncation="fusion"``, as
    laion/clap-htsat-fused)."""
    import torch
    from transformers import (
        AutoTokenizer,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
    )

    from clapkit.models.text import resolve_text_model

    tok = AutoTokenizer.from_pretrained(resolve_text_model("minilm"))
    tok.model_max_length = 64
    text = dict(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=32, max_position_embeddings=64)
    vision = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=32, patch_size=8)
    torch.manual_seed(0)
    if family == "pe_audio":  # Perception Encoder audio-text: DAC front end, ModernBERT text
        from transformers import (
            PeAudioConfig,
            PeAudioFeatureExtractor,
            PeAudioModel,
            PeAudioProcessor,
        )

        config = PeAudioConfig(
            text_config=dict(model_type="modernbert", vocab_size=tok.vocab_size, hidden_size=16, intermediate_size=32,
                             num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64, local_attention=16,
                             pad_token_id=tok.pad_token_id, cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
                             bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id),
            audio_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, head_dim=8,
                              max_position_embeddings=256, dac_config=dict(encoder_hidden_size=4, codebook_dim=8)))
        PeAudioModel(config).save_pretrained(folder)
        PeAudioProcessor(feature_extractor=PeAudioFeatureExtractor(), tokenizer=tok).save_pretrained(folder)
        return folder
    if family == "clip":
        text.update(eos_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id, pad_token_id=tok.pad_token_id)
        CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).save_pretrained(folder)
        CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    elif family == "siglip":
        SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).save_pretrained(folder)
        SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    else:
        text["max_position_embeddings"] = 66  # RoBERTa-style positions start after the padding index
        audio = dict(hidden_size=32, depths=[1, 1], num_attention_heads=[2, 2], patch_embeds_hidden_size=16, spec_size=128 if fusion else 64,
                     window_size=4, num_mel_bins=64 if fusion else 16, enable_fusion=fusion, projection_hidden_size=16)
        if not dropout:
            text.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
            audio.update(drop_path_rate=0.0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=8)).save_pretrained(folder)
        # fusion resizes the whole clip's mel to 64 bins (transformers' _random_mel_fusion), so it needs 64
        ClapFeatureExtractor(feature_size=64 if fusion else 16, sampling_rate=16000, max_length_s=1, fft_window_size=400, hop_length=160,
                             truncation="fusion" if fusion else "rand_trunc", padding="repeatpad").save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def train_clap_stopped_then_resumed(cfg: dict, out: Path, epoch: int, monkeypatch) -> None:
    """``train_clap`` on ``cfg`` killed as it starts epoch index ``epoch`` (a KeyboardInterrupt
    from the trainer's epoch loop, after the epochs before it saved ``last/``), then run again
    with ``resume=True`` to the end."""
    import pytest

    from clapkit.training.clap import ClapTrainer, train_clap

    real = ClapTrainer.steps

    def stop(self, e, start):
        if e == epoch:
            raise KeyboardInterrupt
        return real(self, e, start)

    monkeypatch.setattr(ClapTrainer, "steps", stop)
    with pytest.raises(KeyboardInterrupt):
        train_clap(cfg, out)
    monkeypatch.setattr(ClapTrainer, "steps", real)
    train_clap(cfg, out, resume=True)


def same_weights(a: Path, b: Path) -> None:
    """Two clapkit checkpoint folders hold the same weights, bit for bit (towers and text)."""
    import torch
    from safetensors.torch import load_file

    for rel in ("model.safetensors", "text/model.safetensors"):
        x, y = load_file(a / rel), load_file(b / rel)
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), (rel, k)
