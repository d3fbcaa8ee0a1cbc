"""Batch sources of the cross-modal recipe: the indexed epochs of a pair list (per-rank
shares of seeded global batches), and the shard stream. ``train cse`` draws its batches
by step (:class:`~clapkit.training.common.StepBatches`); the backbone by epoch order.

Every draw depends on (seed, epoch) or (seed, step) only, so a resumed run draws what
the uninterrupted one drew."""

from __future__ import annotations

import itertools

import numpy as np

from ..data.datasets import epoch_loader, no_duplicate_batches
from ..data.records import Pair
from ..data.stream import ShardStream, stream_loader, stream_shards
from .common import epoch_order


def epoch_size(pairs: list[Pair], cfg: dict) -> int:
    """Pairs an epoch draws from: all of them, or one per clip or image (``data.captions: one``)."""
    if cfg["data"]["captions"] == "one":
        return len({p.media_id for p in pairs})
    return len(pairs)


def batches_per_epoch(pairs: list[Pair], cfg: dict) -> int:
    """Full global batches per epoch (at least one, smaller, when the data is smaller).
    With ``data.no_duplicate_media`` an epoch may hold fewer (the rows left over are
    those that would repeat a clip in a batch)."""
    return max(1, epoch_size(pairs, cfg) // cfg["train"]["batch_size"])


def epoch_batches(pairs: list[Pair], cfg: dict, epoch: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """This process's share of each global batch of the epoch's seeded permutation
    (drawing it seeds torch for the epoch: see :func:`epoch_order`). With ``data.captions:
    one`` the epoch holds one caption per clip or image, drawn by (seed, epoch); with
    ``data.no_duplicate_media`` no batch holds two captions of one clip or image."""
    d, bs, seed = cfg["data"], cfg["train"]["batch_size"], cfg["seed"]
    rows = np.arange(len(pairs))
    groups = [p.media_id for p in pairs]
    if d["captions"] == "one":
        rng = np.random.default_rng((seed, epoch, 13))
        by_media: dict[str, list[int]] = {}
        for i, g in enumerate(groups):
            by_media.setdefault(g, []).append(i)
        rows = np.array([r[int(rng.integers(len(r)))] for r in by_media.values()])
    order = rows[epoch_order(seed, epoch, len(rows), rank)]
    n, per_epoch = len(order), batches_per_epoch(pairs, cfg)
    if d["no_duplicate_media"] and d["captions"] == "all":
        size = min(bs, n)
        found = list(itertools.islice(no_duplicate_batches(order.tolist(), groups.__getitem__, size), per_epoch))
        glob_batches = [b for b in found if len(b) == size] or found[:1]  # a tiny set still gives a step
    else:
        glob_batches = [order[b * bs : b * bs + min(bs, n)].tolist() for b in range(per_epoch)]
    out = []
    for glob in glob_batches:
        per_rank = len(glob) // world
        out.append(list(glob[rank * per_rank : (rank + 1) * per_rank]))
    return out


class EpochLoader:
    """Decoded batches of given indices from one persistent DataLoader (its workers and
    their wave caches live across epochs): ``(idx, media, None)`` per batch."""

    def __init__(self, dataset, num_workers: int, pin_memory: bool):
        self.args, self._loader = (dataset, num_workers, pin_memory), None

    def epoch(self, epoch: int, batches: list[list[int]]):
        if self._loader is None:
            self._loader, self._sampler = epoch_loader(*self.args)
        self._sampler.set(epoch, batches)
        return ((idx.tolist(), media, None) for media, idx in self._loader)


class Stream:
    """The shard stream's batches ``(media, captions)``, built on first use, skipping the
    batches a resumed run's steps already took (``skip()`` gives their number then)."""

    def __init__(self, cfg: dict, medium: str, dataset, rank: int, world: int, pin_memory: bool, skip):
        self.cfg, self.medium, self.dataset, self.rank, self.world = cfg, medium, dataset, rank, world
        self.pin_memory, self.skip, self._it = pin_memory, skip, None

    def __next__(self):
        if self._it is None:
            d = self.cfg["data"]
            stream = ShardStream(stream_shards(d["train"]), self.medium, self.dataset,
                                 self.cfg["train"]["batch_size"] // self.world, self.cfg["seed"], self.rank, self.world,
                                 d["shuffle_buffer"], skip_batches=self.skip(), skip_bad=self.cfg["runtime"]["skip_bad"],
                                 no_duplicates=d["no_duplicate_media"], one_caption=d["captions"] == "one")
            self._it = iter(stream_loader(stream, self.cfg["runtime"]["num_workers"], self.pin_memory))
        return next(self._it)
