"""Torch datasets over pairs and labelled clips, with seeded, resumable randomness.

Random choices (training segments) come from a generator seeded by
``(seed, epoch, index)``, never from global state, so a run resumed at epoch k draws
exactly what an uninterrupted run draws, whatever the number of loader workers.

Training loaders are built once and keep their workers (and the decoded waves each
worker caches) for the whole run: :class:`EpochBatches` hands every index to the
workers together with its epoch, since a worker's copy of the dataset never sees a
``set_epoch`` made in the main process.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import DataError
from .audio.io import (
    AudioError,
    audio_info,
    cap_length,
    declared_wav_frames,
    fix_length,
    load_audio,
    normalize,
)
from .files import Skipped, keep_good
from .records import ArrayAudio, Window


class WaveCache:
    """Decoded, resampled waveforms kept in memory up to ``max_mb`` (least recently used out)."""

    def __init__(self, sample_rate: int, max_mb: float = 1024):
        self.sample_rate = sample_rate
        self.max_bytes = int(max_mb * 2**20)
        self.bytes = 0
        self.items: OrderedDict[Path, np.ndarray] = OrderedDict()

    def get(self, path: Path, where: str | None = None) -> np.ndarray:
        if path in self.items:
            self.items.move_to_end(path)
            return self.items[path]
        wave = load_audio(path, self.sample_rate, where)
        if wave.nbytes <= self.max_bytes:
            self.items[path] = wave
            self.bytes += wave.nbytes
            while self.bytes > self.max_bytes:
                _, old = self.items.popitem(last=False)
                self.bytes -= old.nbytes
        return wave


def check_audio_files(items: Sequence, skip_bad: bool, skipped: Skipped) -> list:
    """Open every distinct audio file's header; drop (and count) or raise on bad ones.

    ``items`` have ``.media`` and ``.where``. This catches missing, unreadable, corrupt
    and empty files before training starts instead of hours into it.
    """
    bad: dict[Path, DataError] = {}
    for item in items:
        if item.media in bad:
            continue
        try:
            if isinstance(item.media, Path) and not item.media.is_file():
                raise AudioError("audio file not found", f"{item.where}: {item.media}", reason="audio file not found")
            info = audio_info(item.media)
            if info.frames == 0:
                raise AudioError("audio file holds no samples", f"{item.where}: {item.media}", reason="empty audio")
            declared = declared_wav_frames(item.media)
            if declared is not None and info.frames < declared:
                raise AudioError(f"truncated: the WAV header declares {declared} frames, the file holds {info.frames}",
                                 f"{item.where}: {item.media}", reason="truncated audio")
        except AudioError as exc:
            bad[item.media] = exc
        except Exception as exc:  # soundfile raises several types for unreadable files
            bad[item.media] = AudioError(f"cannot read audio ({exc})", f"{item.where}: {item.media}", reason="unreadable audio")
    return keep_good(list(items), bad, skip_bad, skipped, "audio file(s)")


class SeededItems(Dataset):
    """The item protocol of the training loaders: item ``i`` (at the dataset's epoch) or
    ``(epoch, i)`` (what :class:`EpochBatches` sends to workers) -> (tensor, i), every
    random draw made by :meth:`rng` from (seed, epoch, i). Subclasses set ``items``,
    ``train``, ``seed`` and define :meth:`tensor`."""

    items: list
    train: bool = False
    seed: int = 0
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def rng(self, i: int, epoch: int | None) -> np.random.Generator | None:
        """Item ``i``'s generator for ``epoch`` (the dataset's when None); None in evaluation."""
        epoch = self.epoch if epoch is None else epoch
        return np.random.default_rng((self.seed, epoch, i)) if self.train else None

    def draw(self, item, rng: np.random.Generator | None) -> torch.Tensor:
        """The tensor of ``item`` (has ``.media``, ``.where``) with its random draws from ``rng``."""
        raise NotImplementedError

    def tensor(self, i: int, epoch: int | None = None) -> torch.Tensor:
        return self.draw(self.items[i], self.rng(i, epoch))

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, i = key if isinstance(key, tuple) else (None, key)
        return self.tensor(i, epoch), i


class ClipDataset(SeededItems):
    """Fixed-length, normalised waveforms of ``items`` (anything with ``.media``, ``.where``).

    ``train=True`` takes a random segment seeded by (seed, epoch, index); otherwise the
    centre segment. A short clip is padded by ``pad`` (see
    :func:`~clapkit.data.audio.io.fix_length`). ``crop="variable"`` with ``train=True``
    takes the whole clip instead, cut to ``max_seconds`` by a random segment seeded the
    same way when longer (items of differing lengths: :attr:`padded`, batched by
    :func:`collate_padded`). Returns ``(wave, index)``.
    """

    def __init__(self, items: Sequence, sample_rate: int, seconds: float, norm: bool = True,
                 train: bool = False, seed: int = 0, cache_mb: float = 1024, pad: str = "zero",
                 crop: str = "fixed", max_seconds: float = 30.0):
        self.items = list(items)
        self.length = int(round(seconds * sample_rate))
        self.norm, self.train, self.seed, self.pad = norm, train, seed, pad
        self.padded = crop == "variable" and train  # whole clips: padded with a mask in a batch
        self.max_length = int(round(max_seconds * sample_rate))
        self.cache = WaveCache(sample_rate, cache_mb)

    def draw(self, item, rng: np.random.Generator | None) -> torch.Tensor:
        wave = self.cache.get(item.media, item.where)
        if isinstance(item, Window):
            wave = item.cut(wave, self.cache.sample_rate)
        if self.padded:
            wave = cap_length(wave, self.max_length, rng)
        else:
            wave = fix_length(wave, self.length, rng, self.pad)
        return torch.from_numpy(np.ascontiguousarray(normalize(wave) if self.norm else wave))


def clip_seconds(items: Sequence) -> np.ndarray:
    """The duration in seconds of each item's audio (``.media``), from its file's header
    (frames / samplerate, read once per distinct file, not decoded); a :class:`Window`
    its own ``seconds``, an in-memory wave its samples."""
    known: dict = {}
    out = np.empty(len(items))
    for k, item in enumerate(items):
        if isinstance(item, Window):
            out[k] = item.seconds
            continue
        if item.media not in known:
            if isinstance(item.media, ArrayAudio):
                known[item.media] = len(item.media.wave) / item.media.sample_rate
            else:
                info = audio_info(item.media)
                known[item.media] = info.frames / info.samplerate
        out[k] = known[item.media]
    return out


class ExtractedClips(SeededItems):
    """Whole clips through a model's own feature function (a fused public CLAP's
    extractor: :meth:`~clapkit.models.public.hf.HFDualEncoder.extractor`), for a model that
    needs more than a window of each clip. ``extract(wave, seed) -> dict of tensors``;
    the seed is drawn from (seed, epoch, index) in training, and from the clip's path in
    evaluation, so an item never depends on the batch or the workers. Returns
    ``(inputs, index)``."""

    def __init__(self, items: Sequence, sample_rate: int, extract, train: bool = False, seed: int = 0,
                 cache_mb: float = 1024):
        self.items, self.extract, self.train, self.seed = list(items), extract, train, seed
        self.cache = WaveCache(sample_rate, cache_mb)

    def draw(self, item, rng: np.random.Generator | None) -> dict[str, torch.Tensor]:
        import zlib

        seed = int(rng.integers(2**31 - 1)) if rng is not None else zlib.crc32(str(item.media).encode())
        return self.extract(self.cache.get(item.media, item.where), seed=seed)


def stack_media(items: list, padded: bool = False) -> torch.Tensor | dict[str, torch.Tensor]:
    """A batch of dataset items: tensors stacked, or dicts of (1, ...) tensors concatenated;
    ``padded``: waves of differing lengths padded with a mask (:func:`pad_waves`)."""
    if padded:
        return pad_waves(items)
    if isinstance(items[0], dict):
        return {k: torch.cat([x[k] for x in items]) for k in items[0]}
    return torch.stack(items)


def pad_waves(waves: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Waves of differing lengths as ``{"wave": (B, T) zeros after each clip, "mask": (B, T)
    bool, True on its real samples}``, T the longest (what a tower with ``accepts_mask`` takes)."""
    lengths = [w.shape[0] for w in waves]
    wave = torch.zeros(len(waves), max(lengths), dtype=waves[0].dtype)
    mask = torch.zeros(len(waves), max(lengths), dtype=torch.bool)
    for i, (w, n) in enumerate(zip(waves, lengths, strict=True)):
        wave[i, :n] = w
        mask[i, :n] = True
    return {"wave": wave, "mask": mask}


