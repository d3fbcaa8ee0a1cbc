"""clapkit's Python interface: one loader and one model object for every model clapkit reads.

.. code-block:: python

    import clapkit

    model = clapkit.load("laion-clap-630k.pt")              # any kind `clapkit formats` lists
    audio = model.encode_audio(["dog.wav", "rain.wav"])     # (2, D) unit rows
    text = model.encode_text(["a dog barking", "rain"])     # (2, D) unit rows
    model.similarity(audio, text)                           # (2, 2) cosines
    model.zeroshot(["dog.wav"], ["dog", "rain", "sea waves"]).labels   # ['dog']

Every call runs the command line's own pipeline (:func:`clapkit.inference.features.embed_items`
for media, :func:`clapkit.inference.embed.embed_text` for texts, the prompts of
:func:`clapkit.evaluation.prompts.zeroshot_texts`): eval mode, the centre segment or crop,
the model's own preprocessing for a public model, every random draw seeded by the item,
so a clip embeds to the same vector here, in ``clapkit embed`` and in every evaluation.
Names follow the anchors where they agree: ``encode_*`` (open_clip, sentence-transformers)
returning arrays of L2-normalised rows (laion_clap's ``get_*_embedding``, msclap's
``get_*_embeddings``); ``features="x"`` gives the backbone output before the projection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError

__all__ = ["Model", "ZeroShot", "load"]

Audio = str | Path | np.ndarray
FEATURES = ("E", "x")


@dataclass
class ZeroShot:
    """What :meth:`Model.zeroshot` found: ``scores`` (N, C) cosines of each item and each
    class's prompt embedding; ``probs`` (N, C) the softmax of the model's own logits
    (``scale * cosine + bias``) over the classes; ``labels`` the best class of each item;
    ``prompts`` the texts each class was embedded from (averaged, then renormalised)."""

    scores: np.ndarray
    probs: np.ndarray
    labels: list[str]
    class_names: list[str]
    prompts: list[list[str]] = field(repr=False)


def load(name_or_path: str | Path, device: str | None = None, precision: str = "fp32",
         text_model: str | None = None) -> Model:
    """The model at ``name_or_path``, whatever its kind: a clapkit checkpoint, a
    transformers ClapModel / CLIPModel / SiglipModel / PeAudioModel folder or hub name, an
    ``open_clip:NAME@PRETRAINED`` spec, a LAION-CLAP ``.pt`` or msclap ``.pth`` file, a sentence encoder
    (``minilm``, a sentence-transformers folder, a ``train cse`` output). ``device``:
    ``cuda`` when there is one, else ``cpu``; ``precision``: ``fp32`` or ``bf16``
    (autocast; embeddings come back as float32). ``text_model``: for a LAION-CLAP or msclap
    file, the model its text side and tokenizer are built on (default ``roberta-base`` /
    ``bert-base-uncased`` / ``gpt2``, from the hub or its cache, as the owners' packages load them). An unknown path is one error listing the kinds."""
    import torch

    from .inference.embed import PRECISIONS
    from .models.formats import DUAL, detect

    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r}: choose {' or '.join(PRECISIONS)}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    kind = detect(name_or_path)
    if kind in DUAL:
        from .models.public.loader import load_model

        return Model(load_model(name_or_path, device, text_model), str(name_or_path), kind, device, precision)
    if kind == "audio-tower":
        raise ConfigError(f"{name_or_path}: an audio tower's weights, not a model with a text side; train a CLAP on it "
                          "(model.audio.checkpoint) or read its features with `clapkit eval probe`")
    from .evaluation.sts import SentenceEncoder

    return Model(SentenceEncoder(name_or_path, device=device), str(name_or_path), kind, device, precision)


