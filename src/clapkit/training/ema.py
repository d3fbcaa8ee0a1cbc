"""An exponential moving average of a model's weights (``train.ema``).

After every applied optimizer step (a step the loop skips as non-finite is not
averaged; under fp16 a step the gradient scaler skips is, as in timm), with ``s`` the
run's step count after it::

    s <= start_step + 1:  ema = weights                   (the average has not begun)
    s >  start_step + 1:  ema = decay * ema + (1 - decay) * weights

timm's ``ModelEmaV3`` rule (``update_after_step = start_step``, no warmup: its
``get_decay`` is 0 up to step ``update_after_step + 1``; tested against timm), over every
floating parameter *and* buffer (BatchNorm's running statistics are averaged too, as timm
does by default); integer buffers (``num_batches_tracked``) are copied. The average is kept
in the tensors' own dtype and device, in ``last/trainer_state.pt`` (so ``--resume``
continues it exactly), and is swapped into the model for evaluation
(``train.ema.eval``) and for writing ``checkpoint/`` (``train.ema.checkpoint``), which then
records it in ``weights.json``.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

WEIGHTS_FILE = "weights.json"  # beside a checkpoint's weights: which weights they are


class WeightAverage:
    """The EMA of ``model``'s parameters and buffers (see the module docstring)."""

    def __init__(self, model: nn.Module, decay: float, start_step: int = 0):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema.decay = {decay}: give a value in (0, 1), e.g. 0.999")
        self.decay, self.start_step = float(decay), int(start_step)
        self.names = [n for n, _ in self._tensors(model)]
        self.shadow = [t.detach().clone() for _, t in self._tensors(model)]
        self.updates = 0  # steps averaged (after start_step)
        self.step = 0  # the run's step of the last update

    @staticmethod
    def _tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
        return [*model.named_parameters(), *model.named_buffers()]

    def _pairs(self, model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        current = dict(self._tensors(model))
        return [(s, current[n]) for n, s in zip(self.names, self.shadow, strict=True)]

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Average in ``model``'s weights after the run's ``step``-th step."""
        pairs = self._pairs(model)
        self.step = step
        if step <= self.start_step + 1:
            for s, t in pairs:
                s.copy_(t)
            return
        self.updates += 1
        avg = [(s, t) for s, t in pairs if s.is_floating_point()]
        for sharded in (True, False):  # FSDP's shards apart from whole tensors (buffers): one foreach takes one kind
            group = [(s, t) for s, t in avg if hasattr(s, "device_mesh") == sharded]
            if group:
                torch._foreach_lerp_([s for s, _ in group], [t.detach() for _, t in group], 1.0 - self.decay)
        for s, t in pairs:
            if not s.is_floating_point():
                s.copy_(t)

    @contextmanager
    @torch.no_grad()
    def applied(self, model: nn.Module):
        """``model`` holding the average for the duration, its own weights restored after."""
        pairs = self._pairs(model)
        saved = [t.detach().clone() for _, t in pairs]
        try:
            for s, t in pairs:
                t.copy_(s)
            yield model
        finally:
            for (_, t), w in zip(pairs, saved, strict=True):
                t.copy_(w)

    def state_dict(self) -> dict:
        """The average, whole, on the CPU (gathered under FSDP: every process calls it; the
        first process keeps it, the others get None in its place)."""
        from ..distributed import is_main
        from .parallel import whole

        main, shadow = is_main(), []
        for s in self.shadow:
            full = whole(s.detach())  # one tensor at a time
            if main:
                shadow.append(full.cpu())
        return {"names": list(self.names), "shadow": shadow if main else None, "updates": self.updates,
                "step": self.step, "decay": self.decay, "start_step": self.start_step}

    def load_state_dict(self, saved: dict) -> None:
        if list(saved["names"]) != self.names:
            raise ValueError("last/trainer_state.pt: its weight average holds other tensors than this model; "
                             "start without --resume")
        from .parallel import fill

        for s, t in zip(self.shadow, saved["shadow"], strict=True):
            fill(s, t.to(s.device))
        self.updates, self.step = int(saved["updates"]), int(saved["step"])

    def record(self, folder: Path) -> None:
        """``weights.json`` in a checkpoint written from the average: what it holds."""
        info = {"weights": "ema", "decay": self.decay, "start_step": self.start_step, "updates": self.updates,
                "step": self.step}
        (Path(folder) / WEIGHTS_FILE).write_text(json.dumps(info, indent=2) + "\n")
