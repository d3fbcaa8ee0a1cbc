"""Public dual encoders (transformers' ClapModel, CLIPModel, SiglipModel) behind clapkit's
interface: their own preprocessing, their own logits, and every command on them."""

import json

import numpy as np
import pytest
import torch
from conftest import write_tiny_public_model
from PIL import Image

from clapkit.errors import ConfigError
from clapkit.models.public.hf import HFDualEncoder
from clapkit.models.public.loader import load_model


@pytest.fixture(scope="module", params=["clip", "siglip", "clap"])
def hf_model(request, tmp_path_factory):
    """A tiny random model of one family, saved with its tokenizer and processor."""
    folder = tmp_path_factory.mktemp(f"tiny-{request.param}")
    write_tiny_public_model(request.param, folder)
    return request.param, folder


def _labelled(family, tiny_images, tiny_synthetic):
    from clapkit.data.media import load_labelled_media

    if family == "clap":
        return load_labelled_media(f"folder:{tiny_synthetic / 'unseen'}", "audio")
    return load_labelled_media(f"folder:{tiny_images / 'unseen'}", "image")


def test_logits_and_embeddings_equal_the_models_own(hf_model, tiny_images, tiny_synthetic):
    """clapkit's zero-shot logits equal transformers' model(**processor(...)) logits, and
    its E equal the normalised get_*_features, to 1e-5."""
    from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoModel, AutoTokenizer

    from clapkit.data.audio import load_audio
    from clapkit.data.image.io import open_image
    from clapkit.evaluation.zeroshot import class_text_embeddings, default_templates
    from clapkit.inference.embed import embed_media

    family, folder = hf_model
    model = load_model(folder)
    assert isinstance(model, HFDualEncoder) and model.medium == ("audio" if family == "clap" else "image")
    data = _labelled(family, tiny_images, tiny_synthetic)
    templates = default_templates(model.medium)
    e_m = torch.from_numpy(embed_media(model, data.clips, batch_size=5))
    e_t = torch.from_numpy(class_text_embeddings(model, data.label_texts(), templates))
    ours = model.logits(e_m, e_t).detach()

    own = AutoModel.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    texts = [templates[0].format(label=t) for t in data.label_texts()]
    tokens = tok(texts, padding="max_length" if family == "siglip" else True, truncation=True, return_tensors="pt")
    tokens = {k: tokens[k] for k in ("input_ids", "attention_mask")}  # the tiny models borrow BERT's tokenizer
    with torch.no_grad():
        if family == "clap":
            fe = AutoFeatureExtractor.from_pretrained(folder)
            inputs = fe([load_audio(c.media, 16000) for c in data.clips], sampling_rate=16000, return_tensors="pt")
            out = own(**tokens, **inputs)
            theirs, features = out.logits_per_audio, own.get_audio_features(**inputs).pooler_output
        else:
            proc = AutoImageProcessor.from_pretrained(folder)
            inputs = proc(images=[open_image(c.media) for c in data.clips], return_tensors="pt")
            out = own(**tokens, **inputs)
            theirs, features = out.logits_per_image, own.get_image_features(**inputs).pooler_output
        text_features = own.get_text_features(**tokens).pooler_output
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(e_m, torch.nn.functional.normalize(features, dim=-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(e_t, torch.nn.functional.normalize(text_features, dim=-1), atol=1e-5, rtol=1e-5)


def test_backbone_features_are_the_towers_own_hidden_states(hf_model, tiny_images, tiny_synthetic, tmp_path):
    """``--backbone`` (x) is the media tower's pooled output as transformers computes it from
    the model's own processor: CLIP's post-layernormed class token of the last hidden state,
    SigLIP's attention-pooling head over it, CLAP's audio encoder's average over every
    time-frequency position - recomputed here from ``last_hidden_state``, not from
    ``pooler_output``; and ``embed --backbone`` writes those rows in the data's order."""
    from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoModel
    from typer.testing import CliRunner

    from clapkit.cli import app
    from clapkit.data.audio.io import load_audio
    from clapkit.data.image.io import open_image
    from clapkit.inference.embed import media_features

    family, folder = hf_model
    data = _labelled(family, tiny_images, tiny_synthetic)
    x = torch.from_numpy(media_features(load_model(folder), data.clips, ("x",), batch_size=5)["x"])
    own = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        if family == "clap":
            fe = AutoFeatureExtractor.from_pretrained(folder)
            inputs = fe([load_audio(c.media, 16000) for c in data.clips], sampling_rate=16000, return_tensors="pt")
            out = own.audio_model(**inputs, output_hidden_states=True)
            hidden = out.last_hidden_state  # (batch, channels, frequency, time) after the encoder's last norm
            expected = hidden.flatten(2).mean(-1)  # its AdaptiveAvgPool1d(1) over every position
        else:
            proc = AutoImageProcessor.from_pretrained(folder)
            inputs = proc(images=[open_image(c.media) for c in data.clips], return_tensors="pt")
            hidden = own.vision_model(pixel_values=inputs["pixel_values"]).last_hidden_state
            if family == "clip":
                expected = own.vision_model.post_layernorm(hidden[:, 0])
            else:
                expected = own.vision_model.head(hidden)
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=1e-5)
    assert x.abs().max() > 1e-3
    npz = tmp_path / "x.npz"
    run = CliRunner().invoke(app, ["embed", "--model", str(folder), f"--{'audio' if family == 'clap' else 'image'}",
                                   data_spec(family, tiny_images, tiny_synthetic), "--backbone", "--out", str(npz)])
    assert run.exit_code == 0, run.output
    np.testing.assert_allclose(np.load(npz)["embeddings"], x.numpy(), atol=1e-5)


def data_spec(family, tiny_images, tiny_synthetic) -> str:
    return f"folder:{(tiny_synthetic if family == 'clap' else tiny_images) / 'unseen'}"


def test_commands_take_a_public_model(hf_model, tiny_images, tiny_synthetic, tmp_path):
    from typer.testing import CliRunner

    from clapkit.cli import app

    family, folder = hf_model
    medium = "audio" if family == "clap" else "image"
    root = tiny_synthetic if medium == "audio" else tiny_images
    run = CliRunner().invoke(app, ["eval", "zeroshot", "--model", str(folder), "--data", f"folder:{root / 'unseen'}",
                                   "--out", str(tmp_path / "zs.json")])
    assert run.exit_code == 0, run.output
    zs = json.loads((tmp_path / "zs.json").read_text())
    assert zs["clips"] == 16 and zs["classes"] == 8
    run = CliRunner().invoke(app, ["eval", "zeroshot", "--model", str(folder), "--data", f"folder:{root / 'unseen'}",
                                   "--out", str(tmp_path / "zs2.json"), "--workers", "2", "--batch-size", "5"])
    assert run.exit_code == 0, run.output  # the model's own preprocessing in 2 worker processes: the same result
    zs2 = json.loads((tmp_path / "zs2.json").read_text())
    assert zs2["confusion"] == zs["confusion"] and zs2["per_class"] == zs["per_class"]
    run = CliRunner().invoke(app, ["eval", "retrieval", "--model", str(folder), "--data", f"csv:{root / 'test.csv'}",
                                   "--out", str(tmp_path / "r.json")])
    assert run.exit_code == 0, run.output
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["captions"] == 48 and r[f"text_to_{medium}"]["queries"] == 48
    run = CliRunner().invoke(app, ["audit", "embeddings", "--model", str(folder), "--data", f"folder:{root / 'unseen'}",
                                   "--out", str(tmp_path / "audit"), "--k-max", "3"])
    assert run.exit_code == 0, run.output
    assert json.loads((tmp_path / "audit" / "report.json").read_text())["classes"] == 8
    run = CliRunner().invoke(app, ["embed", "--model", str(folder), f"--{medium}", f"folder:{root / 'unseen'}",
                                   "--backbone", "--out", str(tmp_path / "x.npz")])
    assert run.exit_code == 0, run.output
    x = np.load(tmp_path / "x.npz")["embeddings"]
    width = {"clip": 16, "siglip": 16, "clap": 32}[family]
    assert x.shape == (16, width)  # the towers' pooled outputs, before any projection


@pytest.mark.parametrize("hf_model", ["clap"], indirect=True)  # image teachers: tested with clapkit's own CLIP
def test_a_public_clap_is_a_curation_teacher(hf_model, tiny_synthetic, tmp_path):
    from clapkit.curation import curate

    family, folder = hf_model
    s = curate(folder, tiny_synthetic / "unseen", f"csv:{tiny_synthetic / 'train.csv'}", tmp_path / "du.csv", sigma=-1.0)
    assert (s["audio_pool"], s["pairs"]) == (16, 16) and s["cache"]["audio_computed"] == 16
    again = curate(folder, tiny_synthetic / "unseen", f"csv:{tiny_synthetic / 'train.csv'}", tmp_path / "du2.csv", sigma=-1.0)
    assert again["cache"]["audio_reused"] == 16 and (tmp_path / "du.csv").read_text() == (tmp_path / "du2.csv").read_text()


def test_unsupported_folders_are_named(tmp_path, tiny_bert):
    with pytest.raises(ConfigError, match=r"a Hugging Face 'bert' model; clapkit loads the dual encoders clap, clip, siglip"):
        load_model(tiny_bert)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"empty: not a model clapkit reads \(no config.json, cse_model.json or open_clip_config.json\)"):
        load_model(tmp_path / "empty")
    from transformers import CLIPConfig, CLIPModel

    CLIPModel(CLIPConfig(text_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32),
                         vision_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                            intermediate_size=32, image_size=32, patch_size=8))).save_pretrained(tmp_path / "bare")
    with pytest.raises(ConfigError, match=r"bare: the folder lacks its tokenizer or image processor"):
        load_model(tmp_path / "bare")