class Model:
    """One loaded model (from :func:`load`). ``medium`` is ``audio``, ``image`` or None (a
    text encoder); ``sample_rate`` the rate its audio is resampled to; :attr:`provenance`
    says what it is and where it came from."""

    def __init__(self, net, source: str, kind: str, device: str, precision: str):
        self.net, self.source, self.kind, self.device, self.precision = net, source, kind, device, precision
        self._text_only = not hasattr(net, "media_backbone")
        self.medium: str | None = None if self._text_only else net.medium

    def __repr__(self) -> str:
        return f"clapkit.Model({self.source!r}, kind={self.kind!r}, medium={self.medium!r}, device={self.device!r})"

    @property
    def sample_rate(self) -> int | None:
        """The sample rate audio is resampled to before the model sees it (None for images and text)."""
        from .models.provenance import audio_input

        return audio_input(self.net)["sample_rate"] if self.medium == "audio" else None

    @property
    def provenance(self) -> dict[str, Any]:
        """``kind``, ``family``, ``source``, ``fingerprint`` (of the files, not their place),
        ``medium`` and, where the model's config or model card says, ``training_data``."""
        from .models.provenance import describe

        return describe(self.source, self.net, self.kind)

    # --- encoding -----------------------------------------------------------------------------
    def _context(self):
        from .inference.embed import inference_precision

        return inference_precision(self.precision, self.device)

    def _media(self, medium: str, items: list, features: str, batch_size: int, progress: bool | None) -> np.ndarray:
        from .inference.features import embed_items

        if self.medium != medium:
            what = "a text encoder" if self.medium is None else f"an {self.medium} model"
            raise ConfigError(f"encode_{medium} on {self.source}: {what}; use "
                              + ("encode_text" if self.medium is None else f"encode_{self.medium}"))
        _check_features(features)
        if not items:
            return np.zeros((0, 0), np.float32)
        with self._context():
            feats, _ = embed_items(self.net, items, (features,), batch_size, self.device,
                                   progress=len(items) > 4 * batch_size if progress is None else progress)
        return feats[features]

    def encode_audio(self, audio: Sequence[Audio], sample_rate: int | None = None, features: str = "E",
                     batch_size: int = 32, progress: bool | None = None) -> np.ndarray:
        """(N, D) float32 embeddings of N clips: file paths (any format soundfile reads,
        resampled to :attr:`sample_rate`) or 1-D arrays of samples at ``sample_rate``.
        ``features="E"``: the projected, L2-normalised embedding; ``"x"``: the audio
        backbone's output. A progress bar shows on a terminal for long inputs."""
        from .data.records import ArrayAudio, LabelledClip

        items = []
        for i, a in enumerate(_as_list(audio, "audio")):
            if isinstance(a, str | Path):
                items.append(LabelledClip(Path(a), 0, None, f"audio[{i}]"))
                continue
            if sample_rate is None:
                raise ConfigError(f"audio[{i}] is an array: give its sample_rate= (the rate its samples were taken at)")
            items.append(LabelledClip(ArrayAudio("audio", i, np.asarray(a), int(sample_rate)), 0, None, f"audio[{i}]"))
        return self._media("audio", items, features, batch_size, progress)

    def encode_image(self, images: Sequence, features: str = "E", batch_size: int = 32,
                     progress: bool | None = None) -> np.ndarray:
        """(N, D) float32 embeddings of N images: file paths or Pillow images, through the
        model's own transform (clapkit's centre crop, or a public model's processor)."""
        from .data.records import LabelledClip, MemoryImage

        items = [LabelledClip(Path(im) if isinstance(im, str | Path) else MemoryImage("images", i, im), 0, None, f"images[{i}]")
                 for i, im in enumerate(_as_list(images, "images"))]
        return self._media("image", items, features, batch_size, progress)

    def encode_text(self, texts: Sequence[str], features: str = "E", batch_size: int = 64) -> np.ndarray:
        """(N, D) float32 embeddings of N texts: ``E`` the projected, L2-normalised text
        embedding (a sentence encoder's: its pooled, normalised output), ``x`` the text
        backbone's pooled output."""
        texts = _as_list(texts, "texts")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise ConfigError(f"texts[{bad[0]}] is a {type(texts[bad[0]]).__name__}; give strings")
        _check_features(features)
        with self._context():
            if self._text_only:
                return self.net.encode(texts, batch_size, normalize=features == "E").astype(np.float32)
            from .inference.embed import embed_text

            return embed_text(self.net, texts, batch_size, projected=features == "E", device=self.device)

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(N, M) cosine similarities of the rows of ``a`` (N, D) and ``b`` (M, D)."""
        from .inference.embed import unit_rows

        a, b = np.atleast_2d(np.asarray(a, np.float32)), np.atleast_2d(np.asarray(b, np.float32))
        if a.shape[1] != b.shape[1]:
            raise ValueError(f"similarity of {a.shape[1]}-d and {b.shape[1]}-d rows: embed both with one model")
        return unit_rows(a) @ unit_rows(b).T

    def zeroshot(self, media: Sequence, class_names: Sequence[str], prompts=None, sample_rate: int | None = None,
                 batch_size: int = 32) -> ZeroShot:
        """Zero-shot classification of ``media`` (what :meth:`encode_audio` or
        :meth:`encode_image` takes) over ``class_names``. ``prompts``: None (the
        medium's default, ``This is a sound of {label}.`` / ``a photo of a {label}.``), a
        list of templates (averaged per class), a class -> prompts mapping, or a prompt
        spec as ``eval zeroshot --prompts`` takes it (``clapkit:ensemble``,
        ``clip_benchmark:cifar10``, a file)."""
        from .evaluation.prompts import zeroshot_texts
        from .evaluation.zeroshot import class_embeddings

        if self.medium is None:
            raise ConfigError(f"zeroshot on {self.source}: a text encoder has no media side")
        names = _as_list(class_names, "class_names")
        if not names:
            raise ConfigError("class_names is empty: give the classes to choose from")
        if isinstance(prompts, list | tuple) and not isinstance(prompts, str):
            prompts = list(prompts)
            if not all(isinstance(t, str) and "{" in t for t in prompts):
                raise ConfigError("prompts: give templates with a {label} (or {}) slot, e.g. 'a sound of {label}'")
        texts = zeroshot_texts(list(names), self.medium, prompts)
        if self.medium == "audio":
            emb = self.encode_audio(media, sample_rate=sample_rate, batch_size=batch_size)
        else:
            emb = self.encode_image(media, batch_size=batch_size)
        with self._context():
            text_emb = class_embeddings(self.net, texts.texts, self.device)
        scores = emb @ text_emb.T
        bias = self.net.bias() if hasattr(self.net, "bias") else 0.0
        logits = _number(self.net.scale()) * scores + _number(bias)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        return ZeroShot(scores, probs.astype(np.float32), [names[i] for i in scores.argmax(axis=1)], list(names),
                        texts.texts)


def _as_list(x, what: str) -> list:
    if isinstance(x, str | Path) or (isinstance(x, np.ndarray) and x.ndim == 1):
        raise ConfigError(f"{what}: give a list (one item per entry), not a single {type(x).__name__}")
    return list(x)


def _number(x) -> float:
    return float(x.detach()) if hasattr(x, "detach") else float(x)


def _check_features(features: str) -> None:
    if features not in FEATURES:
        raise ConfigError(f"features={features!r}: choose 'E' (projected, normalised) or 'x' (the backbone output)")
