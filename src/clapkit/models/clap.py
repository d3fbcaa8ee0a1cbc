"""The CLAP dual encoder: audio and text backbones, MLP projectors, a learnt temperature.

A checkpoint is a directory::

    config.json         the full resolved config
    model.safetensors   audio tower, projectors and logit scale
    text/               the text encoder as a Hugging Face folder (AutoModel,
                        AutoTokenizer and SentenceTransformer load it on its own)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import ConfigError
from .audio import build_audio_tower
from .text import TextTower


class Projector(nn.Module):
    """MLP: ``depth`` linear layers (GELU + dropout between them), ``in_dim -> ... -> dim``."""

    def __init__(self, in_dim: int, dim: int, hidden: int, depth: int, dropout: float):
        super().__init__()
        if depth < 1:
            raise ConfigError("model.projector.depth must be at least 1")
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(depth - 1):
            layers += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ClapModel(nn.Module):
    def __init__(self, cfg: dict, text_path: str | None = None):
        super().__init__()
        m = cfg["model"]
        self.cfg = cfg
        self.audio = build_audio_tower(m["audio"], cfg["audio"]["sample_rate"])
        t = m["text"]
        self.text = TextTower(text_path or t["name"], t["pooling"], t["max_length"])
        p = m["projector"]
        self.audio_proj = Projector(self.audio.embed_dim, p["dim"], p["hidden"], p["depth"], p["dropout"])
        self.text_proj = Projector(self.text.embed_dim, p["dim"], p["hidden"], p["depth"], p["dropout"])
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / m["init_temperature"])), requires_grad=m["learn_temperature"]
        )
        self.logit_clamp = m["logit_clamp"]
        # Parameters a full fine-tune trains; the rest (PANNs' STFT basis and AudioSet
        # head, an unused BERT pooler) never get gradients.
        self._trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        self.frozen: frozenset[str] = frozenset()

    def freeze_backbones(self, towers: tuple[str, ...] | list[str] = ("audio", "text")) -> None:
        """Freeze (and keep in eval mode) the named backbones; unfreeze the others."""
        unknown = set(towers) - {"audio", "text"}
        if unknown:
            raise ConfigError(f"train.frozen_backbones: unknown tower(s) {sorted(unknown)}; use audio and/or text")
        self.frozen = frozenset(towers)
        for name, p in self.named_parameters():
            tower = name.split(".", 1)[0]
            if tower in ("audio", "text"):
                p.requires_grad_(tower not in self.frozen and name in self._trainable)
        self.train(self.training)

    def train(self, mode: bool = True) -> ClapModel:
        super().train(mode)
        for tower in self.frozen:
            getattr(self, tower).eval()
        return self

    def forward(
        self,
        audio: torch.Tensor | None = None,
        tokens: dict[str, torch.Tensor] | None = None,
        x_a: torch.Tensor | None = None,
        x_t: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(E_a, E_t, scale) from waveforms and tokens, or from cached backbone outputs."""
        grad = torch.is_grad_enabled()
        if x_a is None:
            with torch.set_grad_enabled(grad and "audio" not in self.frozen):
                x_a = self.audio_backbone(audio)
        if x_t is None:
            with torch.set_grad_enabled(grad and "text" not in self.frozen):
                x_t = self.text_backbone(tokens)
        return self.project_audio(x_a), self.project_text(x_t), self.scale()

    # backbones -> x ; projectors -> E (L2-normalised)
    def audio_backbone(self, wave: torch.Tensor) -> torch.Tensor:
        return self.audio(wave)

    def text_backbone(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.text(tokens)

    def project_audio(self, x_a: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.audio_proj(x_a), dim=-1)

    def project_text(self, x_t: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(x_t), dim=-1)

    def encode_audio(self, wave: torch.Tensor) -> torch.Tensor:
        return self.project_audio(self.audio_backbone(wave))

    def encode_text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.project_text(self.text_backbone(tokens))

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp()

    def backbones(self) -> list[nn.Module]:
        return [self.audio, self.text]

    # --- checkpoints ---------------------------------------------------------------
    def head_state(self) -> dict[str, torch.Tensor]:
        """Everything but the text encoder (saved in its own HF folder)."""
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items() if not k.startswith("text.")}

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(self.cfg, indent=2))
        save_file(self.head_state(), str(folder / "model.safetensors"))
        self.text.save(folder / "text")

    @classmethod
    def load_as(cls, folder: str | Path, cfg: dict) -> ClapModel:
        """Load a checkpoint's weights under a new run's config (same architecture)."""
        model = cls.load(folder)
        arch = ("audio", "text", "projector")
        theirs = {k: model.cfg["model"][k] for k in arch}
        ours = {k: cfg["model"][k] for k in arch}
        for side in (theirs, ours):
            side["audio"] = {k: v for k, v in side["audio"].items() if k != "checkpoint"}
            side["text"] = {k: v for k, v in side["text"].items() if k != "name"}
        if theirs != ours or model.cfg["audio"]["sample_rate"] != cfg["audio"]["sample_rate"]:
            raise ConfigError(f"model.init_from = {folder}: its architecture differs from this config's model.*")
        model.cfg = cfg
        return model

    @classmethod
    def load(cls, folder: str | Path, map_location: str = "cpu") -> ClapModel:
        folder = Path(folder)
        for name in ("config.json", "model.safetensors", "text"):
            if not (folder / name).exists():
                raise ConfigError(
                    f"{folder}: not a clapkit checkpoint (no {name}); pass the checkpoint folder "
                    "that `clapkit train clap` or `clapkit demo` wrote"
                )
        cfg = json.loads((folder / "config.json").read_text())
        cfg["model"]["audio"]["checkpoint"] = None  # weights come from model.safetensors
        model = cls(cfg, text_path=str(folder / "text"))
        missing, unexpected = model.load_state_dict(load_file(str(folder / "model.safetensors"), device=map_location), strict=False)
        missing = [k for k in missing if not k.startswith("text.")]
        if missing or unexpected:
            raise ConfigError(f"{folder}/model.safetensors does not fit its config.json (missing {missing[:5]}, unexpected {unexpected[:5]})")
        return model
