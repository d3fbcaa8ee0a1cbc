"""One place recognises every model format (clapkit.models.formats.detect): a fixture of
each kind is named right, and anything else gets one error that lists the kinds."""

import json

import pytest
import torch
from conftest import write_tiny_public_model
from safetensors.torch import save_file

from clapkit.errors import ConfigError
from clapkit.models.formats import KINDS, detect


def test_each_format_is_recognised(tmp_path, tiny_checkpoint, tiny_bert):
    from clapkit.models.cse import CseModel

    cse = CseModel({"name": tiny_bert, "pooling": "cls", "mlp_only_train": True, "max_length": 16,
                    "image": {"size": 8, "patch": 2, "channels": 1}, "audio": {}})
    cse.save(tmp_path / "cse")
    for family in ("clap", "clip", "siglip", "pe_audio"):
        write_tiny_public_model(family, tmp_path / family)
    # a LAION-CLAP training checkpoint is told apart from an audio tower's .pt by its weights' names
    torch.save({"epoch": 1, "state_dict": {"module.audio_branch.bn0.weight": torch.ones(2),
                                           "module.text_branch.pooler.dense.weight": torch.ones(2, 2)}}, tmp_path / "laion.pt")
    torch.save({"model": {"conv_block1.conv1.weight": torch.ones(2)}}, tmp_path / "panns-real.pth")
    torch.save({"model": {"audio_encoder.base.conv_block1.conv1.weight": torch.ones(2),
                          "caption_encoder.base.pooler.dense.weight": torch.ones(2)}}, tmp_path / "CLAP_weights_2022.pth")
    torch.save({"model": {"audio_encoder.base.htsat.bn0.weight": torch.ones(2),
                          "caption_encoder.base.wte.weight": torch.ones(2)}}, tmp_path / "CLAP_weights_2023.pth")
    (tmp_path / "oc").mkdir()
    (tmp_path / "oc" / "open_clip_config.json").write_text("{}")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "tower.safetensors"))
    (tmp_path / "panns.pth").write_bytes(b"")
    old = tmp_path / "old"  # a checkpoint written before model.modality existed: no modality key
    old.mkdir()
    cfg = json.loads((tiny_checkpoint / "config.json").read_text())
    cfg["model"].pop("modality", None)
    (old / "config.json").write_text(json.dumps(cfg))
    (old / "model.safetensors").write_bytes((tiny_checkpoint / "model.safetensors").read_bytes())
    (old / "text").mkdir()
    want = {
        tiny_checkpoint: "clapkit", old: "clapkit", tmp_path / "cse": "train-cse", "minilm": "sentence-transformers",
        tiny_checkpoint / "text": "sentence-transformers", tiny_bert: "hf-text", tmp_path / "clap": "hf-clap",
        tmp_path / "clip": "hf-clip", tmp_path / "siglip": "hf-siglip", tmp_path / "oc": "open_clip",
        "open_clip:ViT-B-32@laion2b_s34b_b79k": "open_clip", tmp_path / "tower.safetensors": "audio-tower",
        tmp_path / "panns.pth": "audio-tower", tmp_path / "pe_audio": "pe-audio", tmp_path / "laion.pt": "laion-clap",
        tmp_path / "panns-real.pth": "audio-tower", tmp_path / "CLAP_weights_2022.pth": "msclap",
        tmp_path / "CLAP_weights_2023.pth": "msclap",
    }
    assert {str(k): detect(k) for k in want} == {str(k): v for k, v in want.items()}
    assert set(want.values()) == set(KINDS)  # a fixture for every kind


def test_anything_else_is_one_error_listing_the_kinds(tmp_path, tiny_bert):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text('{"hidden": 3}')
    (tmp_path / "notes.txt").write_text("x")
    for name, why in ((tmp_path / "empty", "no config.json"), (tmp_path / "junk", "names no model_type"),
                      (tmp_path / "notes.txt", "a file, not a model folder"), (tmp_path / "missing", "nor a hub model")):
        with pytest.raises(ConfigError) as err:
            detect(name)
        text = str(err.value)
        assert str(name) in text and why in text and all(v in text for v in KINDS.values()), text
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text('{"model": {}}')
    with pytest.raises(ConfigError, match=r"half: not a clapkit checkpoint \(no text/\)"):
        detect(tmp_path / "half")


def test_commands_and_init_from_go_through_it(tmp_path, tiny_bert, tiny_synthetic):
    from clapkit.config import load_config
    from clapkit.models.public.loader import load_model
    from clapkit.training.clap import train_clap

    with pytest.raises(ConfigError, match=r"init_from = .*another transformers model folder .*model.text.name"):
        train_clap(load_config(None, [f"model.init_from={tiny_bert}", f"data.train=[csv:{tiny_synthetic / 'train.csv'}]",
                                      "train.epochs=1", "runtime.progress=false"]), tmp_path / "run")
    with pytest.raises(ConfigError, match=r"a `clapkit train cse` output .*not a dual encoder"):
        from clapkit.models.cse import CseModel

        CseModel({"name": tiny_bert, "pooling": "mean", "mlp_only_train": True, "max_length": 16,
                  "image": {}, "audio": {}}).save(tmp_path / "cse")
        load_model(tmp_path / "cse")
