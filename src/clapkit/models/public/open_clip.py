"""open_clip models behind clapkit's dual-encoder interface (``pip install 'clapkit[open_clip]'``).

``--model`` (and ``--teacher``) name one as open_clip itself does, behind ``open_clip:``:

- ``open_clip:ViT-B-32@laion2b_s34b_b79k``: a built-in architecture with a pretrained
  tag (downloaded by open_clip on a machine with a network) or ``@/path/to/weights``
  (``open_clip.create_model(name, pretrained=PATH)``);
- ``open_clip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K`` or
  ``open_clip:local-dir:DIR``; a folder holding ``open_clip_config.json`` (and no
  transformers ``config.json`` of a CLIP model) is read as ``local-dir:`` too.

Images go through the model's own validation transform, texts through its own
tokenizer (fixed context length, so ``max_length`` does not apply). x is a tower's
pooled output before its final projection where that projection is a separate matrix
(a ViT's ``visual.proj``, the text transformer's ``text_projection``); for towers whose
projection is built in (ModifiedResNet's attention pool, timm and HF text towers) x is
the unnormalised features. E is ``encode_image`` / ``encode_text`` normalised, and
``scale() * E_i @ E_t.T + bias()`` are the model's own logits (``logit_bias`` for
SigLIP models, else 0).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..formats import OPEN_CLIP_PREFIX
from .base import PublicDualEncoder

PREFIX = OPEN_CLIP_PREFIX


def is_open_clip(name: str | Path) -> bool:
    """``open_clip:...``, or a folder with ``open_clip_config.json`` that is no transformers
    model (:func:`clapkit.models.formats.detect`'s ``open_clip`` kind)."""
    from ..formats import kind_or_none

    return kind_or_none(name) == "open_clip"


def parse_open_clip(name: str | Path) -> tuple[str, str | None]:
    """(model name, pretrained) as ``open_clip.create_model`` takes them."""
    name = str(name)
    if not name.startswith(PREFIX):
        return f"local-dir:{name}", None
    spec = name[len(PREFIX):]
    if spec.startswith(("hf-hub:", "local-dir:")):
        return spec, None
    model, _, pretrained = spec.partition("@")
    if not model:
        raise ConfigError(f"--model {name}: give open_clip:NAME[@PRETRAINED], open_clip:hf-hub:ORG/REPO or "
                          "open_clip:local-dir:DIR")
    return model, pretrained or None


@contextmanager
def _without(owner: nn.Module, attr: str):
    """``owner.attr`` set to None for the duration (open_clip skips a projection that is None)."""
    saved = getattr(owner, attr)
    setattr(owner, attr, None)
    try:
        yield
    finally:
        setattr(owner, attr, saved)


def _apply(proj, x: torch.Tensor) -> torch.Tensor:
    return proj(x) if isinstance(proj, nn.Module) else x @ proj


class _OpenClipTokens:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.max_length = None  # the model's context length is fixed

    def tokenize(self, texts: list[str], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        ids = self.tokenizer(list(texts))
        return {"text": ids.to(device) if device is not None else ids}


class OpenClipDualEncoder(PublicDualEncoder):
    family = "open_clip"
    medium = "image"

    def __init__(self, name: str):
        super().__init__()
        try:
            import open_clip
        except ImportError as exc:
            raise ConfigError(f"--model {name}: open_clip models need the optional extra: "
                              f"pip install 'clapkit[open_clip]' ({exc})") from exc
        model_name, pretrained = parse_open_clip(name)
        try:
            self.model, _, self.transform = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)
            tokenizer = open_clip.get_tokenizer(model_name)
        except (RuntimeError, ValueError, OSError, KeyError) as exc:
            raise ConfigError(f"--model {name}: open_clip cannot build {model_name!r}"
                              f"{f' with pretrained {pretrained!r}' if pretrained else ''} ({type(exc).__name__}: {exc}); "
                              "open_clip.list_models() and open_clip.list_pretrained() name what it has") from exc
        self.model.eval()
        self.text = _OpenClipTokens(tokenizer)
        self.declare("open_clip", "image", name, {"image": "model.visual.", "text": "model.transformer."}, trainable=False)
        visual = self.model.visual
        self._image_proj = (visual, "proj") if getattr(visual, "proj", None) is not None else None
        text_owner = getattr(self.model, "text", self.model)  # CustomTextCLIP keeps its text tower apart
        has_proj = getattr(text_owner, "text_projection", None) is not None
        self._text_proj = (text_owner, "text_projection") if has_proj else None

    def preprocess(self, media: list, keys: list | None = None) -> dict[str, torch.Tensor]:
        """RGB Pillow images -> ``pixel_values`` through the model's validation transform."""
        return {"pixel_values": torch.stack([self.transform(im) for im in media])}

    def media_backbone(self, inputs: dict[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        pixels = inputs["pixel_values"] if isinstance(inputs, dict) else inputs
        if self._image_proj is None:
            return self.model.encode_image(pixels)
        with _without(*self._image_proj):
            return self.model.encode_image(pixels)

    def text_backbone(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        if self._text_proj is None:
            return self.model.encode_text(tokens["text"])
        with _without(*self._text_proj):
            return self.model.encode_text(tokens["text"])

    def project_media(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(_apply(getattr(*self._image_proj), x) if self._image_proj else x, dim=-1)

    def project_text(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(_apply(getattr(*self._text_proj), x) if self._text_proj else x, dim=-1)

    def scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp()

    def bias(self) -> torch.Tensor | float:
        return self.model.logit_bias if getattr(self.model, "logit_bias", None) is not None else 0.0
