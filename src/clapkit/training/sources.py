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
    if d["no_duplicate_media"] and d["captions"] == "all":
        size = min(bs, n)
        found = list(itertools.islice(no_duplicate_batches(order.tolist(), groups.__getitem__, size), per_epoch))
        glob_batches = [b for b in found if len(b) == size] or found[:1]  # a tiny set still gives a step
    else:
        glob_batches = [order[b * bs : b * bs + min(bs, n)].tolist() for b in range(per_epoch)]
    if seconds is not None:
        glob_batches = bucketed_batches(glob_batches, seconds, groups, cfg, epoch)
    out = []
    for glob in glob_batches:
        per_rank = len(glob) // world
        out.append(list(glob[rank * per_rank : (rank + 1) * per_rank]))
    return out


def bucketed_batches(batches: list[list[int]], seconds: np.ndarray, groups: list, cfg: dict,
                     epoch: int) -> list[list[int]]:
    """The epoch's global ``batches`` regrouped into batches of clips of similar length:
    the same rows in as many batches of the same sizes, their order shuffled by (seed, epoch).

    Chunks of ``data.bucket_batches`` consecutive batches are regrouped each. Under
    ``data.no_duplicate_media`` a row's *layer* is its clip's count of rows before it in the
    chunk (0 for a clip's first caption, 1 for its second, ...; else every row is in layer
    0); each layer's rows are sorted by ``seconds`` (stable),
    ascending and descending in turn, so a layer's end meets the next layer's rows of
    similar length; the chunk's rows in that order are cut into its batches. A clip's
    captions are in different layers, so only a batch across two layers can hold one clip
    twice; with ``data.no_duplicate_media`` such a row is swapped with the row of closest
    length in another batch of the chunk that holds neither's clip (:func:`_apart`)."""
    d = cfg["data"]
    rule = d["no_duplicate_media"] and d["captions"] == "all"
    chunk = int(d["bucket_batches"])
    out: list[list[int]] = []
    for c in range(0, len(batches), chunk):
        part = batches[c : c + chunk]
        rows = [r for b in part for r in b]
        seen: dict = {}
        layers: list[list[int]] = []
        for r in rows:
            k = seen.get(groups[r], 0) if rule else 0  # without the rule: one layer, sorted by length
            seen[groups[r]] = k + 1
            if k == len(layers):
                layers.append([])
            layers[k].append(r)
        ordered = []
        for k, layer in enumerate(layers):
            by_length = sorted(layer, key=lambda r: seconds[r])  # stable: equal lengths keep the epoch's order
            ordered += by_length if k % 2 == 0 else by_length[::-1]
        cuts = np.cumsum([0] + [len(b) for b in part])
        regrouped = [ordered[a:z] for a, z in zip(cuts[:-1], cuts[1:], strict=True)]
        if rule:
            regrouped = _apart(regrouped, groups, seconds) or part
        out += regrouped
    shuffle = np.random.default_rng((cfg["seed"], epoch, 17)).permutation(len(out))
    return [out[i] for i in shuffle]


def _apart(batches: list[list[int]], groups: list, seconds: np.ndarray) -> list[list[int]] | None:
    """``batches`` with no clip twice in a batch: each second row of a clip is swapped with
    the row of closest length (then the first found) in another batch where the swap
    repeats no clip; None if some row has no such partner (a chunk of very few clips)."""
    held = [{} for _ in batches]  # batch -> clip -> rows of it
    for held_b, b in zip(held, batches, strict=True):
        for r in b:
            held_b[groups[r]] = held_b.get(groups[r], 0) + 1
    for i, b in enumerate(batches):
        for k in range(len(b)):
            r = b[k]
            if held[i][groups[r]] == 1:
                continue
            best = None
            for j, other in enumerate(batches):
                if j == i or groups[r] in held[j]:
                    continue
                for m, q in enumerate(other):
                    if groups[q] not in held[i] and (best is None or abs(seconds[q] - seconds[r]) < best[0]):
                        best = (abs(seconds[q] - seconds[r]), j, m)
            if best is None:
                return None
            _, j, m = best
            q = batches[j][m]
            b[k], batches[j][m] = q, r
            for held_b, out_g, in_g in ((held[i], groups[r], groups[q]), (held[j], groups[q], groups[r])):
                held_b[out_g] -= 1
                if not held_b[out_g]:
                    del held_b[out_g]
                held_b[in_g] = held_b.get(in_g, 0) + 1
    return batches


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
