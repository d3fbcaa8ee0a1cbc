"""timm image models as clapkit's image tower: ``model.image.name: timm:NAME`` (any name
``timm.list_models()`` lists), with ``model.image.checkpoint`` a local weights file (what
timm's ``pretrained_cfg_overlay=dict(file=...)`` reads: ``.safetensors``, ``.pth``, ``.bin``)
or none (random initialisation).

x is the model's pooled features (``num_classes=0``: timm's global pool and pre-logits,
no classifier). ``image.size/mean/std`` left unset are the model's own (timm's
``resolve_data_config``); the resize-and-centre-crop is clapkit's (CLIP's: the shorter side
to ``size``, then the centre), not timm's ``crop_pct`` resize. A checkpoint rebuilds the
architecture by name and takes the weights from ``model.safetensors``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ...errors import ConfigError
from . import register_tower

PREFIX = "timm:"


class TimmTower(nn.Module):
    def __init__(self, name: str, checkpoint: str | None = None):
        super().__init__()
        try:
            import timm
        except ImportError as exc:  # pragma: no cover - timm ships with the open_clip extra
            raise ConfigError("model.image.name = timm:...: install timm (pip install 'clapkit[open_clip]')") from exc
        if name not in timm.list_models():
            raise ConfigError(f"model.image.name = timm:{name}: timm has no model of that name (timm.list_models())")
        weights = checkpoint
        if weights and not Path(weights).is_file():
            raise ConfigError(f"model.image.checkpoint: file not found: {weights}")
        kwargs = dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(weights))) if weights else {}
        self.model = timm.create_model(name, num_classes=0, **kwargs)
        self.embed_dim = int(self.model.num_features)
        data = timm.data.resolve_data_config({}, model=self.model)
        self.preprocess = {"size": int(data["input_size"][-1]), "mean": list(data["mean"]), "std": list(data["std"])}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@register_tower("image", "timm", "timm:NAME - a timm image model (pooled features); model.image.checkpoint: its "
                "local weights file")
def build_timm(m: dict, config_folder=None, **_) -> nn.Module:
    name = m["name"][len(PREFIX):]
    if not name:
        raise ConfigError("model.image.name: give timm:NAME, e.g. timm:vit_base_patch16_224")
    return TimmTower(name, m.get("checkpoint"))