@pytest.mark.parametrize("hf_model", ["clip", "siglip"], indirect=True)  # audio: the same code as clapkit's own CLAP's
def test_audit_model_splits_accuracy_by_classes_the_captions_name(hf_model, tmp_path):
    """A constructed caption file names 'dog' (twice) by the paper's rule, and
    'air_conditioner' only by the compound rule ("airplane" = air + plane). The headline
    split is the paper's: 1 named class with its 3 images, 3 never-named with their 7;
    the four-rule split is beside it, and each named class's words and rules are named.
    Each group's accuracy is the item-weighted mean of its per-class accuracies."""
    from typer.testing import CliRunner

    from clapkit.cli import app

    family, folder = hf_model
    rng = np.random.default_rng(0)
    for cls, n in (("air_conditioner", 2), ("dog", 3), ("piano", 2), ("tractor", 3)):
        (tmp_path / "eval" / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "eval" / cls / f"{i}.png")
    caps = tmp_path / "captions.csv"
    caps.write_text("image,caption\na.jpg,a dog runs on the beach\nb.jpg,two dogs play\nc.jpg,a red car in the rain\n"
                    "d.jpg,an airplane flies over\n")
    run = CliRunner().invoke(app, ["audit", "model", "--model", str(folder), "--data", f"folder:{tmp_path / 'eval'}",
                                   "--captions", str(caps), "--out", str(tmp_path / "audit"), "--k-max", "2"])
    assert run.exit_code == 0, run.output
    r = json.loads((tmp_path / "audit" / "report.json").read_text())
    lk, per = r["leakage"], r["zeroshot"]["per_class"]
    assert lk["rule"] == "paper (stem, lemma)"
    assert lk["named"]["names"] == ["dog"] and (lk["named"]["classes"], lk["named"]["items"]) == (1, 3)
    assert (lk["not_named"]["classes"], lk["not_named"]["items"], lk["not_named"]["names"]) == (
        3, 7, ["air_conditioner", "piano", "tractor"])
    assert lk["named"]["accuracy"] == pytest.approx(per["dog"]["accuracy"])
    assert lk["not_named"]["accuracy"] == pytest.approx(
        (2 * per["air_conditioner"]["accuracy"] + 2 * per["piano"]["accuracy"] + 3 * per["tractor"]["accuracy"]) / 7)
    ext = lk["extended"]
    assert ext["named"]["names"] == ["air_conditioner", "dog"] and ext["not_named"]["names"] == ["piano", "tractor"]
    assert ext["not_named"]["accuracy"] == pytest.approx((2 * per["piano"]["accuracy"] + 3 * per["tractor"]["accuracy"]) / 5)
    assert lk["captions_naming_a_class"] == {"air_conditioner": 1, "dog": 2}
    assert lk["why"] == {"air_conditioner": {"airplane": "compound"}, "dog": {"dog": "stem", "dogs": "stem"}}
    md = (tmp_path / "audit" / "report.md").read_text()
    assert "| named in the captions | paper (stem, lemma) | 1 | 3 |" in md and "| never named | all four rules | 2 | 5 |" in md
    assert "| air_conditioner | airplane (compound) |" in md
    assert (tmp_path / "audit" / "confusion.png").is_file() and (tmp_path / "audit" / "embeddings" / "tsne_E_a.png").is_file()


