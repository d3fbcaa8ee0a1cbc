"""The one entry point through which every evaluation embeds a set's media: plain, in
sliding windows (:mod:`.windows`), and through the embedding cache (:mod:`.cache`); the
top of :mod:`clapkit.inference` (it imports the others, none imports it)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .cache import EmbeddingCache
from .embed import media_features
from .windows import cut_windows, pool_mean


def embed_items(
    model, items: Sequence, kinds: Sequence[str] = ("E",), batch_size: int = 32, device="cpu", num_workers: int = 0,
    cache=None, model_spec=None, windows=None, pooled: bool = True, progress: bool = False,
) -> tuple[dict[str, np.ndarray], dict]:
    """The ``kinds`` of media features of ``items`` and a record of how they were made:
    ``cache`` (reused / computed counts, with an embedding-cache folder keyed by
    ``model_spec``'s fingerprint), ``windows`` (:class:`~clapkit.inference.windows.Windows`:
    the window record; mean-pooled per item, or with ``pooled=False`` one row per window
    and the record's ``owner``: each window's item). Every command that embeds a set's
    media for evaluation comes through here.

    With windows, the cache holds each *window* (keyed by its clip, start and length), so
    mean and max pooling share it, and so do runs whose hops put windows at the same
    places; its counts are then counts of windows."""
    info: dict = {}
    work = items
    if windows is not None:
        work, owner, info["windows"] = cut_windows(model, items, windows)
    if cache is None:
        feats = media_features(model, work, tuple(kinds), batch_size, device, num_workers, progress)
    else:
        store = EmbeddingCache(cache, model_spec, model_loader=lambda: model, batch_size=batch_size, device=device,
                               num_workers=num_workers)
        feats = store.media_features(work, tuple(kinds))
        info["cache"] = dict(store.stats)
    if windows is not None:
        if pooled:
            feats = pool_mean(feats, owner, len(items))
        else:
            info["owner"] = owner
    return feats, info
