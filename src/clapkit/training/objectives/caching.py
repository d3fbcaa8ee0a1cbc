"""Any cross-modal objective with gradient caching over both towers (``train.cache_chunk``):
a global batch larger than memory on one device, the plain step's loss and gradients
(:func:`clapkit.losses.cached_cross_modal_backward`; BatchNorm in training sees chunks, as
in GradCache)."""

from __future__ import annotations

import torch

from ...losses import cached_cross_modal_backward


def cached_objective(model, precision, chunk: int, media, tokens, x_m, x_t, loss_of) -> torch.Tensor:
    """``loss_of(e_m, e_t)`` over the batch, its gradients accumulated into the parameters
    chunk by chunk; the detached loss. ``media`` / ``tokens`` or the frozen cache's ``x_m``
    / ``x_t`` (a tensor, or a dict of them: tokens, a fused CLAP's inputs)."""
    n = _rows(media if x_m is None else x_m)
    spans = [slice(i, min(i + chunk, n)) for i in range(0, n, chunk)]

    def encode_media(span):
        with precision.autocast():
            x = x_m[span] if x_m is not None else model.media_backbone(_take(media, span))
            return model.project_media(x).float()

    def encode_text(span):
        with precision.autocast():
            x = x_t[span] if x_t is not None else model.text_backbone(_take(tokens, span))
            return model.project_text(x).float()

    loss = cached_cross_modal_backward(encode_media, encode_text, spans, spans,
                                       lambda e_m, e_t: precision.scale(loss_of(e_m, e_t)))
    if precision.scaler.is_enabled():
        loss = loss / precision.scaler.get_scale()
    return loss


def _rows(x) -> int:
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def _take(x, span: slice):
    """Rows ``span`` of a batch: a tensor, or a dict of them."""
    return {k: v[span] for k, v in x.items()} if isinstance(x, dict) else x[span]
