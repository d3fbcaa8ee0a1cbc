"""Image towers: normalised pixels (B, 3, H, W) -> embedding x_i (B, embed_dim).

- :class:`SmallImageCNN` - strided conv blocks and global average pooling, for CPU;
- :class:`SmallViT` - patch embedding, a CLS token, pre-norm Transformer layers; the
  CLS output after the final LayerNorm is the embedding;
- :class:`HFVisionTower` - any Hugging Face vision encoder (ViT, DeiT, CLIP and SigLIP
  vision towers, ConvNeXt, ResNet, DINOv2, ...). A full CLIP/SigLIP folder
  contributes its vision half only. ``pooling="pooled"`` takes the model's own pooled
  output (a CLS head, a mean or an attention pool, whatever that family defines),
  ``pooling="cls"`` the first token of the last hidden state (Transformers only).
  The folder's ``preprocessor_config.json`` (size, mean, std) becomes the image
  settings of the run unless the config sets them (see :func:`image_settings`).

A tower saved in a clapkit checkpoint keeps its weights in ``model.safetensors``; an HF
tower also writes its ``config.json`` to ``vision/`` so the checkpoint loads without
the original folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ...errors import ConfigError
from . import build_tower, register_fallback, register_tower

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class SmallImageCNN(nn.Module):
    """Conv(3x3, stride 2) + BN + ReLU blocks, then global average pooling."""

    def __init__(self, channels: list[int] | tuple[int, ...] = (32, 64, 128, 256), in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for cout in channels:
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                       nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.embed_dim = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


class SmallViT(nn.Module):
    """A ViT: non-overlapping ``patch`` x ``patch`` patches, learnt positions, CLS token."""

    def __init__(self, image_size: int, patch: int = 8, width: int = 192, depth: int = 4, heads: int = 3,
                 mlp_ratio: float = 4.0, dropout: float = 0.0, in_channels: int = 3):
        super().__init__()
        if image_size % patch:
            raise ConfigError(f"model.image.patch = {patch} must divide image.size = {image_size}")
        if width % heads:
            raise ConfigError(f"model.image.width = {width} must be divisible by model.image.heads = {heads}")
        self.patch_embed = nn.Conv2d(in_channels, width, patch, stride=patch)
        n = (image_size // patch) ** 2
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.randn(1, n + 1, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, int(width * mlp_ratio), dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.embed_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.norm(self.blocks(x))[:, 0]


class HFVisionTower(nn.Module):
    """A ``transformers`` vision encoder; see the module docstring for ``pooling``."""

    def __init__(self, name: str, pooling: str = "pooled", config_only: bool = False):
        super().__init__()
        from transformers import AutoConfig, AutoModel
        from transformers.models.auto.modeling_auto import MODEL_MAPPING

        try:
            config = AutoConfig.from_pretrained(name)
        except OSError as exc:
            raise ConfigError(f"model.image.name = {name!r}: not a Hugging Face model folder or hub name ({exc})") from exc
        vision = getattr(config, "vision_config", None)  # CLIP, SigLIP, ...: keep the vision half
        if config_only:
            model = AutoModel.from_config(vision or config)
        elif vision is None:
            model = AutoModel.from_pretrained(name)
        else:  # e.g. CLIPVisionModel reads the vision_model.* weights of a CLIPModel folder
            model = MODEL_MAPPING[type(vision)].from_pretrained(name)
        self.model = model
        self.pooling = pooling
        self.embed_dim = _width(model.config)
        if pooling not in ("pooled", "cls"):
            raise ConfigError(f"model.image.pooling = {pooling!r}; choose pooled or cls")
        self.preprocess = read_preprocessor(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=x)
        if self.pooling == "cls":
            hidden = getattr(out, "last_hidden_state", None)
            if hidden is None or hidden.dim() != 3:
                raise ConfigError("model.image.pooling = cls needs a Transformer (tokens); this model is "
                                  "convolutional: use pooling = pooled")
            return hidden[:, 0]
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            raise ConfigError("this vision model has no pooled output; use model.image.pooling = cls")
        return pooled.flatten(1)  # ResNet pools to (B, C, 1, 1)

    def save_config(self, folder: Path) -> None:
        self.model.config.save_pretrained(folder)
        if self.preprocess:
            (Path(folder) / "preprocessor_config.json").write_text(json.dumps(self.preprocess, indent=2))


def _width(config) -> int:
    if isinstance(getattr(config, "hidden_size", None), int):
        return int(config.hidden_size)
    sizes = getattr(config, "hidden_sizes", None)  # ConvNeXt, ResNet
    if sizes:
        return int(sizes[-1])
    raise ConfigError(f"cannot tell the output width of {type(config).__name__}")


def read_preprocessor(name: str) -> dict:
    """``size``, ``mean`` and ``std`` from a folder's ``preprocessor_config.json`` ({} if none)."""
    path = Path(name) / "preprocessor_config.json"
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    return preprocessor_settings(raw)


def preprocessor_settings(raw: dict) -> dict:
    """``size`` (the crop, else the resize), ``mean`` and ``std`` of an image processor's settings."""
    out: dict = {}
    size = raw.get("crop_size") or raw.get("size")
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge")
    if isinstance(size, int):
        out["size"] = size
    if raw.get("image_mean"):
        out["mean"] = [float(v) for v in raw["image_mean"]]
    if raw.get("image_std"):
        out["std"] = [float(v) for v in raw["image_std"]]
    return out


def image_settings(image_cfg: dict, tower: nn.Module) -> dict:
    """``image.size/mean/std`` with ``null`` entries filled from an HF tower's processor
    settings, else 224 and CLIP's mean and std."""
    pre = getattr(tower, "preprocess", {}) or {}
    out = dict(image_cfg)
    for key, default in (("size", 224), ("mean", list(CLIP_MEAN)), ("std", list(CLIP_STD))):
        if out.get(key) is None:
            out[key] = pre.get(key, default)
    return out


def build_image_tower(m: dict, image_size: int | None, config_folder: str | Path | None = None) -> nn.Module:
    """The tower named by ``model.image``; ``config_folder`` rebuilds a checkpoint's HF tower."""
    return build_tower("image", m, image_size=image_size, config_folder=config_folder)


@register_tower("image", "small_cnn", "strided conv blocks and global average pooling (model.image.channels), for CPU")
def build_small_cnn(m: dict, **_) -> nn.Module:
    return SmallImageCNN(m["channels"])


@register_tower("image", "small_vit", "a small ViT (model.image.patch, width, depth, heads, dropout)")
def build_small_vit(m: dict, image_size: int | None = None, **_) -> nn.Module:
    return SmallViT(image_size or 224, m["patch"], m["width"], m["depth"], m["heads"], dropout=m["dropout"])


@register_fallback("image")
def build_hf(m: dict, config_folder: str | Path | None = None, **_) -> nn.Module:
    """Any other name: a Hugging Face vision folder or hub name (model.image.pooling)."""
    name = m["name"][3:] if m["name"].startswith("hf:") else m["name"]
    if name in ("hf", ""):
        raise ConfigError("model.image.name: give the Hugging Face folder or hub name, e.g. hf:./vit-base or ./vit-base")
    if config_folder is not None:
        return HFVisionTower(str(config_folder), m["pooling"], config_only=True)
    return HFVisionTower(name, m["pooling"])


register_tower("image", "hf", "hf:PATH - a transformers vision model (ViT, DINOv2, CLIP's or SigLIP's vision "
               "half, ConvNeXt, ResNet); model.image.pooling")(build_hf)
