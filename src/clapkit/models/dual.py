"""The dual encoder of CLAP and CLIP: a media backbone (audio or image) and a text
backbone, MLP projectors, a learnt temperature.

``model.modality`` says which medium the non-text tower holds. The tower is registered
under that name (``audio`` / ``image``, projector ``audio_proj`` / ``image_proj``), so
the weights of a checkpoint name their medium, and checkpoints written before images
existed (no ``model.modality``: audio) load unchanged. Everything else, the trainer,
the caches, evaluation, sees one interface: ``media_backbone`` -> x_m,
``project_media`` -> E_m, and their text twins.

A checkpoint is a directory::

    config.json         the full resolved config (model.modality names the medium)
    model.safetensors   media tower, projectors and logit scale
    text/               the text encoder as a Hugging Face folder (AutoModel,
                        AutoTokenizer and SentenceTransformer load it on its own)
    vision/             a Hugging Face image tower's config (its weights are in
                        model.safetensors), so the checkpoint loads without its source
    audio_tower/        a Hugging Face audio tower's config and feature extractor (the same)
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import ConfigError
from .text import resolve_text_head, text_encoder
from .towers.audio import build_audio_tower
from .towers.hf_audio import audio_settings
from .towers.image import build_image_tower, image_settings

MEDIA = ("audio", "image")
TOWER_CONFIG = {"audio": "audio_tower", "image": "vision"}  # an HF media tower's saved config, by medium


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


class Trainable(nn.Module):
    """What the trainer needs of a dual encoder beyond the backbones and projectors:
    the forward from media or cached backbone outputs, and freezing whole towers.

    A subclass sets ``medium``, ``frozen``, ``_trainable`` (names of the parameters a
    full fine-tune trains) and ``tower_prefixes`` (tower -> its parameter name prefix).
    """

    medium: str
    frozen: frozenset[str]
    _trainable: set[str]
    tower_prefixes: dict[str, str]

    def tower_name(self, name: str) -> str:
        """``media`` or this model's medium -> the medium; ``text`` -> ``text``."""
        if name in ("media", self.medium):
            return self.medium
        if name == "text":
            return "text"
        raise ConfigError(f"train.frozen_backbones / keep_frozen: unknown tower {name!r} for a "
                          f"{self.medium} model; use media (or {self.medium}) and/or text")

    def freeze_backbones(self, towers: tuple[str, ...] | list[str] = ("media", "text")) -> None:
        """Freeze (and keep in eval mode) the named backbones; unfreeze the others.

        A tower's prefix may be a tuple of prefixes (one ending in ``.`` takes what starts
        with it; another, that name and the names under it); names in the optional
        ``tower_projections`` (a projection inside a tower, after the x the frozen cache
        holds) stay as trainable as ``_trainable`` says."""
        def under(name: str, prefixes: str | tuple[str, ...]) -> bool:
            return any(name.startswith(p) if p.endswith(".") else name == p or name.startswith(f"{p}.")
                       for p in ((prefixes,) if isinstance(prefixes, str) else prefixes))

        self.frozen = frozenset(self.tower_name(t) for t in towers)
        kept = tuple(getattr(self, "tower_projections", ()))
        for name, p in self.named_parameters():
            for tower, prefixes in self.tower_prefixes.items():
                if under(name, prefixes):
                    frozen = tower in self.frozen and not under(name, kept)
                    p.requires_grad_(not frozen and name in self._trainable)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        for tower in self.frozen:
            prefixes = self.tower_prefixes[tower]
            for prefix in (prefixes,) if isinstance(prefixes, str) else prefixes:
                try:
                    self.get_submodule(prefix.rstrip(".")).eval()
                except AttributeError:  # a prefix naming a parameter (a positional embedding) has no mode
                    self.get_parameter(prefix)
        return self

    def forward(
        self,
        media: torch.Tensor | None = None,
        tokens: dict[str, torch.Tensor] | None = None,
        x_m: torch.Tensor | None = None,
        x_t: torch.Tensor | None = None,
        se_tokens: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """(E_m, E_t, scale) from media (waveforms or pixels) and tokens, or from cached
        backbone outputs; with ``se_tokens`` (the sentence-embedding loss's rows) also the
        text backbone's x_t of those rows, in the same forward (one DDP pass)."""
        grad = torch.is_grad_enabled()
        if x_m is None:
            with torch.set_grad_enabled(grad and self.medium not in self.frozen):
                x_m = self.media_backbone(media)
        if x_t is None:
            with torch.set_grad_enabled(grad and "text" not in self.frozen):
                x_t = self.text_backbone(tokens)
        out = (self.project_media(x_m), self.project_text(x_t), self.scale())
        return out if se_tokens is None else (*out, self.text_backbone(se_tokens))

    def encode_media(self, media) -> torch.Tensor:
        return self.project_media(self.media_backbone(media))

    def logit_scale_parameter(self) -> nn.Parameter | None:
        """The learnt log-scale that :meth:`scale` exponentiates (None: not learnt)."""
        return getattr(self, "logit_scale", None)

    @torch.no_grad()
    def cap_logit_scale(self, max_scale: float) -> None:
        """Clamp the learnt log-scale to [0, ln max_scale], as CLIP, open_clip, LAION-CLAP
        and CyCLIP do after every optimizer step (``max_scale`` 0: no cap)."""
        param = self.logit_scale_parameter()
        if max_scale and param is not None:
            param.clamp_(0.0, math.log(max_scale))

    def encode_text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.project_text(self.text_backbone(tokens))


class DualEncoder(Trainable):
    def __init__(self, cfg: dict, text_path: str | None = None, vision_path: str | None = None):
        super().__init__()
        cfg = copy.deepcopy(cfg)  # its own: what it resolves (an HF tower's size, auto pooling) is its metadata
        m = cfg["model"]
        self.cfg = cfg
        self.medium = m.get("modality", "audio")
        if self.medium not in MEDIA:
            raise ConfigError(f"model.modality = {self.medium!r}; choose audio or image")
        if self.medium == "audio":
            tower = build_audio_tower(m["audio"], cfg["audio"]["sample_rate"], vision_path)
            cfg["audio"] = audio_settings(cfg["audio"], tower)  # an HF tower's extractor's rate
        else:
            tower = build_image_tower(m["image"], cfg["image"]["size"], vision_path)
            cfg["image"] = image_settings(cfg["image"], tower)  # an HF folder's size, mean, std
        self.add_module(self.medium, tower)
        t = m["text"]
        self.text = text_encoder("model.text", t, text_path or t["name"])
        # auto and old names resolved; the checkpoint's text/ is saved with them
        t.update(pool=self.text.pool, head=self.text.head_type, head_at_eval=self.text.head_at_eval, pooling=None,
                 mlp_only_train=None)
        if not t.get("source"):  # a reloaded checkpoint keeps the source it was first built from
            t["source"] = self.text.source
        p = m["projector"]
        self.add_module(f"{self.medium}_proj", Projector(tower.embed_dim, p["dim"], p["hidden"], p["depth"], p["dropout"]))
        self.text_proj = Projector(self.text.embed_dim, p["dim"], p["hidden"], p["depth"], p["dropout"])
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / m["init_temperature"])), requires_grad=m["learn_temperature"]
        )
        self.logit_clamp = m["logit_clamp"]
        # Parameters a full fine-tune trains; the rest (PANNs' STFT basis and AudioSet
        # head, an unused BERT pooler) never get gradients.
        self._trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        self.frozen: frozenset[str] = frozenset()
        self.tower_prefixes = {self.medium: f"{self.medium}.", "text": "text."}

    @property
    def media_tower(self) -> nn.Module:
        return getattr(self, self.medium)

    @property
    def media_proj(self) -> nn.Module:
        return getattr(self, f"{self.medium}_proj")

    # backbones -> x ; projectors -> E (L2-normalised)
    def media_backbone(self, media: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """x_m of a batch tensor, or of padded clips ``{"wave", "mask"}`` (``audio.crop:
        variable``) for a tower that ``accepts_mask``."""
        if isinstance(media, dict) and "mask" in media:
            return self.media_tower(media["wave"], mask=media["mask"])
        return self.media_tower(media)

    def text_backbone(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.text(tokens)

    def project_media(self, x_m: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.media_proj(x_m).float(), dim=-1)

    def project_text(self, x_t: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(x_t).float(), dim=-1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp()

    def backbones(self) -> list[nn.Module]:
        return [self.media_tower, self.text]

    # --- checkpoints ---------------------------------------------------------------
    def head_state(self) -> dict[str, torch.Tensor]:
        """Everything but the text backbone (saved in its own HF folder): towers, projectors, a text MLP head."""
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()
                if not k.startswith("text.backbone.")}

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(self.cfg, indent=2))
        save_file(self.head_state(), str(folder / "model.safetensors"))
        self.text.save(folder / "text")
        if hasattr(self.media_tower, "save_config"):  # an HF tower: its config (and processor), not its source
            self.media_tower.save_config(folder / TOWER_CONFIG[self.medium])

    @classmethod
    def load_as(cls, folder: str | Path, cfg: dict) -> DualEncoder:
        """Load a checkpoint's weights under a new run's config (same architecture); the
        run's ``cfg`` is not changed (the model keeps its own resolved copy)."""
        cfg = copy.deepcopy(cfg)
        model = cls.load(folder)
        medium = model.medium
        if medium == "image":  # unset image settings are the checkpoint's own
            cfg["image"] = {k: model.cfg["image"][k] if v is None else v for k, v in cfg["image"].items()}
        arch = (medium, "text", "projector")
        theirs = {k: model.cfg["model"][k] for k in arch}
        ours = {k: cfg["model"][k] for k in arch}
        for side in (theirs, ours):
            side[medium] = {k: v for k, v in side[medium].items() if k != "checkpoint"}
            side["text"] = (resolve_text_head("model.text", side["text"]), side["text"]["max_length"])
        if ours["text"][0][0] == "auto":  # the checkpoint's own pooling and head
            ours["text"] = theirs["text"]
            pool, head, at_eval = theirs["text"][0]
            cfg["model"]["text"].update(pool=pool, head=head, head_at_eval=at_eval, pooling=None, mlp_only_train=None)
        inputs = ("audio", "sample_rate") if medium == "audio" else ("image", "size")
        same_input = model.cfg[inputs[0]][inputs[1]] == cfg[inputs[0]][inputs[1]]
        if cfg["model"].get("modality", "audio") != medium or theirs != ours or not same_input:
            raise ConfigError(f"model.init_from = {folder}: its architecture differs from this config's model.*")
        cfg["model"]["text"]["source"] = model.cfg["model"]["text"].get("source")
        model.cfg = cfg
        return model

    @classmethod
    def load(cls, folder: str | Path, map_location: str = "cpu") -> DualEncoder:
        folder = Path(folder)
        for name in ("config.json", "model.safetensors", "text"):
            if not (folder / name).exists():
                raise ConfigError(
                    f"{folder}: not a clapkit checkpoint (no {name}); pass the checkpoint folder "
                    "that `clapkit train clap`, `train clip` or `clapkit demo` wrote"
                )
        from ..config import complete

        cfg = complete(json.loads((folder / "config.json").read_text()))  # older checkpoints lack newer keys
        cfg["model"]["audio"]["checkpoint"] = cfg["model"]["image"]["checkpoint"] = None  # weights: model.safetensors
        tower = folder / TOWER_CONFIG[cfg["model"].get("modality", "audio")]
        model = cls(cfg, text_path=str(folder / "text"), vision_path=str(tower) if tower.is_dir() else None)
        missing, unexpected = model.load_state_dict(load_file(str(folder / "model.safetensors"), device=map_location), strict=False)
        missing = [k for k in missing if not k.startswith("text.backbone.")]
        if missing or unexpected:
            raise ConfigError(f"{folder}/model.safetensors does not fit its config.json (missing {missing[:5]}, unexpected {unexpected[:5]})")
        return model
