"""What every public dual encoder (a model of another library) offers clapkit: its own
preprocessing and its own logits behind the dual-encoder interface. Below both wrappers
(:mod:`.hf` for transformers, :mod:`.open_clip`), so neither imports the other's base."""

from __future__ import annotations

import torch

from ...errors import ConfigError
from ..dual import Trainable


class PublicDualEncoder(Trainable):
    """A dual encoder from another library behind clapkit's interface: it preprocesses
    its own inputs (:meth:`preprocess`: decoded media -> input tensors) and scores
    with its own logits. Subclasses set ``family``, ``medium``, ``source``, ``text``
    (a tokenizer with ``tokenize(texts, device)`` and ``max_length``) and
    ``sample_rate`` (audio) and implement the backbones and projections."""

    family: str
    source: str
    sample_rate: int | None = None

    def preprocess(self, media: list, keys: list | None = None) -> dict[str, torch.Tensor]:
        """Decoded media -> the model's input tensors; ``keys`` (one per item: its path or
        shard key) seed any random choice the preprocessing makes."""
        raise NotImplementedError

    def bias(self) -> torch.Tensor | float:
        return 0.0

    def logits(self, e_m: torch.Tensor, e_t: torch.Tensor) -> torch.Tensor:
        """The model's own media-to-text logits."""
        return self.scale() * e_m @ e_t.T + self.bias()

    def for_training(self, cfg: dict, option: str = "model.init_from") -> PublicDualEncoder:
        raise ConfigError(f"{option} = {self.source}: clapkit fine-tunes public CLAP, CLIP and SigLIP models in transformers "
                          f"format; {self.family} models are for evaluation, audit and curation")


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
