"""The one entry point through which every evaluation embeds a set's media: plain, in
sliding windows (:mod:`.windows`), and through the embedding cache (:mod:`.cache`); the
top of :mod:`clapkit.inference` (it imports the others, none imports it)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .cache import EmbeddingCache
from .embed import media_features
from .windows import pooled_features, window_features


def embed_items(
    model, items: Sequence, kinds: Sequence[str] = ("E",), batch_size: int = 32, device="cpu", num_workers: int = 0,
    cache=None, model_spec=None, windows=None, pooled: bool = True, progress: bool = False,
) -> tuple[dict[str, np.ndarray], dict]:
    """The ``kinds`` of media features of ``items`` and a record of how they were made:
    ``cache`` (reused / computed counts, with an embedding-cache folder keyed by
    ``model_spec``'s fingerprint), ``windows`` (:class:`~clapkit.inference.windows.Windows`:
    the window record; mean-pooled per item, or with ``pooled=False`` one row per window
    and the record's ``owner``: each window's item). Every command that embeds a set's
    media for evaluation comes through here."""
    info: dict = {}
    if windows is not None and not pooled:
        feats, owner, info["windows"] = window_features(model, items, kinds, windows, batch_size, device, num_workers,
                                                        progress)
        info["owner"] = owner
        return feats, info
    if cache is None:
        if windows is None:
            return media_features(model, items, tuple(kinds), batch_size, device, num_workers, progress), info
        feats, info["windows"] = pooled_features(model, items, kinds, windows, batch_size, device, num_workers, progress)
        return feats, info
    store = EmbeddingCache(cache, model_spec, model_loader=lambda: model, batch_size=batch_size, device=device,
                           num_workers=num_workers)
    feats = store.media_features(items, tuple(kinds), windows)
    info["cache"] = dict(store.stats)
    if windows is not None:
        info["windows"] = store.window_record or {"window": windows.seconds, "hop": windows.step, "pool": windows.pool,
                                                  "windows": "all from the cache"}
    return feats, info
