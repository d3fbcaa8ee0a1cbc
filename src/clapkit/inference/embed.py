"""Deterministic embedding of media (audio clips or images) and texts with a dual
encoder (eval mode, centre segments or centre crops, no randomness)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data.datasets import collate_clips
from ..data.media import media_dataset
from ..models.dual import DualEncoder


@torch.no_grad()
def embed_media(
    model: DualEncoder, items: Sequence, batch_size: int = 32, projected: bool = True,
    device: str | torch.device = "cpu", num_workers: int = 0, progress: bool = False,
) -> np.ndarray:
    """E_m (projected, L2-normalised) or x_m (backbone output) of ``items`` (have ``.media``)."""
    model.eval()
    ds = media_dataset(model.cfg, items, train=False)
    out = []
    loader = DataLoader(ds, batch_size=batch_size, collate_fn=collate_clips, num_workers=num_workers)
    if progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc=model.medium, leave=False, disable=None)  # off when not a terminal
    for media, _ in loader:
        x = model.media_backbone(media.to(device))
        out.append((model.project_media(x) if projected else x).float().cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def embed_text(
    model: DualEncoder, texts: Sequence[str], batch_size: int = 64, projected: bool = True,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """E_t (projected, L2-normalised) or x_t (backbone output) of ``texts``."""
    model.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        x = model.text_backbone(model.text.tokenize(texts[i : i + batch_size], device))
        out.append((model.project_text(x) if projected else x).float().cpu())
    return torch.cat(out).numpy()
