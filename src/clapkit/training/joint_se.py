"""S0's joint training: ``train.se.weight`` x a SimCSE loss on the text tower's backbone
output x_t, added to the cross-modal objective of a CLAP/CLIP run (the same tower).

``train.se.loss`` picks the rows: ``captions`` (unsupervised, two dropout views of the
batch's own captions), ``corpus`` (unsupervised, ``train.se.corpus``) or ``nli``
(supervised, ``train.se.nli`` triplets), the last two by a seeded stream of their own
(:class:`~clapkit.training.common.StepBatches`), so resume stays exact. The term is
computed in the joint forward (one DDP pass) over the global batch, or in its own
forward with gradient caching (``train.se.cache_chunk``, one process). Weight 0 is plain
cross-modal training, bit for bit.
"""

from __future__ import annotations

import torch

from ..data.text import load_corpus, load_nli
from ..errors import ConfigError
from ..losses import cached_contrastive_backward, gather_with_grad, simcse_loss, simcse_sup_loss
from .common import StepBatches


class JointSE:
    """The sentence-embedding term of one CLAP/CLIP trainer (see the module docstring)."""

    def __init__(self, cfg: dict, trainer):
        self.cfg, self.s = cfg, cfg["train"]["se"]
        self.model, self.precision, self.device = trainer.model, trainer.precision, trainer.device
        self.rank, self.world = trainer.rank, trainer.world
        self.train_pairs = trainer.data.train
        self.data = self._data(trainer.data.skipped)

    def _data(self, skipped) -> list | None:
        """The sentence corpus or NLI triplets of ``train.se`` (read with ``train cse``'s loaders)."""
        s = self.s
        if not s["weight"]:
            return None
        if s["cache_chunk"] and self.world > 1:
            raise ConfigError("train.se.cache_chunk works in one process; under torchrun lower train.se.batch_size "
                              "(each process holds its share) and set cache_chunk: 0")
        if s["loss"] == "captions":
            return None
        if s["batch_size"] < 2 or s["batch_size"] % self.world:
            raise ConfigError(f"train.se.batch_size = {s['batch_size']}: give at least 2, divisible by the "
                              f"{self.world} processes")
        skip = self.cfg["runtime"]["skip_bad"]
        data = load_corpus(s["corpus"], skip, skipped) if s["loss"] == "corpus" else load_nli(s["nli"], skip, skipped)
        if len(data) < s["batch_size"]:
            raise ConfigError(f"train.se.{s['loss']}: {len(data)} examples for train.se.batch_size = {s['batch_size']}")
        self._batches = StepBatches(self.cfg["seed"], 21, len(data), s["batch_size"])
        return data

    def rows(self, idx: list[int] | None, captions: list[str] | None, step: int) -> tuple[list[str], int] | None:
        """This process's rows of step ``step``'s SE loss, or None (weight 0, or the text
        tower frozen): the captions of the batch twice, or the step's share of a seeded
        permutation of the corpus (``[s; s]``) or of the triplets (``[a; p; h]``)."""
        s = self.s
        if not s["weight"] or "text" in self.model.frozen:
            return None
        if s["loss"] == "captions":
            caps = captions if captions is not None else [self.train_pairs[i].caption for i in idx]
            return caps + caps, len(caps)
        share = s["batch_size"] // self.world
        mine = self._batches(step)[self.rank * share : (self.rank + 1) * share]
        if s["loss"] == "corpus":
            sentences = [self.data[i] for i in mine]
            return sentences + sentences, len(sentences)
        t = [self.data[i] for i in mine]
        return [x.anchor for x in t] + [x.positive for x in t] + [x.negative for x in t], len(t)

    def term(self, se: tuple[list[str], int], z: torch.Tensor | None, state: dict) -> torch.Tensor:
        """``weight x`` the SE loss on the rows ``se``: from ``z`` (the x_t the joint forward
        returned), or in its own forward (``train.se.cache_chunk``: gradient caching, its
        gradient back-propagated here and the detached value returned). The unweighted
        value goes to ``state["se_loss"]``."""
        s = self.s
        rows, n = se
        if z is not None:
            se_loss = self.loss(z.float(), n, gather=True)
            state["se_loss"] = float(se_loss.detach())
            return s["weight"] * se_loss
        chunk = s["cache_chunk"] or len(rows)
        chunks = [rows[i : i + chunk] for i in range(0, len(rows), chunk)]

        def encode(part):
            with self.precision.autocast():
                return self.model.text_backbone(self.model.text.tokenize(part, self.device)).float()

        se_loss = cached_contrastive_backward(
            encode, chunks, lambda z: self.precision.scale(s["weight"] * self.loss(z, n))) / s["weight"]
        if self.precision.scaler.is_enabled():
            se_loss = se_loss / self.precision.scaler.get_scale()
        state["se_loss"] = float(se_loss.detach())
        return s["weight"] * se_loss.detach()  # its gradient is already in place

    def loss(self, z: torch.Tensor, n: int, gather: bool = False) -> torch.Tensor:
        """Unsupervised SimCSE on ``[s; s]`` or supervised SimCSE on ``[a; p; h]`` rows of
        ``n`` each (gathered over the processes: the global SE batch)."""
        s = self.s
        parts = [z[k * n : (k + 1) * n] for k in range(len(z) // n)]
        if gather:
            parts = [gather_with_grad(p) for p in parts]
        if len(parts) == 2:
            return simcse_loss(parts[0], parts[1], s["temperature"])
        return simcse_sup_loss(*parts, s["temperature"], s["hard_negative_weight"])