def test_the_text_tower_of_a_public_model_is_a_sentence_encoder(hf_model, tmp_path):
    """eval sts on a public model's text tower: the Spearman of cosine similarities of
    its own text_model pooled outputs (x_t) and of get_text_features (--projected, E_t);
    eval transfer runs its linear probe on the same x_t."""
    from scipy.stats import spearmanr
    from transformers import AutoModel, AutoTokenizer
    from typer.testing import CliRunner

    from clapkit.cli import app

    family, folder = hf_model
    words = ["a dog barks", "rain falls on a roof", "an engine idles", "birds sing at dawn", "a door creaks",
             "waves hit the shore", "a baby cries", "wind in the trees", "a bell rings twice", "people talk in a cafe"]
    pairs = [(words[i], words[(i * 3 + 1) % 10], (i * 7) % 6) for i in range(10)]
    sts = tmp_path / "stsb"
    sts.mkdir()
    (sts / "sts-test.csv").write_text("".join(f"main-captions\tMSRvid\t2012test\t{i:04d}\t{g:.1f}\t{a}\t{b}\n"
                                              for i, (a, b, g) in enumerate(pairs)))
    own = AutoModel.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)

    def expected(projected: bool) -> float:
        sims = []
        for a, b, _ in pairs:
            t = tok([a, b], padding="max_length" if family == "siglip" else True, truncation=True, return_tensors="pt")
            t = {k: t[k] for k in ("input_ids", "attention_mask")}
            with torch.no_grad():
                x = own.get_text_features(**t).pooler_output if projected else own.text_model(**t).pooler_output
            x = torch.nn.functional.normalize(x, dim=-1)
            sims.append(float(x[0] @ x[1]))
        return spearmanr(sims, [g for *_, g in pairs]).correlation * 100

    for projected in (False, True):
        out = tmp_path / f"sts-{projected}.json"
        run = CliRunner().invoke(app, ["eval", "sts", "--model", str(folder), "--data", f"stsb:{sts}", "--out", str(out)]
                                 + (["--projected"] if projected else []))
        assert run.exit_code == 0, run.output
        r = json.loads(out.read_text())
        assert r["pooling"] == f"{family} text model's pooled output"
        assert r["tasks"]["STSB-test"]["spearman"] == pytest.approx(expected(projected), abs=1e-3)
    run = CliRunner().invoke(app, ["eval", "sts", "--model", str(folder), "--data", f"stsb:{sts}", "--pooling", "mean"])
    assert run.exit_code != 0 and "leave --pooling auto" in str(run.exception)
    csv = tmp_path / "task.csv"
    csv.write_text("text,label\n" + "".join(f"{w} {k},{'a' if k % 2 else 'b'}\n" for w in words for k in range(2)))
    run = CliRunner().invoke(app, ["eval", "transfer", "--model", str(folder), "--data", str(csv), "--folds", "2",
                                   "--out", str(tmp_path / "t.json")])
    assert run.exit_code == 0, run.output
    t = json.loads((tmp_path / "t.json").read_text())["tasks"]["task"]
    assert (t["n"], t["classes"]) == (20, 2)


