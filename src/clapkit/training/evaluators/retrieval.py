"""``train.eval.retrieval: SPEC``: R@1/5/10 on caption pairs, the mean of both directions."""

from __future__ import annotations

from . import register_evaluator


@register_evaluator("retrieval", ("retrieval_r1", "retrieval_r5", "retrieval_r10"), needs="media")
class Retrieval:
    def __init__(self, spec: str, cfg: dict, medium: str):
        from ...data.files import Skipped
        from ...data.media import load_media_pairs

        self.data = load_media_pairs(cfg, spec, Skipped(), checked=True)

    def __call__(self, model, batch_size: int, device) -> dict:
        from ...evaluation.retrieval import retrieval_eval

        r, m = retrieval_eval(model, self.data, batch_size=batch_size, device=device), model.medium
        return {f"retrieval_r{k}": 0.5 * (r[f"text_to_{m}"][f"R@{k}"] + r[f"{m}_to_text"][f"R@{k}"]) for k in (1, 5, 10)}
