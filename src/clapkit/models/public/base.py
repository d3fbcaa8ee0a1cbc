"""What every public dual encoder (a model of another library) offers clapkit: its own
preprocessing and its own logits behind the dual-encoder interface. Below both wrappers
(:mod:`.hf` for transformers, :mod:`.open_clip`), so neither imports the other's base."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import ConfigError
from ..dual import Trainable


class PublicDualEncoder(Trainable):
    """A dual encoder from another library behind clapkit's interface: it preprocesses
    its own inputs (:meth:`preprocess`: decoded media -> input tensors) and scores
    with its own logits. Subclasses build their modules and ``text`` (a tokenizer with
    ``tokenize(texts, device)`` and ``max_length``), then :meth:`declare` what they are, and
    implement the backbones and projections."""

    family: str
    source: str
    sample_rate: int | None = None

    def declare(self, family: str, medium: str, source: str, tower_prefixes: dict[str, str],
                sample_rate: int | None = None, trainable: bool = True) -> None:
        """What every wrapper states once its modules are built: its family, medium, source and
        sample rate, the parameter prefix of each tower (what ``freeze_backbones`` freezes),
        every parameter trainable (``trainable=False``: none), no logit clamp, and the
        ``cfg`` that names it in results."""
        self.family, self.medium, self.source, self.sample_rate = family, medium, source, sample_rate
        self.frozen: frozenset[str] = frozenset()
        self.tower_prefixes = tower_prefixes
        self._trainable = {n for n, _ in self.named_parameters()} if trainable else set()
        self.logit_clamp = None
        self.cfg = {"model": {"modality": medium, "source": source, "family": family}}

    def preprocess(self, media: list, keys: list | None = None) -> dict[str, torch.Tensor]:
        """Decoded media -> the model's input tensors; ``keys`` (one per item: its path or
        shard key) seed any random choice the preprocessing makes."""
        raise NotImplementedError

    def bias(self) -> torch.Tensor | float:
        return 0.0

    def logits(self, e_m: torch.Tensor, e_t: torch.Tensor) -> torch.Tensor:
        """The model's own media-to-text logits."""
        return self.scale() * e_m @ e_t.T + self.bias()

    def _fine_tune(self, cfg: dict, unused: set[str]) -> PublicDualEncoder:
        """Train every parameter but ``unused`` (those the loss never reaches), with the run's
        logit clamp; ``cfg`` (the model's own copy of the run's config) becomes its config."""
        self._trainable = {n for n, _ in self.named_parameters() if n not in unused}
        for n, p in self.named_parameters():
            p.requires_grad_(n in self._trainable)
        self.logit_clamp = cfg["model"]["logit_clamp"]
        self.cfg = cfg
        return self

    def for_training(self, cfg: dict, option: str = "model.init_from") -> PublicDualEncoder:
        raise ConfigError(f"{option} = {self.source}: clapkit fine-tunes public CLAP, CLIP and SigLIP models in transformers "
                          f"format and open_clip's image models; {self.family} models are for evaluation, audit and curation")


class WeightFileDualEncoder(PublicDualEncoder):
    """A dual encoder rebuilt from another package's weight file (LAION-CLAP's PANN checkpoints,
    msclap's): an audio tower ``audio`` fed waveforms (``{"wave": (B, T)}`` from
    :meth:`preprocess`, or the tensor itself), a ``text_model``, a projection head on each
    (``audio_projection``, ``text_projection``) whose output, L2-normalised, is E, and a learnt
    ``logit_scale`` (its ``exp`` is the scale). Subclasses build them and define the backbones."""

    @staticmethod
    def waves(inputs: dict[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        return inputs["wave"] if isinstance(inputs, dict) else inputs

    def project_media(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.audio_projection(x).float(), dim=-1)

    def project_text(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_projection(x).float(), dim=-1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp()

    def logit_scale_parameter(self) -> torch.nn.Parameter:
        return self.logit_scale


class Tokens:
    """A transformers tokenizer behind clapkit's ``model.text.tokenize``: ``padding`` as the
    model was trained (True: the longest text; ``"max_length"``: to :attr:`max_length`),
    truncation on, ``input_ids`` and ``attention_mask`` on ``device``."""

    def __init__(self, tokenizer, padding: str | bool):
        self.tokenizer, self.padding = tokenizer, padding
        self.max_length: int | None = None  # None: the tokenizer's own model_max_length

    def tokenize(self, texts: list[str], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        out = self.tokenizer(list(texts), padding=self.padding, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return {k: v.to(device) if device is not None else v for k, v in out.items() if k in ("input_ids", "attention_mask")}
