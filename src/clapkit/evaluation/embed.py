"""Deterministic embedding of audio clips and texts with a CLAP model (eval mode,
centre segments, no randomness)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data.datasets import ClipDataset, collate_clips
from ..models.clap import ClapModel


@torch.no_grad()
def embed_audio(
    model: ClapModel, items: Sequence, batch_size: int = 32, projected: bool = True,
    device: str | torch.device = "cpu", num_workers: int = 0, progress: bool = False,
) -> np.ndarray:
    """E_a (projected, L2-normalised) or x_a (backbone output) of ``items`` (have ``.media``)."""
    model.eval()
    a = model.cfg["audio"]
    ds = ClipDataset(items, a["sample_rate"], a["segment_seconds"], a["normalize"], train=False)
    out = []
    loader = DataLoader(ds, batch_size=batch_size, collate_fn=collate_clips, num_workers=num_workers)
    if progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc="audio", leave=False, disable=None)  # off when not a terminal
    for waves, _ in loader:
        x = model.audio_backbone(waves.to(device))
        out.append((model.project_audio(x) if projected else x).float().cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def embed_text(
    model: ClapModel, texts: Sequence[str], batch_size: int = 64, projected: bool = True,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """E_t (projected, L2-normalised) or x_t (backbone output) of ``texts``."""
    model.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        x = model.text_backbone(model.text.tokenize(texts[i : i + batch_size], device))
        out.append((model.project_text(x) if projected else x).float().cpu())
    return torch.cat(out).numpy()
