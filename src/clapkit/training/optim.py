"""Optimizers and schedules the recipes share."""

from __future__ import annotations

import math

import torch


def build_optimizer(model: torch.nn.Module, t: dict, lr: float) -> torch.optim.Optimizer:
    """Adam or AdamW over the trainable parameters, weight decay on the matrices and
    kernels only: biases, norm scales and the temperature (every 0-d and 1-d tensor)
    are never decayed, as in open_clip."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    plain = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": t["weight_decay"]}, {"params": plain, "weight_decay": 0.0}]
    opt = torch.optim.AdamW if t["optimizer"] == "adamw" else torch.optim.Adam
    return opt([g for g in groups if g["params"]], lr=lr, betas=tuple(t["betas"]), eps=t["eps"])


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """open_clip's schedule, stepped once per optimisation step: lr * (s + 1) / warmup
    for the first ``warmup`` steps, then lr * 0.5 * (1 + cos(pi * e / (total - warmup)))
    with e the steps since the warmup ended."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        e, span = step - warmup, max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(e, span) / span))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def linear_decay(optimizer: torch.optim.Optimizer, total: int, kind: str = "linear") -> torch.optim.lr_scheduler.LambdaLR:
    """SimCSE's schedule (``transformers``' linear decay to 0 over ``total`` steps, no
    warmup), or ``constant``; stepped once per optimisation step."""
    factor = (lambda s: max(0.0, 1.0 - s / total)) if kind == "linear" else (lambda s: 1.0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
