"""Fine-tuning open_clip models through clapkit's training loop (``model.init_from`` an
open_clip model): the run takes the model's own preprocessing, the frozen phase trains the
projections and the temperature on cached x, the scale stays capped, a stopped run resumes
exactly, and checkpoints are open_clip's own local-dir layout, which open_clip reloads to
the same embeddings. open_clip has no audio models, so only image fine-tuning is tested."""

import csv
import json
import math

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from clapkit.config import load_config  # noqa: E402
from clapkit.errors import ConfigError  # noqa: E402
from clapkit.models.formats import detect  # noqa: E402
from clapkit.models.public.loader import load_model  # noqa: E402
from clapkit.models.public.open_clip import OpenClipDualEncoder  # noqa: E402

TINY = {"embed_dim": 8,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 16, "head_width": 8, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
PROJECTIONS = {"visual.proj", "text_projection"}  # in open_clip's state dict


def _write(folder, custom_text=False, logit_scale=None, **extra):
    """A tiny random open_clip ViT CLIP (a CustomTextCLIP with ``custom_text``) in open_clip's
    local-dir layout, its logit scale set to ``logit_scale`` if given; ``extra``: more of
    ``model_cfg`` (``init_logit_bias``: a SigLIP model)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    cfg = {**TINY, **extra, "custom_text": True} if custom_text else {**TINY, **extra}
    torch.manual_seed(0)
    model = (open_clip.model.CustomTextCLIP if custom_text else open_clip.model.CLIP)(**TINY, **extra)
    if logit_scale is not None:
        model.logit_scale.data.fill_(math.log(logit_scale))
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {"mean": MEAN, "std": STD}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


@pytest.fixture(scope="module")
def tiny_oc(tmp_path_factory):
    """A tiny open_clip CLIP whose logit scale (1000) starts above the default cap (100)."""
    return _write(tmp_path_factory.mktemp("oc") / "model", logit_scale=1000.0)


def _cfg(*extra):
    return load_config(None, ["model.modality=image", *extra])


def _batch(model, n=6):
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(n, 3, 32, 32, generator=g)
    tokens = model.text.tokenize([f"a picture of thing {i}" for i in range(n)])
    return pixels, tokens


def test_for_training_takes_the_models_preprocessing_and_refuses_audio(tiny_oc, tmp_path):
    cfg = _cfg("model.learn_temperature=false", "model.logit_clamp=50")
    model = OpenClipDualEncoder(str(tiny_oc)).for_training(cfg)
    assert (model.cfg["image"]["size"], model.cfg["image"]["mean"], model.cfg["image"]["std"]) == (32, MEAN, STD)
    assert cfg["image"]["size"] is None  # the run's config as given
    assert model.logit_clamp == 50 and model.logit_scale_parameter() is model.model.logit_scale
    assert model.logit_bias_parameter() is None  # not a SigLIP model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters()} - {"model.logit_scale"}  # learn_temperature false
    with pytest.raises(ConfigError, match=r"model.init_from = .*an image model \(open_clip; open_clip has no audio "
                                          r"models\); this config trains audio \(use `clapkit train clip`\)"):
        OpenClipDualEncoder(str(tiny_oc)).for_training(load_config(None, []))
    old = OpenClipDualEncoder(str(tiny_oc))
    old.model_cfg = None  # what an open_clip too old to read local-dir: / hf-hub: configs gives
    with pytest.raises(ConfigError, match=r"gives no model config for it, so a fine-tuned checkpoint could not be "
                                          r"loaded back; upgrade open_clip"):
        old.for_training(_cfg())
    siglip = _write(tmp_path / "siglip", init_logit_bias=-10.0)  # logit_bias trains under the siglip loss only
    for loss, trains in (("siglip", True), ("clip", False)):
        model = OpenClipDualEncoder(str(siglip)).for_training(_cfg(f"train.loss={loss}"))
        assert model.logit_bias_parameter() is model.model.logit_bias
        assert model.model.logit_bias.requires_grad is trains and model.model.logit_scale.requires_grad


@pytest.mark.parametrize("custom_text", [False, True])
def test_the_frozen_phase_trains_the_projections_and_its_cache_gives_the_same_loss(tmp_path, custom_text):
    """Frozen: only visual.proj, text_projection and logit_scale train, the towers stay in
    eval mode; x from the backbones fed to the projections give the uncached loss."""
    from clapkit.losses import clip_loss

    model = OpenClipDualEncoder(str(_write(tmp_path / "m", custom_text))).for_training(_cfg())
    text = "model.text." if custom_text else "model."
    projections = {"model.visual.proj", f"{text}text_projection"}
    model.freeze_backbones(("media", "text"))
    model.train()
    assert {n for n, p in model.named_parameters() if p.requires_grad} == projections | {"model.logit_scale"}
    towers = [model.model.visual, model.model.text] if custom_text else [
        model.model.visual, model.model.transformer, model.model.token_embedding, model.model.ln_final]
    assert not any(m.training for t in towers for m in t.modules())
    model.freeze_backbones(("text",))  # the image tower trains, the text tower but its projection not
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert f"{text}text_projection" in trainable and "model.visual.conv1.weight" in trainable
    assert not any(n.startswith(f"{text}transformer.") or "token_embedding" in n or "positional_embedding" in n
                   for n in trainable if not n.startswith("model.visual."))
    model.freeze_backbones(())
    assert all(p.requires_grad for p in model.parameters())

    model.freeze_backbones(("media", "text"))
    model.eval()
    pixels, tokens = _batch(model)
    with torch.no_grad():
        x_m, x_t = model.media_backbone(pixels), model.text_backbone(tokens)
    cached = clip_loss(*model(x_m=x_m, x_t=x_t))
    whole = clip_loss(*model(pixels, tokens))
    torch.testing.assert_close(cached, whole, rtol=0, atol=1e-6)
    cached.backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None}
    assert got == projections | {"model.logit_scale"}
    e_i = model.model.encode_image(pixels, normalize=True)
    torch.testing.assert_close(model.project_media(x_m), e_i, rtol=0, atol=1e-6)


def _oc_embeddings(own, pixels, texts_ids):
    own.eval()
    with torch.no_grad():
        return own.encode_image(pixels, normalize=True), own.encode_text(texts_ids, normalize=True)


def test_save_writes_what_open_clip_loads_back(tmp_path):
    """save(): open_clip_model.safetensors and open_clip_config.json; create_model(NAME,
    pretrained=FILE) and local-dir: both give the fine-tuned model's embeddings; clapkit
    reads the folder as an open_clip model. A built-in name saves its own config too, and
    a model with an HF tokenizer (as open_clip's SigLIPs) its tokenizer files."""
    from transformers import AutoTokenizer

    from clapkit.models.text import resolve_text_model

    name = "clapkit-tiny-finetune"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / f"{name}.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(tmp_path / "configs")  # a built-in name, as ViT-B-32 is
    hf_tok = _write(tmp_path / "hf-tok")
    cfg = json.loads((hf_tok / "open_clip_config.json").read_text())
    cfg["model_cfg"]["text_cfg"].update(hf_tokenizer_name="minilm", vocab_size=30522)
    (hf_tok / "open_clip_config.json").write_text(json.dumps(cfg))
    (hf_tok / "open_clip_model.safetensors").unlink()  # random weights of the new vocabulary
    AutoTokenizer.from_pretrained(resolve_text_model("minilm")).save_pretrained(hf_tok)  # local-dir reads it here
    for source in (str(_write(tmp_path / "src")), f"open_clip:{name}", str(hf_tok)):
        model = OpenClipDualEncoder(source).for_training(_cfg())
        with torch.no_grad():  # as a fine-tune leaves it: every weight moved
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        model.eval()
        out = tmp_path / f"saved-{len(source)}"
        model.save(out)
        files = {p.name for p in out.iterdir()}
        assert {"open_clip_model.safetensors", "open_clip_config.json"} <= files
        assert ("tokenizer.json" in files) is (source == str(hf_tok))
        assert detect(out) == "open_clip"
        pixels, tokens = _batch(model)
        texts = [f"a picture of thing {i}" for i in range(6)]
        assert torch.equal(open_clip.get_tokenizer(f"local-dir:{out}")(texts), tokens["text"])
        with torch.no_grad():
            ours = (model.encode_media(pixels), model.encode_text(tokens))
        local, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
        own = local if source == str(hf_tok) else open_clip.create_model_and_transforms(
            name, pretrained=str(out / "open_clip_model.safetensors"))[0]
        for theirs in (own, local):
            for a, b in zip(ours, _oc_embeddings(theirs, pixels, tokens["text"]), strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        assert preprocess.transforms[-1].mean == (list(open_clip.OPENAI_DATASET_MEAN) if source == f"open_clip:{name}" else MEAN)
        again = load_model(out)  # what clapkit eval --model FOLDER and --resume read
        assert isinstance(again, OpenClipDualEncoder)
        assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values(), strict=True))


def _tensors(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "open_clip_model.safetensors"))