def no_duplicate_batches(items, group, size: int, max_waiting: int | None = None) -> Iterator[list]:
    """Batches of ``size`` from ``items`` (a list or an endless stream) in which no two
    share a ``group(item)`` (their clip or image), by sentence-transformers'
    ``NoDuplicatesBatchSampler`` rule: each batch takes the items in order, passing over
    one whose group it already holds; a passed-over item waits, in order, for the next
    batch. When finite ``items`` run out, the last, partial batch (if any) ends the
    iteration. More than ``max_waiting`` waiting items is a :class:`StarvedBatches`."""
    source, waiting = iter(items), []
    while True:
        batch, seen, still = [], set(), []
        for item in waiting:
            if len(batch) < size and group(item) not in seen:
                batch.append(item)
                seen.add(group(item))
            else:
                still.append(item)
        waiting = still
        while len(batch) < size:
            item = next(source, _END)
            if item is _END:  # finite items ran out
                break
            if group(item) in seen:
                waiting.append(item)
                if max_waiting is not None and len(waiting) > max_waiting:
                    raise StarvedBatches(len(waiting))
                continue
            batch.append(item)
            seen.add(group(item))
        if len(batch) < size:
            if batch:
                yield batch
            return
        yield batch


_END = object()


class StarvedBatches(Exception):
    """Too many items wait for a batch without their group: the data has too few groups."""