def _tensors(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_fine_tuning_a_public_model_saves_it_back_in_transformers_format(hf_model, tiny_synthetic, tiny_images, tmp_path):
    """train clap / train clip from a public CLAP or CLIP (model.init_from): the run
    follows the model's own preprocessing, freezes its towers in the frozen phase,
    resumes exactly, and writes checkpoints that transformers' from_pretrained reloads
    to the embeddings clapkit computes from them."""
    from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoModel
    from typer.testing import CliRunner

    from clapkit.cli import app
    from clapkit.config import load_config
    from clapkit.data.audio import load_audio
    from clapkit.data.image.io import open_image
    from clapkit.training.clap import train_clap

    family, folder = hf_model
    medium = "audio" if family == "clap" else "image"
    root = tiny_synthetic if medium == "audio" else tiny_images
    base = [f"model.init_from={folder}", f"model.modality={medium}", f"data.train=[csv:{root / 'train.csv'}]",
            "train.batch_size=16", "runtime.progress=false", "train.frozen_epochs=1", "train.lr_frozen=1e-2",
            "train.lr_unfrozen=1e-3", "train.early_stopping_patience=0"]
    if family == "siglip":  # fine-tuned like CLIP, with its own objective
        base.append("train.loss=siglip")
    wrong = "image" if medium == "audio" else "audio"
    with pytest.raises(ConfigError, match=rf"a{'n' if medium == 'audio' else ''} {medium} model .*this config trains {wrong}"):
        other = tiny_images if medium == "audio" else tiny_synthetic
        train_clap(load_config(None, base + [f"model.modality={wrong}", f"data.train=[csv:{other / 'train.csv'}]",
                                             "train.epochs=1"]), tmp_path / "wrong")

    straight = train_clap(load_config(None, base + ["train.epochs=2"]), tmp_path / "straight")
    assert straight["epochs_run"] == 2
    train_clap(load_config(None, base + ["train.epochs=1"]), tmp_path / "run")
    start, frozen = _tensors(folder), _tensors(tmp_path / "run" / "last")
    tower = "audio_model" if medium == "audio" else "vision_model"
    for name, value in frozen.items():  # the frozen phase trains the projections and the temperature only
        moved = not torch.equal(value, start[name])
        if name.startswith((f"{tower}.", "text_model.")):
            assert not moved, name
    if family == "siglip":  # no projections: the frozen phase trains the scale and SigLIP's own bias
        assert not torch.equal(frozen["logit_bias"], start["logit_bias"])
    else:
        assert any(not torch.equal(frozen[n], start[n]) for n in frozen if "projection" in n)
    train_clap(load_config(None, base + ["train.epochs=2"]), tmp_path / "run", resume=True)
    last = _tensors(tmp_path / "run" / "last")
    assert all(torch.equal(last[n], v) for n, v in _tensors(tmp_path / "straight" / "last").items())  # exact resume
    assert any(not torch.equal(last[n], start[n]) for n in last if n.startswith(f"{tower}."))
    assert any(not torch.equal(last[n], start[n]) for n in last if n.startswith("text_model."))
    given = __import__("yaml").safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert given["audio"] == load_config(None)["audio"]  # the run's config as given: nothing written into it
    saved = {medium: json.loads((tmp_path / "run" / "summary.json").read_text())["inputs"]}  # what it resolved
    if medium == "audio":
        assert (saved["audio"]["sample_rate"], saved["audio"]["segment_seconds"], saved["audio"]["normalize"]) == (16000, 1.0, False)
    else:
        mean = [0.5] * 3 if family == "siglip" else [0.48145466, 0.4578275, 0.40821073]  # each processor's own
        assert saved["image"]["size"] == 32 and saved["image"]["mean"] == pytest.approx(mean)

    ckpt = tmp_path / "run" / "checkpoint"
    run = CliRunner().invoke(app, ["embed", "--model", str(ckpt), f"--{medium}", f"folder:{root / 'unseen'}",
                                   "--out", str(tmp_path / "e.npz")])
    assert run.exit_code == 0, run.output
    ours = np.load(tmp_path / "e.npz")
    own = AutoModel.from_pretrained(ckpt).eval()
    assert type(own).__name__ == {"clap": "ClapModel", "clip": "CLIPModel", "siglip": "SiglipModel"}[family]
    with torch.no_grad():
        if medium == "audio":
            fe = AutoFeatureExtractor.from_pretrained(ckpt)
            inputs = fe([load_audio(p, 16000) for p in ours["ids"]], sampling_rate=16000, return_tensors="pt")
            features = own.get_audio_features(**inputs).pooler_output
        else:
            proc = AutoImageProcessor.from_pretrained(ckpt)
            features = own.get_image_features(**proc(images=[open_image(p) for p in ours["ids"]], return_tensors="pt")).pooler_output
    np.testing.assert_allclose(ours["embeddings"], torch.nn.functional.normalize(features, dim=-1).numpy(), atol=1e-5)


def _write_clips(folder, seconds, sr=16000, seed=0):
    """WAV files of the given lengths (noise bursts), and items for embed_media."""
    import soundfile as sf

    from clapkit.data.records import Pair

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i, s in enumerate(seconds):
        wave = (0.3 * rng.standard_normal(int(s * sr)) * np.hanning(int(s * sr))).astype(np.float32)
        sf.write(folder / f"c{i:02d}.wav", wave, sr, subtype="FLOAT")
        items.append(Pair(folder / f"c{i:02d}.wav", "x", f"c{i}", f"clips line {i + 2}"))
    return items


@pytest.fixture(scope="module")
def fused_clap(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-fused-clap")
    write_tiny_public_model("clap", folder, dropout=False, fusion=True)
    return folder


def test_a_fused_clap_embeds_a_clip_alike_at_any_batch_size_and_position(fused_clap, tmp_path):
    """transformers' fusion extractor marks one random clip is_longer when no clip of a
    batch is longer than the window, which sent one clip per batch (every clip at batch
    size 1) through the fusion branch. At evaluation only clips longer than the window
    are fused, as LAION-CLAP's model in eval mode does."""
    from transformers import ClapFeatureExtractor, ClapModel

    from clapkit.data.audio import load_audio
    from clapkit.inference.embed import embed_media

    lengths = [0.3 + 0.02 * i for i in range(30)] + [1.7, 2.5]  # 30 clips inside the 1 s window, 2 longer
    items = _write_clips(tmp_path / "clips", lengths)
    model = load_model(fused_clap)
    runs = {bs: embed_media(model, items, batch_size=bs) for bs in (1, 7, 32)}
    np.testing.assert_allclose(runs[1], runs[7], atol=1e-6)  # to rounding
    np.testing.assert_allclose(runs[1], runs[32], atol=1e-6)
    shuffled = embed_media(model, items[::-1], batch_size=5)[::-1]  # another order and batching
    np.testing.assert_allclose(runs[1], shuffled, atol=1e-6)
    # transformers' own model on the clips inside the window with is_longer all false
    fe, own = ClapFeatureExtractor.from_pretrained(fused_clap), ClapModel.from_pretrained(fused_clap).eval()
    waves = [load_audio(it.media, 16000) for it in items[:30]]
    inputs = fe(waves, sampling_rate=16000, return_tensors="pt")
    assert inputs["is_longer"].sum() == 1  # the extractor's random mark clapkit must not follow
    with torch.no_grad():
        want = own.get_audio_features(input_features=inputs["input_features"],
                                      is_longer=torch.zeros_like(inputs["is_longer"])).pooler_output
    np.testing.assert_allclose(runs[32][:30], torch.nn.functional.normalize(want, dim=-1).numpy(), atol=1e-5)
    # the long clips are fused
    long_inputs = model.preprocess([load_audio(it.media, 16000) for it in items[30:]], [str(it.media) for it in items[30:]])
    assert long_inputs["is_longer"].squeeze(1).tolist() == [True, True]


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory):
    return write_tiny_public_model("clap", tmp_path_factory.mktemp("tiny-clap"))


def test_a_long_clips_random_crop_depends_on_the_clip_not_the_batch(tiny_clap, tmp_path):
    """rand_trunc crops a clip longer than the window at random: the crop is seeded by
    the clip's file, so eval/embed give one embedding per clip for any batch size or order."""
    from clapkit.inference.embed import embed_media

    folder = tiny_clap
    items = _write_clips(tmp_path / "long", [1.5 + 0.25 * i for i in range(9)])
    model = load_model(folder)
    ref = embed_media(model, items, batch_size=1)
    np.testing.assert_allclose(ref, embed_media(model, items, batch_size=9), atol=1e-6)  # to rounding
    np.testing.assert_allclose(ref, embed_media(model, items[::-1], batch_size=4)[::-1], atol=1e-6)
    np.testing.assert_allclose(ref[3:], embed_media(model, items[3:], batch_size=2), atol=1e-6)


def test_fine_tuning_pads_a_short_clip_as_the_extractor_does(tiny_clap, tmp_path):
    """The training pipeline hands the extractor a window-length clip; for a clip shorter
    than the window it must be the extractor's own repeat-padding of the raw wave, so
    training sees what evaluation sees."""
    from transformers import ClapFeatureExtractor

    from clapkit.config import load_config
    from clapkit.data.audio import load_audio
    from clapkit.data.media import media_dataset

    folder = tiny_clap
    items = _write_clips(tmp_path / "short", [0.4, 0.35])
    cfg = load_config(None, [f"model.init_from={folder}"])
    model = HFDualEncoder(folder).for_training(cfg)
    assert cfg["audio"]["pad"] == "zero"  # the run's config is left as given
    cfg = model.cfg  # the model's own resolved copy: its extractor's padding
    assert cfg["audio"]["pad"] == "repeatpad"
    ds = media_dataset(cfg, items, train=True, seed=0)
    fe = ClapFeatureExtractor.from_pretrained(folder)
    for i, item in enumerate(items):
        built = ds[i][0].numpy()
        raw = load_audio(item.media, 16000)
        assert built.shape == (16000,)
        want = fe([raw], sampling_rate=16000, return_tensors="np")["input_features"]
        got = fe([built], sampling_rate=16000, return_tensors="np")["input_features"]
        np.testing.assert_array_equal(got, want)
    model.eval()
    assert model.media_backbone(torch.stack([ds[0][0], ds[1][0]])).shape[0] == 2


def test_fine_tuning_a_fused_clap_gives_fusion_whole_clips_and_resumes_exactly(fused_clap, tmp_path):
    """A fused CLAP's training items are the extractor's features of the whole clip
    (fusion input for clips longer than the window: 4 channels, is_longer), seeded by
    (seed, epoch, clip); a run resumes to the weights of the run never stopped."""
    from transformers import ClapFeatureExtractor

    from clapkit.config import load_config
    from clapkit.data.audio import load_audio
    from clapkit.training.clap import ClapTrainer, train_clap

    items = _write_clips(tmp_path / "clips", [2.0, 2.5, 0.5, 1.8, 3.0, 0.7, 2.2, 1.5])
    manifest = tmp_path / "train.csv"
    manifest.write_text("audio,caption\n" + "".join(f"{it.media},sound number {i}\n" for i, it in enumerate(items)))
    base = [f"model.init_from={fused_clap}", f"data.train=[csv:{manifest}]", "data.val_fraction=0", "train.batch_size=4",
            "runtime.progress=false", "train.frozen_epochs=0", "train.lr_unfrozen=1e-3", "train.early_stopping_patience=0"]
    trainer = ClapTrainer(load_config(None, base + ["train.epochs=1"]), tmp_path / "probe")
    ds = trainer.train_ds
    fe = ClapFeatureExtractor.from_pretrained(fused_clap)
    first = ds[(0, 0)][0]
    assert first["input_features"].shape[1] == 4 and first["is_longer"].item()
    assert not ds[(0, 2)][0]["is_longer"].item()  # 0.5 s: inside the 1 s window
    seed = int(np.random.default_rng((0, 0, 0)).integers(2**31 - 1))
    np.random.seed(seed)
    own = fe([load_audio(items[0].media, 16000)], sampling_rate=16000, return_tensors="pt")["input_features"]
    assert torch.equal(first["input_features"], own)  # the extractor's fusion of the raw whole clip
    assert not torch.equal(ds[(1, 0)][0]["input_features"], first["input_features"])  # another epoch, other chunks
    train_clap(load_config(None, base + ["train.epochs=2"]), tmp_path / "straight")
    train_clap(load_config(None, base + ["train.epochs=1"]), tmp_path / "resumed")
    train_clap(load_config(None, base + ["train.epochs=2"]), tmp_path / "resumed", resume=True)
    a, b = _tensors(tmp_path / "straight" / "last"), _tensors(tmp_path / "resumed" / "last")
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], v) for n, v in _tensors(fused_clap).items() if "fusion" in n)  # fusion trained
