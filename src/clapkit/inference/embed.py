"""Deterministic embedding of media (audio clips or images) and texts with a dual
encoder (eval mode, centre segments or centre crops, no randomness).

A clapkit :class:`DualEncoder` gets clapkit's own input pipeline; a public model
(:class:`~clapkit.models.public.base.PublicDualEncoder`) gets the decoded media through its own
feature extractor or image processor (:meth:`preprocess`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data.datasets import collate_clips
from ..data.media import RawMedia, media_dataset
from ..models.dual import DualEncoder
from ..models.public.base import PublicDualEncoder

FEATURES = ("x", "E")  # the backbone output x and the projected, normalised E
PRECISIONS = ("fp32", "bf16")


def inference_precision(name: str, device):
    """The context every evaluation runs in: ``fp32``, or ``bf16`` autocast on the
    device (CPU or CUDA; embeddings leave the models as fp32 either way)."""
    from ..errors import ConfigError

    if name not in PRECISIONS:
        raise ConfigError(f"--precision {name!r}: choose {' or '.join(PRECISIONS)}")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=name == "bf16")


def precision_tag() -> str:
    """``"bf16"`` inside a bf16 autocast, else ``""`` (so cached features of the two
    precisions are kept apart)."""
    for device in ("cpu", "cuda"):
        if torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.bfloat16:
            return "bf16"
    return ""


def unit_rows(a: np.ndarray) -> np.ndarray:
    """Each row of ``a`` scaled to length 1 (an all-zero row stays zero), in ``a``'s dtype."""
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


class _Preprocess:
    """Collate for a public model: its own preprocessing of a batch of decoded media."""

    def __init__(self, model: PublicDualEncoder, items: Sequence):
        self.model, self.items = model, items

    def __call__(self, batch: list) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        media, idx = zip(*batch, strict=True)
        keys = [str(self.items[i].media) for i in idx]  # each clip's random draws seeded by its file
        return self.model.preprocess(list(media), keys), torch.tensor(idx)


def media_loader(model, items: Sequence, batch_size: int, num_workers: int = 0) -> DataLoader:
    """Batches ``(inputs, indices)`` of ``items`` for the model's media tower, in order."""
    if isinstance(model, PublicDualEncoder):
        ds = RawMedia(items, model.medium, model.sample_rate)
        collate = _Preprocess(model, ds.items)
    else:
        ds, collate = media_dataset(model.cfg, items, train=False), collate_clips
    return DataLoader(ds, batch_size=batch_size, collate_fn=collate, num_workers=num_workers)


def to_device(inputs, device):
    """A tensor or a dict of tensors on ``device``."""
    if isinstance(inputs, dict):
        return {k: v.to(device) for k, v in inputs.items()}
    return inputs.to(device)


def embed_media(
    model: DualEncoder, items: Sequence, batch_size: int = 32, projected: bool = True,
    device: str | torch.device = "cpu", num_workers: int = 0, progress: bool = False,
) -> np.ndarray:
    """E_m (projected, L2-normalised) or x_m (backbone output) of ``items`` (have ``.media``)."""
    kind = "E" if projected else "x"
    return media_features(model, items, (kind,), batch_size, device, num_workers, progress)[kind]


@torch.no_grad()
def media_features(
    model: DualEncoder, items: Sequence, kinds: Sequence[str] = ("x", "E"), batch_size: int = 32,
    device: str | torch.device = "cpu", num_workers: int = 0, progress: bool = False,
) -> dict[str, np.ndarray]:
    """``{"x": backbone outputs, "E": projected L2-normalised embeddings}`` of ``items``
    (the ``kinds`` asked for), from one pass of the media tower. Under ``torchrun`` each
    process embeds every ``world``-th batch and all get the whole result, in item order
    (:mod:`clapkit.distributed`)."""
    from ..distributed import gather_batches, my_batches

    bad = set(kinds) - set(FEATURES)
    if bad or not kinds:
        raise ValueError(f"features {sorted(bad) or list(kinds)}: choose from {', '.join(FEATURES)}")
    model.eval()
    n_batches = -(-len(items) // batch_size)
    mine = my_batches(n_batches)
    share = [item for b in mine for item in items[b * batch_size : (b + 1) * batch_size]]
    loader = media_loader(model, share, batch_size, num_workers)
    if progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc=model.medium, leave=False, disable=None)  # off when not a terminal
    done = {}
    for b, (media, _) in zip(mine, loader, strict=True):
        x = model.media_backbone(to_device(media, device))
        done[b] = {k: (x if k == "x" else model.project_media(x)).float().cpu().numpy() for k in kinds}
    parts = gather_batches(done, n_batches)
    return {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros((0, 0), np.float32) for k in kinds}


@torch.no_grad()
def embed_text(
    model: DualEncoder, texts: Sequence[str], batch_size: int = 64, projected: bool = True,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """E_t (projected, L2-normalised) or x_t (backbone output) of ``texts``; under
    ``torchrun`` split by batches as :func:`media_features` is."""
    from ..distributed import gather_batches, my_batches

    model.eval()
    n_batches = -(-len(texts) // batch_size)
    done = {}
    for b in my_batches(n_batches):
        x = model.text_backbone(model.text.tokenize(list(texts[b * batch_size : (b + 1) * batch_size]), device))
        done[b] = (model.project_text(x) if projected else x).float().cpu().numpy()
    parts = gather_batches(done, n_batches)
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