def test_train_clip_from_an_open_clip_model_freezes_caps_resumes_and_saves_it_back(tiny_oc, tiny_images, tmp_path,
                                                                                    monkeypatch):
    """One frozen epoch on cached x (the projections and the scale move, the towers do not),
    one unfrozen epoch (the towers move), the scale capped after every step from a start
    of 1000, a resume equal to the run never stopped, checkpoints open_clip reloads."""
    import numpy as np
    from typer.testing import CliRunner

    import clapkit.training.clap as clap
    from clapkit.cli import app
    from clapkit.data.image.io import open_image
    from clapkit.training.clap import train_clap

    caches = []
    real_cache = clap.FeatureCache
    monkeypatch.setattr(clap, "FeatureCache", lambda *a, **k: caches.append(real_cache(*a, **k)) or caches[-1])
    base = ["model.modality=image", f"model.init_from={tiny_oc}", f"data.train=[csv:{tiny_images / 'train.csv'}]",
            "train.batch_size=16", "runtime.progress=false", "train.frozen_epochs=1", "train.lr_frozen=1e-2",
            "train.lr_unfrozen=1e-3", "train.early_stopping_patience=0", "train.max_logit_scale=20"]
    straight = train_clap(load_config(None, base + ["train.epochs=2"]), tmp_path / "straight")
    assert straight["epochs_run"] == 2 and straight["inputs"]["mean"] == MEAN and straight["inputs"]["size"] == 32
    assert len(caches) == 2 and caches[0].x_m is not None and caches[0].x_t is not None  # train and val, both towers
    with open(tmp_path / "straight" / "metrics.csv") as fh:
        assert all(math.isfinite(float(r["train_loss"])) for r in csv.DictReader(fh))

    train_clap(load_config(None, base + ["train.epochs=1"]), tmp_path / "run")
    start, frozen = _tensors(tiny_oc), _tensors(tmp_path / "run" / "last")
    moved = {n for n in start if not torch.equal(start[n], frozen[n])}
    assert moved == PROJECTIONS | {"logit_scale"}  # the frozen phase: projections and temperature only
    # capped from ln 1000 (uncapped, the epoch's 7 AdamW steps of about lr 1e-2 would leave it near ln 1000)
    assert math.log(20) - 0.3 < frozen["logit_scale"].item() <= math.log(20) + 1e-6
    train_clap(load_config(None, base + ["train.epochs=2"]), tmp_path / "run", resume=True)
    last = _tensors(tmp_path / "run" / "last")
    assert all(torch.equal(last[n], v) for n, v in _tensors(tmp_path / "straight" / "last").items())  # exact resume
    assert any(not torch.equal(last[n], frozen[n]) for n in last if n.startswith("visual.transformer."))
    assert any(not torch.equal(last[n], frozen[n]) for n in last if n.startswith("transformer."))
    assert last["logit_scale"].item() <= math.log(20) + 1e-6

    ckpt = tmp_path / "run" / "checkpoint"
    assert detect(ckpt) == "open_clip"
    run = CliRunner().invoke(app, ["embed", "--model", str(ckpt), "--image", f"folder:{tiny_images / 'unseen'}",
                                   "--out", str(tmp_path / "e.npz")])
    assert run.exit_code == 0, run.output
    ours = np.load(tmp_path / "e.npz")
    own, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{ckpt}")
    with torch.no_grad():
        theirs = own.eval().encode_image(torch.stack([preprocess(open_image(p)) for p in ours["ids"]]), normalize=True)
    np.testing.assert_allclose(ours["embeddings"], theirs.numpy(), atol=1e-6)
