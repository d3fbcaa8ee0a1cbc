"""The Python interface (clapkit.load): the README's examples run verbatim; its calls give
what the command line gives on the same inputs; every kind loads; Perception Encoder audio
equals its owner's embedding calls; bad inputs are errors that say what to give."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, write_tiny_public_model

import clapkit
from clapkit.errors import ClapkitError, ConfigError


def readme_python_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("\n## Python\n"):]
    section = section[:section.index("\n## ", 5)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_python_examples_run_verbatim(tmp_path, tiny_checkpoint, tiny_synthetic, tiny_image_checkpoint, tiny_images):
    """The README's two examples, as written, in a folder laid out as `make demo` and
    `clapkit demo --modality image` leave it (their checkpoints: tiny ones trained here)."""
    for name, ckpt, data in (("demo-out", tiny_checkpoint, tiny_synthetic), ("demo-image", tiny_image_checkpoint, tiny_images)):
        (tmp_path / name).mkdir()
        os.symlink(ckpt, tmp_path / name / "checkpoint")
        os.symlink(data, tmp_path / name / "data")
    blocks = readme_python_blocks()
    assert len(blocks) == 2 and "encode_audio" in blocks[0] and "encode_image" in blocks[1]
    assert all(len(b.strip().splitlines()) <= 12 for b in blocks)  # short enough to read at a glance
    printed = []
    for code in blocks:
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        printed.append(proc.stdout)
    import json

    clips, names = len(list((tiny_synthetic / "unseen").glob("*/*.wav"))), json.loads((tiny_synthetic / "classes.json").read_text())["unseen"]
    pictures, folders = len(list((tiny_images / "unseen").glob("*/*.png"))), len(list((tiny_images / "unseen").iterdir()))
    assert printed[0].startswith(f"({clips}, {len(names)}) [")  # clips x classes, then the first labels
    assert printed[1].startswith(f"({pictures}, ") and f"({pictures}, {folders})" in printed[1]


def test_encode_audio_equals_clapkit_embed_and_arrays_equal_files(tmp_path, tiny_checkpoint, tiny_synthetic):
    from clapkit.data.audio.io import load_audio

    model = clapkit.load(tiny_checkpoint, device="cpu")
    assert (model.kind, model.medium, model.sample_rate) == ("clapkit", "audio", 8000)
    clips = sorted((tiny_synthetic / "unseen").glob("*/*.wav"))
    ours = model.encode_audio(clips)
    subprocess.run([sys.executable, "-m", "clapkit.cli", "embed", "--model", str(tiny_checkpoint), "--audio",
                    f"folder:{tiny_synthetic / 'unseen'}", "--out", str(tmp_path / "e.npz")], check=True, capture_output=True)
    cli = np.load(tmp_path / "e.npz")
    subprocess.run([sys.executable, "-m", "clapkit.cli", "eval", "zeroshot", "--model", str(tiny_checkpoint), "--data",
                    f"folder:{tiny_synthetic / 'unseen'}", "--out", str(tmp_path / "z.json")], check=True, capture_output=True)
    import json

    assert json.loads((tmp_path / "z.json").read_text())["model_provenance"] == model.provenance  # every result names its model
    order = [list(map(str, clips)).index(i) for i in cli["ids"]]
    np.testing.assert_array_equal(ours[order], cli["embeddings"])  # one pipeline: bit-equal
    waves = [load_audio(c, 8000) for c in clips]
    np.testing.assert_array_equal(model.encode_audio(waves, sample_rate=8000), ours)
    # the same clips at 16 kHz are resampled to the model's 8 kHz first (soxr, as a 16 kHz file would be)
    import soxr

    up = [soxr.resample(w, 8000, 16000) for w in waves]
    close = model.encode_audio(up, sample_rate=16000)
    assert np.abs(close - ours).max() < 0.05 and not np.array_equal(close, ours)
    from clapkit.data.records import LabelledClip
    from clapkit.inference.embed import embed_media

    x = model.encode_audio(clips[:2], features="x")
    np.testing.assert_array_equal(x, embed_media(model.net, [LabelledClip(c, 0, None, "") for c in clips[:2]], projected=False))
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_encode_text_similarity_and_zeroshot_are_the_evaluations(tiny_checkpoint, tiny_synthetic):
    from clapkit.data.media import load_labelled_media
    from clapkit.evaluation.zeroshot import zeroshot_scores
    from clapkit.inference.embed import embed_text

    model = clapkit.load(tiny_checkpoint, device="cpu")
    texts = ["a dog barks", "rain on a roof", "a siren"]
    np.testing.assert_array_equal(model.encode_text(texts), embed_text(model.net, texts))
    assert model.encode_text(texts, features="x").shape == (3, 32)
    data = load_labelled_media(f"folder:{tiny_synthetic / 'unseen'}", "audio")
    result = model.zeroshot([c.media for c in data.clips], data.class_names)
    want = zeroshot_scores(model.net, data)  # what `eval zeroshot` scores, default prompts
    np.testing.assert_allclose(result.scores, want, atol=1e-6)
    assert result.labels == [data.class_names[i] for i in want.argmax(1)]
    np.testing.assert_allclose(result.probs.sum(1), 1.0, atol=1e-5)
    scale = float(model.net.scale())
    z = scale * result.scores
    np.testing.assert_allclose(result.probs, np.exp(z) / np.exp(z).sum(1, keepdims=True), rtol=1e-4)
    assert result.prompts[0] == [f"This is a sound of {data.class_names[0].replace('_', ' ')}."]
    sim = model.similarity(model.encode_audio([c.media for c in data.clips[:2]]), model.encode_text(texts))
    a, t = model.encode_audio([c.media for c in data.clips[:2]]), model.encode_text(texts)
    np.testing.assert_allclose(sim, a @ t.T, atol=1e-6)
    ens = model.zeroshot([c.media for c in data.clips], data.class_names, prompts=["a sound of {label}", "{label}"])
    assert ens.prompts[0] == [f"a sound of {data.class_names[0].replace('_', ' ')}", data.class_names[0].replace("_", " ")]


def test_images_from_paths_and_pillow_are_one_embedding(tiny_image_checkpoint, tiny_images):
    from PIL import Image

    model = clapkit.load(tiny_image_checkpoint, device="cpu")
    assert model.medium == "image" and model.sample_rate is None
    paths = sorted((tiny_images / "unseen").glob("*/*.png"))[:3]
    np.testing.assert_array_equal(model.encode_image(paths), model.encode_image([Image.open(p) for p in paths]))
    rgba = Image.open(paths[0]).convert("RGBA")  # converted as a decoded file is
    assert model.encode_image([rgba]).shape == (1, model.encode_image(paths[:1]).shape[1])


def test_every_kind_loads_and_an_unknown_folder_is_one_error(tmp_path, tiny_checkpoint):
    kinds = {}
    for family in ("clap", "clip", "siglip", "pe_audio"):
        model = clapkit.load(write_tiny_public_model(family, tmp_path / family), device="cpu")
        kinds[model.kind] = model.medium
        media = ([np.zeros(16000, np.float32) + 0.01] if model.medium == "audio" else [_picture()])
        e = model.encode_audio(media, sample_rate=16000) if model.medium == "audio" else model.encode_image(media)
        assert e.shape[0] == 1 and np.isclose(np.linalg.norm(e), 1.0, atol=1e-5)
        assert model.encode_text(["a dog"]).shape[1] == e.shape[1]
    assert kinds == {"hf-clap": "audio", "hf-clip": "image", "hf-siglip": "image", "pe-audio": "audio"}
    text = clapkit.load("minilm", device="cpu")
    assert (text.kind, text.medium) == ("sentence-transformers", None)
    assert text.encode_text(["a dog", "a cat"]).shape == (2, 384)
    with pytest.raises(ConfigError, match="a text encoder; use encode_text"):
        text.encode_audio(["x.wav"])
    (tmp_path / "junk").mkdir()
    with pytest.raises(ConfigError) as err:
        clapkit.load(tmp_path / "junk")
    assert "not a model clapkit reads" in str(err.value) and "LAION-CLAP checkpoint" in str(err.value)
    (tmp_path / "tower.pth").write_bytes(b"")
    with pytest.raises(ConfigError, match="an audio tower's weights"):
        clapkit.load(tmp_path / "tower.pth")


def _picture():
    from PIL import Image

    return Image.fromarray((np.arange(48 * 48 * 3) % 251).astype(np.uint8).reshape(48, 48, 3))


def test_pe_audio_equals_its_owners_embedding_calls(tmp_path):
    """E is the owner's get_audio_embeds / get_text_audio_embeds, L2-normalised, on a padded
    batch of clips of several lengths (its feature extractor and padding mask), exactly."""
    from transformers import AutoModel, AutoProcessor

    folder = write_tiny_public_model("pe_audio", tmp_path / "pe")
    model = clapkit.load(folder, device="cpu")
    own, proc = AutoModel.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)
    rng = np.random.default_rng(0)
    waves = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (48000, 110400, 30000)]
    texts = ["a dog barks", "rain falls on the roof"]
    with torch.no_grad():
        a = proc.feature_extractor(waves, sampling_rate=48000, return_tensors="pt")
        audio = own.get_audio_embeds(a["input_values"], padding_mask=a["padding_mask"])
        own.text_model.config.output_hidden_states = True  # its method reads hidden_states[-1] (transformers 5.23)
        t = proc.tokenizer(texts, padding=True, return_tensors="pt")
        text = own.get_text_audio_embeds(t["input_ids"], attention_mask=t["attention_mask"])
    np.testing.assert_array_equal(model.encode_audio(waves, sample_rate=48000, batch_size=3),
                                  torch.nn.functional.normalize(audio, dim=-1).numpy())
    np.testing.assert_array_equal(model.encode_text(texts), torch.nn.functional.normalize(text, dim=-1).numpy())
    # a batch of one clip pads nothing; the encoder's mask makes the padded batch agree with it
    alone = model.encode_audio(waves[2:], sample_rate=48000, batch_size=1)
    np.testing.assert_allclose(alone[0], model.encode_audio(waves, sample_rate=48000)[2], atol=1e-5)
    assert model.provenance["family"] == "pe_audio"


def test_provenance_names_the_model_and_not_its_place(tmp_path, tiny_checkpoint):
    import shutil

    model = clapkit.load(tiny_checkpoint, device="cpu")
    p = model.provenance
    assert p["kind"] == "clapkit" and p["medium"] == "audio" and p["source"] == str(tiny_checkpoint)
    assert p["training_data"] and "train.csv" in str(p["training_data"])
    assert "+" in p["family"]  # the audio tower and the text model
    shutil.copytree(tiny_checkpoint, tmp_path / "copy")
    assert clapkit.load(tmp_path / "copy", device="cpu").provenance["fingerprint"] == p["fingerprint"]
    folder = write_tiny_public_model("clap", tmp_path / "clap")
    (folder / "README.md").write_text("---\nlibrary_name: transformers\ndatasets:\n- audiocaps\n- clotho\n---\n# card\n")
    assert clapkit.load(folder, device="cpu").provenance["training_data"] == ["audiocaps", "clotho"]


def test_bad_inputs_say_what_to_give(tiny_checkpoint, tiny_synthetic):
    model = clapkit.load(tiny_checkpoint, device="cpu")
    wave = np.zeros(8000, np.float32)
    with pytest.raises(ConfigError, match=r"audio\[0\] is an array: give its sample_rate"):
        model.encode_audio([wave])
    with pytest.raises(ClapkitError, match=r"audio\[0\].*give a mono waveform"):
        model.encode_audio([np.zeros((2, 8000), np.float32)], sample_rate=8000)
    with pytest.raises(ClapkitError, match=r"audio\[1\].*NaN"):
        model.encode_audio([wave, np.full(100, np.nan, np.float32)], sample_rate=8000)
    with pytest.raises(ClapkitError, match=r"audio\[0\].*not found"):
        model.encode_audio(["/no/such.wav"])
    with pytest.raises(ConfigError, match="give a list"):
        model.encode_audio(str(next((tiny_synthetic / "unseen").glob("*/*.wav"))))
    with pytest.raises(ConfigError, match="an audio model; use encode_audio"):
        model.encode_image(["x.png"])
    with pytest.raises(ConfigError, match="features='y'"):
        model.encode_text(["a"], features="y")
    with pytest.raises(ConfigError, match=r"texts\[1\] is a int"):
        model.encode_text(["a", 3])
    with pytest.raises(ConfigError, match="class_names is empty"):
        model.zeroshot([wave], [], sample_rate=8000)
    with pytest.raises(ConfigError, match=r"\{label\}"):
        model.zeroshot([wave], ["dog"], prompts=["a dog"], sample_rate=8000)
    with pytest.raises(ConfigError, match="precision='fp16'"):
        clapkit.load(tiny_checkpoint, precision="fp16")
    assert model.encode_audio([]).shape == (0, 0)


@pytest.mark.parametrize("family", ["clap", "clip"])
def test_sentence_transformers_multimodal_folders_equal_its_encode(tmp_path, family, monkeypatch):
    """A sentence-transformers (>= 5.4) multimodal folder, which saves the transformers model at
    its root, loads as that model; E equals SentenceTransformer.encode (normalised) on texts and
    images. On audio it does not, by design: sentence-transformers 6.2 hands the CLAP feature
    extractor its text ``max_length`` (the tokenizer's, 128 tokens here), which the extractor reads
    as a number of samples, so each clip is cut at random to 128 samples (8 ms at 16 kHz) before it
    is embedded. clapkit embeds the whole window, as the model's own extractor does; the test shows
    both: clapkit equals the transformers model on the extractor's own settings, and
    SentenceTransformer.encode equals that model on the extractor given that max_length."""
    from PIL import Image
    from sentence_transformers import SentenceTransformer

    hf = write_tiny_public_model(family, tmp_path / "hf")
    SentenceTransformer(str(hf), device="cpu").save(str(tmp_path / "st"))
    st = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    model = clapkit.load(tmp_path / "st", device="cpu")
    assert model.provenance["library"] == "sentence-transformers" and model.provenance["family"] == family
    texts = ["a dog barks", "rain on a roof", "a siren"]
    np.testing.assert_allclose(model.encode_text(texts), st.encode(texts, normalize_embeddings=True), atol=1e-6)
    if family == "clap":
        sr = model.sample_rate
        rng = np.random.default_rng(0)
        waves = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (sr, sr // 2, sr // 3)]
        ours = model.encode_audio(waves, sample_rate=sr)
        net, fx = st[0].model, st[0].processor.feature_extractor
        seen, call = [], type(fx).__call__

        def spy(self, *args, **kwargs):  # what sentence-transformers hands the extractor
            seen.append(kwargs.get("max_length"))
            return call(self, *args, **kwargs)

        monkeypatch.setattr(type(fx), "__call__", spy)
        for i, w in enumerate(waves):
            with torch.no_grad():
                whole = net.get_audio_features(**fx([w], sampling_rate=sr, return_tensors="pt")).pooler_output
            np.testing.assert_allclose(ours[i], whole[0].numpy(), atol=1e-6)
            np.random.seed(i)  # the extractor's random crop draws from numpy's global generator
            theirs = st.encode([{"array": w, "sampling_rate": sr}], normalize_embeddings=True)
            np.random.seed(i)
            with torch.no_grad():
                cut = net.get_audio_features(**fx([w], sampling_rate=sr, max_length=seen[-1],
                                                  return_tensors="pt")).pooler_output
            assert seen[-1] <= 512 and np.abs(theirs[0] - cut[0].numpy()).max() < 1e-6
            assert np.abs(theirs[0] - ours[i]).max() > 1e-3
    else:
        images = [Image.fromarray((np.random.default_rng(i).random((40, 50, 3)) * 255).astype(np.uint8)) for i in range(3)]
        np.testing.assert_allclose(model.encode_image(images), st.encode(images, normalize_embeddings=True), atol=1e-6)
