"""Contrastive losses, one function each, with their formulas.

Cross-process gathering lives here too: under DistributedDataParallel the loss is
computed over the *global* batch, with features gathered from every process with
gradients (:func:`gather_with_grad`). Every process then holds
the same loss; its backward sends each process the gradient of the full loss with
respect to its own features, summed over the processes' identical copies (x world
size), and DDP's gradient averaging divides by the world size again, so the parameter
gradients equal those of one process on the global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward hands each process the summed gradient of its own slice.

    Backward all-reduces (sums) the gradient of the gathered tensor over processes and
    keeps this process's rows; all_reduce works on every backend (gloo, NCCL), unlike
    reduce_scatter. Every process must contribute the same number of rows.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = (dist.get_rank() * x.shape[0], (dist.get_rank() + 1) * x.shape[0])
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rows[0] : ctx.rows[1]]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all processes (rank order), keeping the autograd graph."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def clip_logits(a: torch.Tensor, t: torch.Tensor, logit_scale: torch.Tensor | float, clamp: float | None = 100.0) -> torch.Tensor:
    """C = clamp(s * A T^T, -c, c) for L2-normalised rows A (audio) and T (text)."""
    logits = logit_scale * (a @ t.T)
    return logits.clamp(-clamp, clamp) if clamp else logits


def clip_loss(
    a: torch.Tensor, t: torch.Tensor, logit_scale: torch.Tensor | float, clamp: float | None = 100.0
) -> torch.Tensor:
    """Symmetric InfoNCE of CLIP/CLAP.

    With C = clamp(s * A T^T, -c, c) over a batch of N matched pairs (row i of A with
    row i of T):

        L = 1/2 * [ CE(C, I) + CE(C^T, I) ],  CE(C, I) = -1/N sum_i log softmax_j(C_ij)|_{j=i}

    ``s`` is the inverse temperature (exp of the learnt log-scale). The clamp bounds the
    logits (the CLAP-pitfalls paper uses c = 100); ``clamp=None`` turns it off.
    """
    if a.shape != t.shape:
        raise ValueError(f"audio {tuple(a.shape)} and text {tuple(t.shape)} embeddings differ in shape")
    logits = clip_logits(a, t, logit_scale, clamp)
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
