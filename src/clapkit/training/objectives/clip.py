"""CLIP's symmetric InfoNCE (:func:`clapkit.losses.clip_loss`), the default objective."""

from __future__ import annotations

from ...losses import clip_loss
from . import Objective, register


@register("clip")
class Clip(Objective):
    def setup(self, trainer) -> None:
        self.model = [trainer.model]  # a list: not a submodule of the objective

    def forward(self, e_m, e_t, scale, rows):
        return clip_loss(e_m, e_t, scale, self.model[0].logit_clamp)
