"""``train.eval.sts_dev: stsb:DIR``: STS-B dev Spearman x 100 of the text tower's x_t."""

from __future__ import annotations

from . import register_evaluator


@register_evaluator("sts_dev", ("stsb_dev",), needs="text")
class StsDev:
    def __init__(self, spec: str, cfg: dict, medium: str | None):
        from ...data.text.sts import load_sts

        self.data = load_sts(spec, "dev")[0]

    def __call__(self, model, batch_size: int, device) -> dict:
        from ...evaluation.sts import SentenceEncoder, evaluate_set

        return {"stsb_dev": evaluate_set(SentenceEncoder.of_model(model, device=device), self.data, batch_size)["spearman"]}
