"""``train.eval.zeroshot: SPEC``: zero-shot top-1/top-5 on a labelled set."""

from __future__ import annotations

import math

from . import register_evaluator


@register_evaluator("zeroshot", ("zeroshot_top1", "zeroshot_top5", "zeroshot_mAP"), needs="media")
class ZeroShot:
    def __init__(self, spec: str, cfg: dict, medium: str):
        from ...data.media import load_labelled_media

        self.data = load_labelled_media(spec, medium, skip_bad=cfg["runtime"]["skip_bad"], checked=True)

    def __call__(self, model, batch_size: int, device) -> dict:
        from ...evaluation.zeroshot import zeroshot_eval

        r = zeroshot_eval(model, self.data, batch_size=batch_size, device=device)
        return {"zeroshot_top1": r.get("top1", math.nan), "zeroshot_top5": r.get("top5", math.nan),
                "zeroshot_mAP": r.get("mAP", math.nan)}
