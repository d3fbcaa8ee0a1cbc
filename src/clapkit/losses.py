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


def clip_logits(a: torch.Tensor, t: torch.Tensor, logit_scale: torch.Tensor | float, clamp: float | None = None) -> torch.Tensor:
    """C = s * A T^T for L2-normalised rows A (audio) and T (text); with ``clamp`` = c,
    clamp(C, -c, c) (the CLAP-pitfalls recipe's option)."""
    logits = logit_scale * (a @ t.T)
    return logits.clamp(-clamp, clamp) if clamp else logits


def clip_loss(
    a: torch.Tensor, t: torch.Tensor, logit_scale: torch.Tensor | float, clamp: float | None = None
) -> torch.Tensor:
    """Symmetric InfoNCE of CLIP/CLAP.

    With C = s * A T^T over a batch of N matched pairs (row i of A with row i of T):

        L = 1/2 * [ CE(C, I) + CE(C^T, I) ],  CE(C, I) = -1/N sum_i log softmax_j(C_ij)|_{j=i}

    ``s`` is the inverse temperature (exp of the learnt log-scale). The references
    (CLIP, open_clip, LAION-CLAP, CyCLIP) never clamp the logits; they cap the scale
    after each optimizer step (``train.max_logit_scale``, see
    :meth:`~clapkit.models.dual.Trainable.cap_logit_scale`). ``clamp`` = c clamps C to
    [-c, c] as well, the CLAP-pitfalls recipe (c = 100, its ``paper`` preset); clamped
    entries get no gradient.
    """
    if a.shape != t.shape:
        raise ValueError(f"audio {tuple(a.shape)} and text {tuple(t.shape)} embeddings differ in shape")
    logits = clip_logits(a, t, logit_scale, clamp)
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def siglip_loss(
    a: torch.Tensor, t: torch.Tensor, logit_scale: torch.Tensor | float, logit_bias: torch.Tensor | float
) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss (Zhai et al., ICCV 2023), as open_clip's ``SigLipLoss``.

    With logits Z = s * A T^T + b over a batch of N matched pairs (s the exp of the learnt
    log-scale, b the learnt bias; SigLIP starts at s = 10, b = -10) and labels
    Y = 2 I - 1 (+1 for a matched pair, -1 for every other):

        L = -1/N * sum_{i,j} log sigmoid(Y_ij Z_ij)

    Every pair is its own binary problem, so no softmax over the batch. Under DDP pass the
    gathered global batch, as for :func:`clip_loss` (the gradients then equal one process's).
    """
    if a.shape != t.shape:
        raise ValueError(f"media {tuple(a.shape)} and text {tuple(t.shape)} embeddings differ in shape")
    logits = logit_scale * (a @ t.T) + logit_bias
    labels = 2 * torch.eye(len(a), device=a.device, dtype=logits.dtype) - 1
    return -F.logsigmoid(labels * logits).sum() / len(a)


def cyclip_regularisers(a: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CyCLIP's cyclic-consistency terms (Goel et al., NeurIPS 2022), on L2-normalised
    rows A (media) and T (text) of a batch of N matched pairs:

        in-modal     L_I = 1/N * sum_{j,k} ( <A_j, A_k> - <T_j, T_k> )^2
        cross-modal  L_C = 1/N * sum_{j,k} ( <A_j, T_k> - <A_k, T_j> )^2

    L_I asks the media-media and text-text similarity structures to agree; L_C asks
    the similarity of each mismatched pair to be symmetric. The scale 1/N (a mean over
    the N^2 entries times N) is that of the authors' code, where the CyCLIP loss is
    L_CLIP + lambda_1 L_I + lambda_2 L_C with lambda_1 = lambda_2 = 0.25. Under DDP pass
    the gathered global batch, as for :func:`clip_loss`. Returns (L_I, L_C).
    """
    if a.shape != t.shape:
        raise ValueError(f"media {tuple(a.shape)} and text {tuple(t.shape)} embeddings differ in shape")
    n = a.shape[0]
    at = a @ t.T
    in_modal = (a @ a.T - t @ t.T).square().sum() / n
    cross_modal = (at - at.T).square().sum() / n
    return in_modal, cross_modal


def teacher_targets(
    teacher_a: torch.Tensor, teacher_t: torch.Tensor, temperature: float, similarity: str = "mean"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft targets from a teacher's intra-batch similarities (rows sum to 1).

    S is the teacher's similarity between the batch items: audio-audio ``A A^T`` (``aa``),
    text-text ``T T^T`` (``tt``), audio-text ``A T^T`` (``at``), or the mean of ``aa``
    and ``tt`` (``mean``). Targets are ``softmax(S / temperature)`` row-wise for the
    audio-to-text direction and ``softmax(S^T / temperature)`` for text-to-audio.
    """
    a, t = teacher_a.detach(), teacher_t.detach()
    if similarity == "aa":
        s = a @ a.T
    elif similarity == "tt":
        s = t @ t.T
    elif similarity == "at":
        s = a @ t.T
    elif similarity == "mean":
        s = 0.5 * (a @ a.T + t @ t.T)
    else:
        raise ValueError(f"similarity {similarity!r}: choose aa, tt, at or mean")
    return torch.softmax(s / temperature, dim=1), torch.softmax(s.T / temperature, dim=1)


def soft_clip_loss(
    a: torch.Tensor, t: torch.Tensor, logit_scale: torch.Tensor | float,
    teacher_a: torch.Tensor, teacher_t: torch.Tensor, weight: float = 0.5,
    temperature: float = 0.1, similarity: str = "mean", clamp: float | None = None,
) -> torch.Tensor:
    """Soft-labelled CLIP loss: items similar in the teacher's eyes are not pure negatives.

    With logits C = s * A T^T (clamped as in :func:`clip_loss`), hard targets I and the teacher's soft
    targets Y_at, Y_ta (:func:`teacher_targets`), the targets are mixed as
    ``(1 - weight) * I + weight * Y`` and

        L = 1/2 * [ H(C, (1-w) I + w Y_at) + H(C^T, (1-w) I + w Y_ta) ],
        H(C, Y) = -1/N sum_i sum_j Y_ij log softmax_j(C_i).

    ``weight = 0`` is exactly :func:`clip_loss`; ``weight = 1`` uses the teacher only.
    """
    logits = clip_logits(a, t, logit_scale, clamp)
    y_at, y_ta = teacher_targets(teacher_a, teacher_t, temperature, similarity)
    eye = torch.eye(logits.shape[0], device=logits.device, dtype=logits.dtype)
    y_at = (1 - weight) * eye + weight * y_at.to(logits.dtype)
    y_ta = (1 - weight) * eye + weight * y_ta.to(logits.dtype)
    return 0.5 * (F.cross_entropy(logits, y_at) + F.cross_entropy(logits.T, y_ta))


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def simcse_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """Unsupervised SimCSE (Gao et al., 2021): in-batch InfoNCE between two dropout views.

    ``z1[i]`` and ``z2[i]`` encode sentence i twice (different dropout masks; pass the
    batch once as ``[s; s]`` so the masks are drawn per row). With cos the cosine
    similarity and tau the temperature:

        L = -1/N sum_i log( exp(cos(z1_i, z2_i) / tau) / sum_j exp(cos(z1_i, z2_j) / tau) )
    """
    logits = _cos(z1, z2) / temperature
    return F.cross_entropy(logits, torch.arange(len(z1), device=z1.device))


def simcse_sup_loss(
    z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor, temperature: float = 0.05,
    hard_negative_weight: float = 0.0,
) -> torch.Tensor:
    """Supervised SimCSE: premise ``z1``, entailment ``z2`` (positive), contradiction
    ``z3`` (hard negative), over N x 2N logits [cos(z1, z2) | cos(z1, z3)] / tau:

        L = -1/N sum_i log( exp(c_ii) / (sum_j exp(c_ij) + sum_j exp(h_ij + w [i = j])) )

    with c = cos(z1, z2) / tau, h = cos(z1, z3) / tau and ``w = hard_negative_weight``
    added to each anchor's own hard negative (SimCSE's option; 0 by default).
    """
    c, h = _cos(z1, z2) / temperature, _cos(z1, z3) / temperature
    h = h + hard_negative_weight * torch.eye(len(z1), device=z1.device, dtype=h.dtype)
    return F.cross_entropy(torch.cat([c, h], dim=1), torch.arange(len(z1), device=z1.device))


def supcon_loss(
    z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor | None = None, temperature: float = 0.07
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al., 2020) over two views of N samples.

    The 2N views V = [z1; z2] are anchors; the positives P(i) of anchor i are the other
    views with the same label (its own other view always among them); A(i) is every
    view but i:

        L = 1/|I| sum_{i in I} -1/|P(i)| sum_{p in P(i)} log( exp(s_ip / tau) / sum_{a in A(i)} exp(s_ia / tau) )

    with s the cosine similarity and I the anchors that have a positive (so no NaN).
    Without labels every sample is its own class and this is SimCLR's NT-Xent
    (:func:`nt_xent_loss`).
    """
    n = len(z1)
    views = torch.cat([z1, z2])
    if labels is None:
        labels = torch.arange(n, device=z1.device)
    labels = torch.cat([labels, labels])
    logits = _cos(views, views) / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z1.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~self_mask
    counts = pos.sum(1)
    has = counts > 0
    mean_log_prob = (log_prob.masked_fill(~pos, 0.0).sum(1)[has]) / counts[has]
    return -mean_log_prob.mean()


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """SimCLR's NT-Xent: each of the 2N views has its other view as the one positive and
    the remaining 2N - 2 views as negatives (= :func:`supcon_loss` without labels)."""
    return supcon_loss(z1, z2, None, temperature)


class _RngState:
    """The CPU (and current CUDA device's) random state, to replay dropout masks."""

    def __init__(self):
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda)


