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

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

FAMILIES = {"clap": "audio", "clip": "image", "siglip": "image"}


def hf_family(path: str | Path) -> str | None:
    """``model_type`` of a Hugging Face folder's ``config.json`` when it is a dual
    encoder clapkit wraps; None for a clapkit checkpoint; an error naming the folder
    for another Hugging Face model."""
    cfg_path = Path(path) / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{cfg_path}: unreadable ({exc})") from exc
    if "model_type" not in cfg:
        return None
    if cfg["model_type"] not in FAMILIES:
        raise _unsupported(path, cfg["model_type"])
    return cfg["model_type"]


def hf_dual_family(name: str | Path) -> str | None:
    """The family of a public dual encoder clapkit wraps (a local folder or hub name),
    None for anything else (a clapkit checkpoint, a text model, a missing path)."""
    p = Path(name)
    if p.is_dir():
        try:
            family = json.loads((p / "config.json").read_text()).get("model_type")
        except (OSError, ValueError, AttributeError):
            return None
    elif p.exists() or str(name) == "minilm":
        return None
    else:
        from transformers import AutoConfig

        try:
            family = AutoConfig.from_pretrained(str(name)).model_type
        except (OSError, ValueError):
            return None
    return family if family in FAMILIES else None


def _unsupported(path, family: str) -> ConfigError:
    return ConfigError(f"{path}: a Hugging Face '{family}' model; clapkit loads the dual encoders "
                       f"{', '.join(sorted(FAMILIES))} (ClapModel, CLIPModel, SiglipModel) and its own checkpoints")


class _Tokens:
    """The model's tokenizer behind clapkit's ``model.text.tokenize``."""

    def __init__(self, tokenizer, padding: str | bool):
        self.tokenizer, self.padding = tokenizer, padding
        self.max_length: int | None = None  # None: the tokenizer's own model_max_length

    def tokenize(self, texts: list[str], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        out = self.tokenizer(list(texts), padding=self.padding, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return {k: v.to(device) if device is not None else v for k, v in out.items() if k in ("input_ids", "attention_mask")}


class HFDualEncoder(nn.Module):
    def __init__(self, name: str | Path):
        super().__init__()
        from transformers import (
            AutoConfig,
            AutoFeatureExtractor,
            AutoImageProcessor,
            AutoModel,
            AutoTokenizer,
        )

        name = str(name)
        try:
            family = AutoConfig.from_pretrained(name).model_type
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--model {name}: neither a clapkit checkpoint nor a Hugging Face model folder or hub name "
                              f"({exc})") from exc
        if family not in FAMILIES:
            raise _unsupported(name, family)
        self.family, self.medium, self.source = family, FAMILIES[family], name
        self.model = AutoModel.from_pretrained(name).eval()
        try:
            tokenizer = AutoTokenizer.from_pretrained(name)
            self.processor = (AutoFeatureExtractor if family == "clap" else AutoImageProcessor).from_pretrained(name)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{name}: the folder lacks its tokenizer or {'feature extractor' if family == 'clap' else 'image processor'} "
                              f"files ({exc}); save the processor beside the model (processor.save_pretrained(folder))") from exc
        self.text = _Tokens(tokenizer, "max_length" if family == "siglip" else True)
        self.sample_rate = getattr(self.processor, "sampling_rate", None)
        self.frozen: frozenset[str] = frozenset()
        self.logit_clamp = None
        self.cfg = {"model": {"modality": self.medium, "source": name, "family": family}}

    # --- inputs ------------------------------------------------------------------------------
    def preprocess(self, media: list) -> dict[str, torch.Tensor]:
        """Decoded media (waveforms at :attr:`sample_rate`, or RGB Pillow images) -> the
        model's input tensors, through its own feature extractor / image processor.
        CLAP's random truncation of clips longer than its window draws from a fixed seed,
        so evaluation is deterministic."""
        if self.medium == "image":
            return dict(self.processor(images=media, return_tensors="pt"))
        state = np.random.get_state()
        np.random.seed(0)
        try:
            out = self.processor(media, sampling_rate=self.sample_rate, return_tensors="pt")
        finally:
            np.random.set_state(state)
        return dict(out)

    # --- the dual-encoder interface -------------------------------------------------------------
    def media_backbone(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.family == "clap":
            return self.model.audio_model(**inputs).pooler_output
        return self.model.vision_model(pixel_values=inputs["pixel_values"]).pooler_output

    def text_backbone(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.text_model(**tokens).pooler_output

    def project_media(self, x: torch.Tensor) -> torch.Tensor:
        proj = {"clap": "audio_projection", "clip": "visual_projection"}.get(self.family)
        return F.normalize(getattr(self.model, proj)(x) if proj else x, dim=-1)

    def project_text(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.text_projection(x) if self.family != "siglip" else x, dim=-1)

    def encode_media(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.project_media(self.media_backbone(inputs))

    def encode_text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.project_text(self.text_backbone(tokens))

    def scale(self) -> torch.Tensor:
        return (self.model.logit_scale_a if self.family == "clap" else self.model.logit_scale).exp()

    def bias(self) -> torch.Tensor | float:
        return self.model.logit_bias if self.family == "siglip" else 0.0

    def logits(self, e_m: torch.Tensor, e_t: torch.Tensor) -> torch.Tensor:
        """The model's own media-to-text logits."""
        return self.scale() * e_m @ e_t.T + self.bias()


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """A clapkit checkpoint (:class:`DualEncoder`) or a Hugging Face ClapModel, CLIPModel
    or SiglipModel folder or hub name (:class:`HFDualEncoder`), in eval mode."""
    from .dual import DualEncoder

    p = Path(path)
    if p.is_dir() and (p / "config.json").is_file() and hf_family(p) is None:
        return DualEncoder.load(p).to(device)
    if p.is_dir() and not (p / "config.json").is_file():
        raise ConfigError(f"{p}: not a clapkit checkpoint nor a Hugging Face model (no config.json); give a clapkit "
                          "checkpoint folder (config.json, model.safetensors, text/) or a Hugging Face ClapModel, "
                          "CLIPModel or SiglipModel folder")
    return HFDualEncoder(str(path)).to(device)
