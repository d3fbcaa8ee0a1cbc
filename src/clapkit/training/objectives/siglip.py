"""SigLIP's pairwise sigmoid loss (Zhai et al., 2023; :func:`clapkit.losses.siglip_loss`).

The learnt bias b of ``s * A T^T + b``: a public SigLIP's own ``logit_bias`` when the
model has one (fine-tuning ``google/siglip-*`` keeps training it), else a parameter of
this objective, started at SigLIP's -10 (``train.siglip_bias_init``), trained with the
model and saved with the run. SigLIP also starts its scale at 10: for a model trained
from scratch give ``--set model.init_temperature=0.1``. At evaluation the bias does not
change a ranking, so zero-shot and retrieval need nothing of it."""

from __future__ import annotations

import torch

from ...losses import siglip_loss
from . import Objective, register


@register("siglip")
class SigLip(Objective):
    def __init__(self, cfg: dict):
        super().__init__(cfg)
        self.logit_bias = torch.nn.Parameter(torch.tensor(float(cfg["train"].get("siglip_bias_init", -10.0))))

    def setup(self, trainer) -> None:
        own = getattr(trainer.model, "logit_bias_parameter", lambda: None)()
        self.bias = [own] if own is not None else None
        if own is not None:  # the model's own bias trains; this one stays out of the optimizer
            self.logit_bias.requires_grad_(False)

    def forward(self, e_m, e_t, scale, rows):
        bias = self.bias[0] if self.bias is not None else self.logit_bias
        return siglip_loss(e_m, e_t, scale, bias.float())
