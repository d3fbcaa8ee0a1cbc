"""Public dual encoders in Hugging Face ``transformers`` format, behind clapkit's interface.

:class:`HFDualEncoder` wraps a ``ClapModel`` (audio), ``CLIPModel`` or ``SiglipModel``
(images) read from a folder or hub name (the family comes from ``config.json``'s
``model_type``), so every evaluation, audit and teacher step that takes a clapkit
checkpoint takes these too. The interface is :class:`~clapkit.models.dual.DualEncoder`'s:

==================  =======================================  ==========================
                    x (backbone output)                      E (projected, normalised)
==================  =======================================  ==========================
ClapModel audio     ``audio_model(...).pooler_output``       ``audio_projection(x)``
ClapModel text      ``text_model(...).pooler_output``        ``text_projection(x)``
CLIPModel image     ``vision_model(...).pooler_output``      ``visual_projection(x)``
CLIPModel text      ``text_model(...).pooler_output``        ``text_projection(x)``
SiglipModel         the towers' pooled outputs (their heads)  x itself (no projection)
==================  =======================================  ==========================

E is L2-normalised, as ``get_*_features`` (CLAP) or the models' own forward (CLIP,
SigLIP) normalise before their logits; ``scale()`` is ``logit_scale.exp()``
(``logit_scale_a`` for CLAP's media-to-text logits) and ``bias()`` SigLIP's
``logit_bias`` (0 for the others), so ``scale() * E_m @ E_t.T + bias()`` are the
model's own ``logits_per_image`` / ``logits_per_audio``.

Inputs go through the model's own preprocessing, saved in its folder: the feature
extractor (CLAP: its sampling rate, truncation and padding) or the image processor
(CLIP, SigLIP: resize, crop, mean, std), and its tokenizer (SigLIP pads to
``max_length``, as it was trained; the others pad to the longest text).
:meth:`preprocess` turns decoded media into the model's input tensors.
"""

from __future__ import annotations

import copy
import functools
import json
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import ConfigError
from ..formats import (
    KINDS,
    PUBLIC_FAMILIES,
    detect,
    kind_or_none,
    public_family,
    transformers_family,
)
from ..towers.image import preprocessor_settings
from .base import PublicDualEncoder, Tokens

FAMILIES = PUBLIC_FAMILIES
_TOWERS = {"clap": "audio_model", "clip": "vision_model", "siglip": "vision_model"}


def hf_family(path: str | Path) -> str | None:
    """``model_type`` of a Hugging Face dual encoder clapkit wraps; None for a clapkit
    checkpoint; an error naming the folder for any other model (:mod:`..formats`)."""
    kind = detect(path)
    if kind == "clapkit":
        return None
    if transformers_family(kind) is None:
        raise _not_dual(path, kind)
    return transformers_family(kind)


def hf_dual_family(name: str | Path) -> str | None:
    """The family of a public dual encoder clapkit wraps (a local folder or hub name, or
    ``open_clip``), None for anything else (a clapkit checkpoint, a text model, a missing path)."""
    return public_family(kind_or_none(name))


def _unsupported(path, family: str) -> ConfigError:
    return ConfigError(f"{path}: a Hugging Face '{family}' model; clapkit loads the dual encoders "
                       f"{', '.join(sorted(FAMILIES))} (ClapModel, CLIPModel, SiglipModel) and its own checkpoints")


def _not_dual(path, kind: str) -> ConfigError:
    """The error for a model that is no dual encoder, naming what it is."""
    if kind == "hf-text":
        config = Path(path) / "config.json"
        model_type = json.loads(config.read_text()).get("model_type") if config.is_file() else "text"
        return _unsupported(path, model_type)
    return ConfigError(f"{path}: {KINDS[kind]}, not a dual encoder; give a clapkit checkpoint, a transformers "
                       "ClapModel, CLIPModel or SiglipModel, or an open_clip model")


