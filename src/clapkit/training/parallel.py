"""How a recipe's model runs across processes (``runtime.parallel``) and compiled
(``runtime.compile``): the one place that wraps a model for training.

- ``ddp`` (the default under ``torchrun``): every process holds the whole model and
  its optimizer state; gradients are averaged (``DistributedDataParallel``).
- ``fsdp``: FSDP2 (``torch.distributed.fsdp.fully_shard``): not built yet.

A checkpoint is always written whole, by the first process.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP


def wrap_for_training(model: nn.Module, cfg: dict, device: torch.device, world: int,
                      find_unused: bool = False) -> nn.Module:
    """The module a training step calls: ``model`` itself in one process, wrapped by DDP
    under ``torchrun``, then compiled when ``runtime.compile`` asks
    (:func:`clapkit.training.compile.compiled`)."""
    net = model
    if world > 1:
        if cfg["runtime"]["parallel"] == "fsdp":
            raise NotImplementedError("runtime.parallel = fsdp")
        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                  find_unused_parameters=find_unused)
    from .compile import compiled

    return compiled(net, cfg["runtime"]["compile"])


def is_sharded(model: nn.Module) -> bool:
    return False


def local(t: torch.Tensor) -> torch.Tensor:
    return t


def whole(t: torch.Tensor) -> torch.Tensor:
    return t


def fill(target: torch.Tensor, full: torch.Tensor) -> None:
    target.copy_(full)


def full_model(model: nn.Module) -> nn.Module | None:
    """The model to save."""
    return model


def optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    return optimizer.state_dict()


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    optimizer.load_state_dict(saved)