def cached_contrastive_backward(encode, chunks: list, loss_fn) -> torch.Tensor:
    """Gradient caching (Gao et al., 2021): a contrastive loss over a large batch in the
    memory of one chunk.

    1. Embed every chunk with ``encode`` without a graph, remembering the random state
       before each chunk.
    2. Compute ``loss_fn`` on all embeddings (a leaf tensor) and back-propagate to them.
    3. Embed each chunk again *with* a graph after restoring its random state, so the
       dropout masks equal those of step 1, and back-propagate the cached gradients.

    The parameter gradients equal those of embedding the chunks with a graph and taking
    the loss directly. Returns the (detached) loss; gradients are accumulated into the
    parameters, as ``loss.backward()`` would.
    """
    states, reps = [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(_RngState())
            reps.append(encode(chunk))
    after = _RngState()
    full = torch.cat(reps).detach().requires_grad_()
    loss = loss_fn(full)
    loss.backward()
    grads = full.grad.split([len(r) for r in reps])
    for chunk, state, grad in zip(chunks, states, grads, strict=True):
        state.restore()
        encode(chunk).backward(grad)
    after.restore()  # leave the generator where an uncached pass would
    return loss.detach()


def cached_cross_modal_backward(encode_media, encode_text, media_chunks: list, text_chunks: list,
                                loss_fn) -> torch.Tensor:
    """Gradient caching for a two-tower loss (CLIP, SigLIP, CyCLIP over a global batch
    larger than memory): :func:`cached_contrastive_backward` for two encoders.

    The media chunks, then the text chunks, are embedded without a graph (each chunk's
    random state remembered); ``loss_fn(e_m, e_t)`` runs on all of them as leaves and
    back-propagates to them (and to its own parameters: the scale, SigLIP's bias); then
    every chunk is embedded again *with* a graph from its remembered state and its slice
    of the cached gradient is back-propagated. Peak memory is one chunk's activations
    plus the embeddings. The parameter gradients equal those of embedding the same chunks
    in the same order with a graph and taking the loss directly. Returns the (detached)
    loss; gradients are accumulated into the parameters."""
    sides = ((encode_media, media_chunks), (encode_text, text_chunks))
    states: list[list[_RngState]] = [[], []]
    reps: list[list[torch.Tensor]] = [[], []]
    with torch.no_grad():
        for k, (encode, chunks) in enumerate(sides):
            for chunk in chunks:
                states[k].append(_RngState())
                reps[k].append(encode(chunk))
    after = _RngState()
    full = [torch.cat(r).detach().requires_grad_() for r in reps]
    loss = loss_fn(*full)
    loss.backward()
    for k, (encode, chunks) in enumerate(sides):
        grads = full[k].grad.split([len(r) for r in reps[k]])
        for chunk, state, grad in zip(chunks, states[k], grads, strict=True):
            state.restore()
            encode(chunk).backward(grad)
    after.restore()
    return loss.detach()