class HFDualEncoder(PublicDualEncoder):
    def __init__(self, name: str | Path, parts: tuple | None = None):
        """The model at ``name`` (a folder or hub name); or, with ``parts`` = (model,
        processor, tokenizer), those already built (a converted checkpoint, :mod:`.laion_clap`)."""
        super().__init__()
        name = str(name)
        if parts is None:
            parts = _load_parts(name)
        model, processor, tokenizer = parts
        family = model.config.model_type
        self.model, self.processor = model.eval(), processor
        self.text = Tokens(tokenizer, "max_length" if family == "siglip" else True)
        self.declare(family, FAMILIES[family], name, {FAMILIES[family]: f"model.{_TOWERS[family]}.",
                                                      "text": "model.text_model."},
                     getattr(self.processor, "sampling_rate", None))

    # --- inputs ------------------------------------------------------------------------------
    def preprocess(self, media: list, keys: list | None = None) -> dict[str, torch.Tensor]:
        """Decoded media (waveforms at :attr:`sample_rate`, or RGB Pillow images) -> the
        model's input tensors, through its own feature extractor / image processor.

        CLAP: each clip through :func:`clap_features` on its own, seeded by its key (else
        a hash of its samples), so a clip's input never depends on the batch size, its
        position, the worker count or the order; in training (no keys) the seeds come
        from torch's generator, which the trainer seeds and saves.
        """
        if self.medium == "image":
            return dict(self.processor(images=media, return_tensors="pt"))
        keys = list(keys) if keys is not None else [None] * len(media)
        training, window = self.model.audio_model.training, self.processor.nb_max_samples
        outs = [clap_features(self.processor, wave, self.sample_rate,  # a clip inside the window draws nothing
                              _clip_seed(wave, key, training) if len(wave) > window else 0)
                for wave, key in zip(media, keys, strict=True)]
        return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}

    @property
    def fused(self) -> bool:
        """A CLAP with feature fusion (``truncation="fusion"``, e.g. laion/clap-htsat-fused)."""
        return self.family == "clap" and getattr(self.processor, "truncation", None) == "fusion"

    def extractor(self):
        """For a fused CLAP, the per-clip feature function the training pipeline runs on
        whole clips (``(wave, seed) -> inputs``, picklable for loader workers); None for
        the others, whose training clips are cut to the window by clapkit's pipeline."""
        return functools.partial(clap_features, self.processor, sample_rate=self.sample_rate) if self.fused else None

    # --- the dual-encoder interface -------------------------------------------------------------
    def media_backbone(self, inputs: dict[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """x_m of the model's own inputs (:meth:`preprocess`), or of a batch tensor from
        clapkit's training pipeline: pixels already resized, cropped and normalised to
        the processor's settings, or waveforms at its sampling rate that go through its
        feature extractor here."""
        if isinstance(inputs, torch.Tensor):
            if self.medium == "image":
                inputs = {"pixel_values": inputs}
            else:
                device = inputs.device
                inputs = {k: v.to(device) for k, v in self.preprocess(list(inputs.cpu().numpy())).items()}
        if self.family == "clap":
            if self.fused and self.model.audio_model.training and not inputs["is_longer"].any():
                # LAION-CLAP's training rule (htsat.py): a batch without a long clip fuses one at random
                inputs = dict(inputs, is_longer=inputs["is_longer"].clone())
                inputs["is_longer"][int(torch.randint(len(inputs["is_longer"]), ()))] = True
            return self.model.audio_model(**inputs).pooler_output
        return self.model.vision_model(pixel_values=inputs["pixel_values"]).pooler_output

    def text_backbone(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.text_model(**tokens).pooler_output

    def project_media(self, x: torch.Tensor) -> torch.Tensor:
        proj = {"clap": "audio_projection", "clip": "visual_projection"}.get(self.family)
        return F.normalize((getattr(self.model, proj)(x) if proj else x).float(), dim=-1)

    def project_text(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize((self.model.text_projection(x) if self.family != "siglip" else x).float(), dim=-1)

    def scale(self) -> torch.Tensor:
        return (self.model.logit_scale_a if self.family == "clap" else self.model.logit_scale).exp()

    def bias(self) -> torch.Tensor | float:
        return self.model.logit_bias if self.family == "siglip" else 0.0

    def logit_bias_parameter(self) -> torch.nn.Parameter | None:
        """SigLIP's learnt logit bias (trained by the ``siglip`` objective), else None."""
        return self.model.logit_bias if self.family == "siglip" else None

    def logit_scale_parameter(self) -> torch.nn.Parameter:
        return self.model.logit_scale_a if self.family == "clap" else self.model.logit_scale

    # --- fine-tuning ----------------------------------------------------------------------------
    def for_training(self, cfg: dict, option: str = "model.init_from") -> HFDualEncoder:
        """Fit a training run's config to this model, which the run fine-tunes in place.

        The model's architecture is its own (``model.audio/image/text/projector`` do
        not apply); the inputs follow its preprocessing: ``audio.sample_rate`` and
        ``segment_seconds`` are its feature extractor's sampling rate and window, and
        ``audio.pad`` its padding (clips are cut to the window, or padded as the extractor
        pads them, by clapkit's pipeline, then go through the extractor unchanged: the
        extractor input equals the one it builds from the raw wave), ``audio.normalize``
        is off (it takes raw waveforms). A fused CLAP's training clips are not cut: the
        whole clip goes through the extractor in the data pipeline (:meth:`extractor`,
        seeded per (seed, epoch, clip)), so fusion sees long clips in training; and
        ``image.size/mean/std`` are its processor's crop and normalisation.
        ``model.learn_temperature`` and ``logit_clamp`` apply to its ``logit_scale``
        (CLAP: ``logit_scale_a``, the scale of its audio-text logits; ``logit_scale_t``,
        which the CLIP loss never uses, stays as it is, as in LAION-CLAP's training).
        """
        cfg = copy.deepcopy(cfg)  # the run's config stays as given; this copy is the model's own
        wanted = cfg["model"].get("modality", "audio")
        if wanted != self.medium:
            raise ConfigError(f"{option} = {self.source}: a{'n' if self.medium == 'audio' else ''} {self.medium} model "
                              f"({self.family}); this config trains {wanted} (use `clapkit train "
                              f"{'clap' if self.medium == 'audio' else 'clip'}`)")
        if self.medium == "audio":
            cfg["audio"].update(sample_rate=int(self.sample_rate), normalize=False,
                                segment_seconds=self.processor.nb_max_samples / self.sample_rate,
                                pad={"repeatpad": "repeatpad", "repeat": "repeat"}.get(self.processor.padding, "zero"))
        else:
            cfg["image"].update(preprocessor_settings(self.processor.to_dict()))
        scale = "logit_scale_a" if self.family == "clap" else "logit_scale"  # capped by train.max_logit_scale
        unused = {"model.logit_scale_t"}  # CLAP's text-to-audio scale: the CLIP loss uses logit_scale_a both ways
        if not cfg["model"]["learn_temperature"]:
            unused.add(f"model.{scale}")
        return self._fine_tune(cfg, unused)

    def save(self, folder: str | Path) -> None:
        """The model in ``transformers`` format with its processor and tokenizer, so
        ``{ClapModel,CLIPModel}.from_pretrained(folder)`` and clapkit load it alike."""
        self.model.save_pretrained(folder)
        self.processor.save_pretrained(folder)
        self.text.tokenizer.save_pretrained(folder)


def _load_parts(name: str) -> tuple:
    """(model, processor, tokenizer) of a transformers CLAP, CLIP or SigLIP folder or hub name."""
    from transformers import (
        AutoConfig,
        AutoFeatureExtractor,
        AutoImageProcessor,
        AutoModel,
        AutoTokenizer,
    )

    try:
        family = AutoConfig.from_pretrained(name).model_type
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--model {name}: neither a clapkit checkpoint nor a Hugging Face model folder or hub name "
                          f"({exc})") from exc
    if family not in FAMILIES:
        raise _unsupported(name, family)
    model = AutoModel.from_pretrained(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        processor = (AutoFeatureExtractor if family == "clap" else AutoImageProcessor).from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{name}: the folder lacks its tokenizer or {'feature extractor' if family == 'clap' else 'image processor'} "
                          f"files ({exc}); save the processor beside the model (processor.save_pretrained(folder))") from exc
    return model, processor, tokenizer


def clap_features(processor, wave: np.ndarray, sample_rate: int, seed: int) -> dict[str, torch.Tensor]:
    """One clip through transformers' CLAP feature extractor, its random choices (the
    crop of a clip longer than the window; fusion's three chunks) drawn from numpy's
    global generator seeded with ``seed`` (the caller's state is restored after).

    ``is_longer`` is the extractor's own test for this clip alone: longer than the window
    (a fused model's: more mel frames than the window's). The extractor marks a random
    clip when no clip of its call is longer, which LAION-CLAP does in training only (in
    its model's forward, as :meth:`HFDualEncoder.media_backbone` does); in eval mode
    LAION-CLAP fuses no such clip, so the mark is not kept here."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        out = dict(processor([wave], sampling_rate=sample_rate, return_tensors="pt"))
    finally:
        np.random.set_state(state)
    if "is_longer" in out:
        window, n = processor.nb_max_samples, len(wave)
        if getattr(processor, "truncation", None) == "fusion":
            longer = n > window and n // processor.hop_length != window // processor.hop_length
        else:
            longer = n > window
        out["is_longer"] = torch.tensor([[longer]])
    return out


def _clip_seed(wave: np.ndarray, key, training: bool) -> int:
    """A clip's extractor seed: its key, else (training) a draw from torch's generator,
    else a hash of its samples."""
    if key is None and training:
        return int(torch.randint(2**31 - 1, ()))
    data = str(key).encode() if key is not None else np.ascontiguousarray(wave, dtype=np.float32).tobytes()
    return zlib.crc32(data)