class EpochBatches(Sampler):
    """The batches of the current epoch for a persistent DataLoader; each index goes to
    the workers as ``(epoch, index)``. Call :meth:`set` before iterating an epoch."""

    def __init__(self):
        self.epoch, self.batches = 0, []

    def set(self, epoch: int, batches: list[list[int]]) -> None:
        self.epoch, self.batches = epoch, batches

    def __iter__(self):
        for batch in self.batches:
            yield [(self.epoch, int(i)) for i in batch]

    def __len__(self) -> int:
        return len(self.batches)


def batch_loader(dataset: Dataset, batch_sampler, num_workers: int, pin_memory: bool = False,
                 collate_fn=None, persistent: bool = False) -> DataLoader:
    """A training DataLoader over given batches: prefetching workers, and its own
    generator, since a DataLoader otherwise draws its workers' base seed from the global
    torch RNG (once if persistent, every epoch if not), which would shift dropout masks."""
    return DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate_fn, num_workers=num_workers,
                      persistent_workers=persistent and num_workers > 0, pin_memory=pin_memory,
                      prefetch_factor=2 if num_workers else None, generator=torch.Generator().manual_seed(0))


def epoch_loader(dataset: ClipDataset, num_workers: int, pin_memory: bool = False) -> tuple[DataLoader, EpochBatches]:
    """A training loader built once per run: workers persist across epochs (with their
    wave caches) and prefetch; the returned sampler chooses each epoch's batches."""
    sampler = EpochBatches()
    return batch_loader(dataset, sampler, num_workers, pin_memory, collate_for(dataset), persistent=True), sampler


def collate_clips(batch: list[tuple]) -> tuple:
    waves, idx = zip(*batch, strict=True)
    return stack_media(list(waves)), torch.tensor(idx)


def collate_padded(batch: list[tuple]) -> tuple:
    """:func:`collate_clips` for whole clips of differing lengths: ``({"wave", "mask"}, idx)``."""
    waves, idx = zip(*batch, strict=True)
    return pad_waves(list(waves)), torch.tensor(idx)


def collate_for(dataset: Dataset):
    """The collate of ``dataset``'s items: padded with a mask where its items differ in length."""
    return collate_padded if getattr(dataset, "padded", False) else collate_clips
