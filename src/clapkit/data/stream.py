"""Streaming WebDataset shards for training by steps (``data.stream: true``), for data
too large to index up front.

The stream is endless and seeded. Pass ``p`` over the data takes the shards in the
order of a permutation drawn from (seed, p); rank ``r`` of ``world`` takes every
``world``-th of them, and DataLoader worker ``w`` of ``W`` every ``W``-th of those, so
no two readers read the same shard. A reader indexes a shard when it reaches it (no
pass over all shards at start), puts its pairs (one per caption) through a shuffle
buffer of ``data.shuffle_buffer`` pairs seeded by (seed, rank, worker), and decodes a
pair only when it leaves the buffer, with the training draws (audio segment, image
crop) seeded by (seed, pass, its ordinal in the reader's stream). Each worker yields
whole batches; the DataLoader takes them from the workers in turn.

A reader's batch holds no two captions of one sample (``no_duplicates``: a pair whose
sample the batch already holds waits, in order, for the next batch, the rule of
sentence-transformers' ``NoDuplicatesBatchSampler``); ``one_caption`` keeps one caption
per sample and pass, drawn by (seed, pass, sample), as LAION-CLAP's loader does.

Resume: a run that has taken ``k`` batches skips them (worker ``w`` skips the batches
``w, w + W, ...`` below ``k``) by index only, without decoding, and continues exactly
when ``world`` and ``runtime.num_workers`` are those of the first run. The batches do
depend on the number of workers (they read different shards), unlike the indexed
(``data.stream: false``) path.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..errors import ConfigError, DataError
from .datasets import StarvedBatches, no_duplicate_batches, stack_media
from .files import Collector, Skipped
from .shards.wds import expand_shards, wds_pairs


def stream_shards(specs: list[str]) -> list[Path]:
    """The shard files of ``data.train`` for streaming: every spec must be ``wds:``."""
    shards: list[Path] = []
    for spec in specs:
        if not str(spec).startswith("wds:"):
            raise ConfigError(f"data.stream: true reads WebDataset shards; data.train has {spec!r} (write it as shards "
                              "with `clapkit shards`, or set data.stream: false)")
        found = expand_shards(str(spec)[4:])
        missing = [p for p in found if not p.is_file()]
        if not found or missing:
            raise DataError(f"no shard file at {missing[0] if missing else spec}", str(spec))
        shards += found
    return shards


class ShardStream(IterableDataset):
    """Batches ``(media tensor, captions)`` of one rank's share of the shards, endlessly."""

    def __init__(self, shards: list[Path], medium: str, decoder, batch_size: int, seed: int = 0, rank: int = 0,
                 world: int = 1, buffer: int = 1000, skip_batches: int = 0, skip_bad: bool = False,
                 no_duplicates: bool = False, one_caption: bool = False):
        self.shards, self.medium, self.decoder = list(shards), medium, decoder
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.buffer, self.skip_batches, self.skip_bad = max(1, buffer), skip_batches, skip_bad
        self.no_duplicates, self.one_caption = no_duplicates, one_caption
        self.skipped = Skipped()

    def readers(self, workers: int) -> None:
        """Refuse a split that leaves a reader without a shard."""
        if len(self.shards) < self.world * workers:
            raise ConfigError(f"data.stream: {len(self.shards)} shard(s) for {self.world} process(es) x {workers} "
                              "worker(s); each reader needs a shard of its own: write smaller shards "
                              "(clapkit shards --shard-size) or use fewer runtime.num_workers")

    def _shards(self, p: int, worker: int, workers: int) -> list[Path]:
        order = np.random.default_rng((self.seed, p, 7)).permutation(len(self.shards))
        return [self.shards[k] for k in order[self.rank :: self.world][worker::workers]]

    def _pairs(self, worker: int, workers: int) -> Iterator[tuple[int, object]]:
        for p in itertools.count():
            for tar in self._shards(p, worker, workers):
                c = Collector(self.skip_bad, self.skipped)
                wds_pairs(str(tar), self.medium, c)
                pairs = c.items
                if self.one_caption:  # one caption of each sample (its pairs are consecutive)
                    by_sample: dict[str, list] = {}
                    for pair in pairs:
                        by_sample.setdefault(pair.media_id, []).append(pair)
                    pairs = [caps[int(np.random.default_rng((self.seed, p, zlib.crc32(key.encode()))).integers(len(caps)))]
                             for key, caps in by_sample.items()]
                for pair in pairs:
                    yield p, pair

    def _shuffled(self, worker: int, workers: int) -> Iterator[tuple[int, int, object]]:
        """(pass, ordinal, pair) through the seeded shuffle buffer."""
        rng = np.random.default_rng((self.seed, self.rank, worker, 11))
        buf: list = []
        for ordinal, (p, pair) in enumerate(self._pairs(worker, workers)):
            buf.append((p, ordinal, pair))
            if len(buf) < self.buffer:
                continue
            j = int(rng.integers(len(buf)))
            buf[j], buf[-1] = buf[-1], buf[j]
            yield buf.pop()

    def _batches(self, worker: int, workers: int) -> Iterator[list]:
        """This reader's batches of (pass, ordinal, pair), undecoded; without the rule
        every entry is its own group (ordinals are unique), so batches are plain runs."""
        group = (lambda e: e[2].media_id) if self.no_duplicates else (lambda e: e[1])
        try:
            yield from no_duplicate_batches(self._shuffled(worker, workers), group, self.batch_size,
                                            max_waiting=64 * self.batch_size + self.buffer)
        except StarvedBatches as exc:  # the reader has too few samples
            raise ConfigError(
                f"data.no_duplicate_media: a reader of {len(self._shards(0, worker, workers))} shard(s) "
                f"cannot fill a batch of {self.batch_size} distinct samples; lower train.batch_size, "
                "use fewer runtime.num_workers or set data.no_duplicate_media: false") from exc

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[str]]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        batches = self._batches(worker, workers)
        for _ in range(len(range(worker, self.skip_batches, workers))):  # resume: by index only, nothing decoded
            next(batches)
        for batch in batches:
            tensors = [self.decoder.draw(pair, np.random.default_rng((self.seed, p, o, worker, self.rank)))
                       for p, o, pair in batch]
            yield stack_media(tensors), [pair.caption for _, _, pair in batch]


def stream_loader(stream: ShardStream, workers: int, pin_memory: bool = False) -> DataLoader:
    stream.readers(max(1, workers))
    return DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(stream.seed), prefetch_factor=4 if workers else None)
