"""open_clip models behind clapkit's interface (the optional extra clapkit[open_clip]).

The spec parsing and the missing-extra error run everywhere; the equality with open_clip's
own logits and the commands run where open_clip is installed (it needs a torchvision
built for the installed torch: `make test` installs the extra with torch 2.14.1 and
torchvision 0.29.1, so these tests run there)."""

import importlib.util
import json
import os

import numpy as np
import pytest
import torch

from clapkit.errors import ConfigError
from clapkit.models.public.hf import hf_dual_family
from clapkit.models.public.loader import load_model
from clapkit.models.public.open_clip import is_open_clip, parse_open_clip

HAVE_OPEN_CLIP = importlib.util.find_spec("open_clip") is not None


def test_specs_parse_as_open_clip_takes_them(tmp_path):
    assert parse_open_clip("open_clip:ViT-B-32@laion2b_s34b_b79k") == ("ViT-B-32", "laion2b_s34b_b79k")
    assert parse_open_clip("open_clip:ViT-B-32@/w/open_clip_pytorch_model.bin") == ("ViT-B-32", "/w/open_clip_pytorch_model.bin")
    assert parse_open_clip("open_clip:RN50") == ("RN50", None)
    assert parse_open_clip("open_clip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K") == (
        "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", None)
    assert parse_open_clip("open_clip:local-dir:/m/x") == ("local-dir:/m/x", None)
    with pytest.raises(ConfigError, match=r"open_clip:@x: give open_clip:NAME\[@PRETRAINED\]"):
        parse_open_clip("open_clip:@x")
    (tmp_path / "oc").mkdir()
    (tmp_path / "oc" / "open_clip_config.json").write_text("{}")
    assert is_open_clip(tmp_path / "oc") and parse_open_clip(tmp_path / "oc") == (f"local-dir:{tmp_path / 'oc'}", None)
    assert hf_dual_family(tmp_path / "oc") == "open_clip"
    (tmp_path / "oc" / "config.json").write_text(json.dumps({"model_type": "clip"}))  # an HF repo with both: transformers
    assert not is_open_clip(tmp_path / "oc") and hf_dual_family(tmp_path / "oc") == "clip"


def test_without_the_extra_the_error_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "open_clip", None)  # as if the extra were not installed: import fails
    with pytest.raises(ConfigError, match=r"open_clip:ViT-B-32: open_clip models need the optional extra: "
                                          r"pip install 'clapkit\[open_clip\]'"):
        load_model("open_clip:ViT-B-32")


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    """A tiny random open_clip ViT CLIP saved as open_clip's local-dir layout."""
    if not HAVE_OPEN_CLIP and os.environ.get("CI"):
        pytest.fail("open_clip is not installed: `make test` installs the open_clip extra (torch 2.14.1, torchvision 0.29.1)")
    open_clip = pytest.importorskip("open_clip")
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("tiny-open-clip")
    cfg = {"embed_dim": 8,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 16, "head_width": 8, "patch_size": 8},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**cfg)
    (folder / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": cfg, "preprocess_cfg": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


def test_logits_and_embeddings_equal_open_clips_own(tiny_open_clip, tiny_images):
    import open_clip

    from clapkit.data.image.io import open_image
    from clapkit.data.media import load_labelled_media
    from clapkit.evaluation.zeroshot import class_text_embeddings, default_templates
    from clapkit.inference.embed import embed_media

    model = load_model(tiny_open_clip)
    data = load_labelled_media(f"folder:{tiny_images / 'unseen'}", "image")
    templates = default_templates("image")
    e_i = torch.from_numpy(embed_media(model, data.clips, batch_size=5))
    e_t = torch.from_numpy(class_text_embeddings(model, data.label_texts(), templates))
    ours = model.logits(e_i, e_t).detach()

    own, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tiny_open_clip}")
    own.eval()
    tok = open_clip.get_tokenizer(f"local-dir:{tiny_open_clip}")
    with torch.no_grad():
        image = torch.stack([preprocess(open_image(c.media)) for c in data.clips])
        text = tok([templates[0].format(label=t) for t in data.label_texts()])
        f_i, f_t, scale = own(image, text)  # open_clip's forward normalises
        theirs = scale * f_i @ f_t.T
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(e_i, f_i, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(e_t, f_t, atol=1e-5, rtol=1e-5)
    # x: the ViT's pooled output before visual.proj, and the text's before text_projection
    with torch.no_grad():
        x = model.media_backbone(model.preprocess([open_image(c.media) for c in data.clips[:3]]))
        torch.testing.assert_close(x @ own.visual.proj, own.encode_image(image[:3]), atol=1e-5, rtol=1e-5)
    assert x.shape == (3, 16)


def test_commands_take_an_open_clip_model(tiny_open_clip, tiny_images, tmp_path):
    from typer.testing import CliRunner

    from clapkit.cli import app

    spec = f"open_clip:local-dir:{tiny_open_clip}"
    run = CliRunner().invoke(app, ["eval", "zeroshot", "--model", spec, "--data", f"folder:{tiny_images / 'unseen'}",
                                   "--out", str(tmp_path / "zs.json")])
    assert run.exit_code == 0, run.output
    assert json.loads((tmp_path / "zs.json").read_text())["clips"] == 16
    run = CliRunner().invoke(app, ["eval", "retrieval", "--model", spec, "--data", f"csv:{tiny_images / 'test.csv'}",
                                   "--out", str(tmp_path / "r.json")])
    assert run.exit_code == 0, run.output
    assert json.loads((tmp_path / "r.json").read_text())["text_to_image"]["queries"] == 48
    run = CliRunner().invoke(app, ["embed", "--model", str(tiny_open_clip), "--image", f"folder:{tiny_images / 'unseen'}",
                                   "--backbone", "--out", str(tmp_path / "x.npz")])
    assert run.exit_code == 0, run.output
    assert np.load(tmp_path / "x.npz")["embeddings"].shape == (16, 16)
    run = CliRunner().invoke(app, ["audit", "model", "--model", spec, "--data", f"folder:{tiny_images / 'unseen'}",
                                   "--out", str(tmp_path / "audit"), "--k-max", "3"])
    assert run.exit_code == 0, run.output
    assert json.loads((tmp_path / "audit" / "report.json").read_text())["zeroshot"]["classes"] == 8
    (tmp_path / "stsb").mkdir()
    (tmp_path / "stsb" / "sts-test.csv").write_text("".join(
        f"g\tf\ty\t{i}\t{i % 5}.0\ta dog number {i}\ta cat number {i * 3 % 7}\n" for i in range(8)))
    run = CliRunner().invoke(app, ["eval", "sts", "--model", spec, "--data", f"stsb:{tmp_path / 'stsb'}", "--projected"])
    assert run.exit_code == 0, run.output
    # fine-tuning it: tests/test_open_clip_finetune.py
