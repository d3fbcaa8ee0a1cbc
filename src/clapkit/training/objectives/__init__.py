"""Cross-modal training objectives, one formula a file, chosen by ``train.loss``.

An objective is a ``torch.nn.Module`` (its own parameters, such as SigLIP's bias, train
with the model and are saved with the run) registered under a name::

    @register("my_loss")
    class MyLoss(Objective):
        def forward(self, e_m, e_t, scale, rows):
            ...

It receives the L2-normalised embeddings of the *global* batch (gathered over the
processes, so the gradients equal one process's), the model's logit scale, and
:class:`Rows` (which split and which pairs; what a teacher-based objective looks up).
The trainer adds CyCLIP's regularisers and the sentence-embedding term around it,
validates with it (``train.val_objective: train``) and can compute it with gradient
caching (``train.cache_chunk``). Every file of this package is imported the first time an
objective is looked up, so adding one is its file alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import ConfigError

OBJECTIVES: dict[str, type[Objective]] = {}


def register(name: str):
    """Register an :class:`Objective` subclass as ``train.loss = name``."""
    def add(cls: type[Objective]) -> type[Objective]:
        cls.name = name
        OBJECTIVES[name] = cls
        return cls

    return add


@dataclass
class Rows:
    """Which pairs a batch holds: ``split`` (train or val) and, for an objective that
    declares ``uses_rows``, the row indices of the batch into it (training: the global
    batch, every process's share in rank order, as the embeddings are gathered); None
    otherwise, and for a streamed batch, which has no index."""

    split: str
    idx: list[int] | None


class Objective(torch.nn.Module):
    """Base class: ``check(cfg)`` before any data is read, ``setup(trainer)`` once the
    trainer has its model and data, ``forward(e_m, e_t, scale, rows)`` the loss."""

    name = ""
    uses_rows = False  # reads Rows.idx (a teacher's per-pair embeddings): gathered under DDP only then

    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg

    @classmethod
    def check(cls, cfg: dict) -> None:
        """Refuse a config this objective cannot train with (raise ConfigError)."""

    def setup(self, trainer) -> None:
        """Look up what the objective needs from the trainer (model, data, device)."""

    def forward(self, e_m: torch.Tensor, e_t: torch.Tensor, scale: torch.Tensor, rows: Rows) -> torch.Tensor:
        raise NotImplementedError


def objective_class(cfg: dict) -> type[Objective]:
    from ...discovery import import_package

    import_package(__name__)  # each file registers its objective
    name = cfg["train"]["loss"]
    if name not in OBJECTIVES:
        raise ConfigError(f"train.loss = {name!r}; choose one of {sorted(OBJECTIVES)}")
    cls = OBJECTIVES[name]
    cls.check(cfg)
    return cls

