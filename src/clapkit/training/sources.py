"""Batch sources of the cross-modal recipe: the indexed epochs of a pair list (per-rank
shares of seeded global batches), and the shard stream. ``train cse`` draws its batches
by step (:class:`~clapkit.training.common.StepBatches`); the backbone by epoch order.

Every draw depends on (seed, epoch) or (seed, step) only, so a resumed run draws what
the uninterrupted one drew. With ``audio.crop: variable`` the epoch's batches group
clips of similar length (:func:`bucketed_batches`), their durations read once from the
file headers (:func:`bucket_seconds`)."""

from __future__ import annotations

import itertools

import numpy as np

from ..data.datasets import clip_seconds, epoch_loader, no_duplicate_batches
from ..data.records import Pair
from ..data.stream import ShardStream, stream_loader, stream_shards
from ..errors import ConfigError
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


def epoch_batches(pairs: list[Pair], cfg: dict, epoch: int, rank: int = 0, world: int = 1,
                  seconds: np.ndarray | None = None) -> list[list[int]]:
    """This process's share of each global batch of the epoch's seeded permutation
    (drawing it seeds torch for the epoch: see :func:`epoch_order`). With ``data.captions:
    one`` the epoch holds one caption per clip or image, drawn by (seed, epoch); with
    ``data.no_duplicate_media`` no batch holds two captions of one clip or image. With
    ``seconds`` (each pair's clip duration: :func:`bucket_seconds`) the batches group clips
    of similar length (:func:`bucketed_batches`)."""
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
    if seconds is not None:
        glob_batches = bucketed_batches(order, seconds, groups, cfg, epoch)
    elif d["no_duplicate_media"] and d["captions"] == "all":
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


def bucketed_batches(order: np.ndarray, seconds: np.ndarray, groups: list, cfg: dict, epoch: int) -> list[list[int]]:
    """The epoch's global batches of clips of similar length: ``order`` (the epoch's
    seeded rows) in chunks of ``data.bucket_batches`` batches, each chunk sorted by
    ``seconds`` (stable: equal lengths keep the permutation's order) and cut into batches,
    their order then shuffled by (seed, epoch). The rows and the number of full batches
    are those of the unbucketed epoch; with ``data.no_duplicate_media`` (every caption) the
    sorted rows go through :func:`no_duplicate_batches`, so a row passed over waits for the
    next batch (of the next chunk, at a chunk's end)."""
    d, bs = cfg["data"], cfg["train"]["batch_size"]
    n = len(order)
    size, per_epoch = min(bs, n), max(1, n // bs)
    no_duplicates = d["no_duplicate_media"] and d["captions"] == "all"
    rows = order if no_duplicates else order[: per_epoch * size]
    chunk = size * int(d["bucket_batches"])
    parts = [rows[a : a + chunk] for a in range(0, len(rows), chunk)]
    rows = np.concatenate([p[np.argsort(seconds[p], kind="stable")] for p in parts])
    if no_duplicates:
        found = list(itertools.islice(no_duplicate_batches(rows.tolist(), groups.__getitem__, size), per_epoch))
        batches = [b for b in found if len(b) == size] or found[:1]
    else:
        batches = [rows[a : a + size].tolist() for a in range(0, len(rows), size)]
    shuffle = np.random.default_rng((cfg["seed"], epoch, 17)).permutation(len(batches))
    return [batches[i] for i in shuffle]


def bucket_seconds(cfg: dict, model, pairs: list[Pair]) -> np.ndarray | None:
    """Each training pair's clip duration in seconds (file headers, read once; at most
    ``audio.max_seconds``) for the bucketed batches of ``audio.crop: variable``; None with
    a fixed crop. A tower that takes no mask, a public model (its own extractor) or the
    shard stream is a :class:`ConfigError`."""
    from ..models.dual import DualEncoder

    a = cfg["audio"]
    if a.get("crop", "fixed") != "variable" or cfg["model"].get("modality", "audio") != "audio":
        return None
    fix = "set audio.crop: fixed (one segment_seconds crop of every clip)"
    if not isinstance(model, DualEncoder):
        raise ConfigError(f"audio.crop: variable trains clapkit's own audio towers; a public model fine-tuned from "
                          f"model.init_from ({type(model).__name__}) takes its clips through its own feature extractor "
                          f"(and fusion): {fix}")
    if not getattr(model.media_tower, "accepts_mask", False):
        raise ConfigError(f"audio.crop: variable needs an audio tower that accepts a padding mask (small_cnn, cnn14, "
                          f"hf:PATH); model.audio.name = {cfg['model']['audio']['name']} "
                          f"({type(model.media_tower).__name__}) does not: {fix}, or choose one of those towers")
    if cfg["data"]["stream"]:
        raise ConfigError(f"audio.crop: variable batches indexed epochs by clip length; data.stream: true has no "
                          f"index of the clips: {fix}, or set data.stream: false")
    if int(cfg["data"]["bucket_batches"]) < 1:
        raise ConfigError(f"data.bucket_batches = {cfg['data']['bucket_batches']}: give 1 or more")
    return np.minimum(clip_seconds(pairs), float(a["max_seconds"]))


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
