"""Every config.yaml a run saves is a config clapkit accepts back as --config, and it
resolves to the config the run used (one test per trainer and public model family)."""

import pytest
import yaml
from conftest import tiny_image_overrides, tiny_overrides, write_tiny_public_model

from clapkit.config import load_config


def _round_trips(run_dir):
    saved = run_dir / "config.yaml"
    assert load_config(str(saved)) == yaml.safe_load(saved.read_text())


def test_train_clap_and_train_clip_configs(tmp_path, tiny_checkpoint, tiny_bert, tiny_images):
    from clapkit.training.clap import train_clap

    _round_trips(tiny_checkpoint.parent)
    cfg = load_config(None, tiny_image_overrides(tiny_bert) + [f"data.train=[csv:{tiny_images / 'train.csv'}]",
                                                              "train.epochs=1"])
    train_clap(cfg, tmp_path / "clip")
    _round_trips(tmp_path / "clip")


@pytest.mark.parametrize("family", ["clap", "clip"])
def test_a_fine_tuned_public_models_config(tmp_path, tiny_synthetic, tiny_images, family):
    """A public model's fine-tuning saved model.family, which --config rejected."""
    from clapkit.training.clap import train_clap

    folder = write_tiny_public_model(family, tmp_path / "model")
    medium, root = ("audio", tiny_synthetic) if family == "clap" else ("image", tiny_images)
    cfg = load_config(None, [f"model.init_from={folder}", f"model.modality={medium}", f"data.train=[csv:{root / 'train.csv'}]",
                             "train.batch_size=16", "runtime.progress=false", "train.frozen_epochs=1", "train.epochs=1"])
    train_clap(cfg, tmp_path / "run")
    _round_trips(tmp_path / "run")
    # and it trains again from the saved file
    again = load_config(str(tmp_path / "run" / "config.yaml"), ["train.epochs=1"])
    assert train_clap(again, tmp_path / "again")["epochs_run"] == 1


def test_train_cse_and_audio_backbone_configs(tmp_path, tiny_bert, tiny_synthetic):
    from clapkit.training.backbone import train_audio_backbone
    from clapkit.training.cse import train_cse

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"sentence number {i} about a dog" for i in range(16)) + "\n")
    cse = load_config(None, [f"cse.model.name={tiny_bert}", f"cse.corpus=txt:{corpus}", "cse.batch_size=8", "cse.steps=1",
                             "cse.model.max_length=16", "runtime.progress=false"])
    train_cse(cse, tmp_path / "cse")
    _round_trips(tmp_path / "cse")
    backbone = load_config(None, tiny_overrides(tiny_bert) + [f"backbone.data=folder:{tiny_synthetic / 'unseen'}",
                                                             "backbone.epochs=1", "backbone.batch_size=4"])
    assert backbone["backbone"]["grad_clip"] == 0.0  # its own, not train.grad_clip of the CLAP recipe
    train_audio_backbone(backbone, tmp_path / "backbone")
    _round_trips(tmp_path / "backbone")
