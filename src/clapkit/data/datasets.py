"""Torch datasets over pairs and labelled clips, with seeded, resumable randomness.

Random choices (training segments) come from a generator seeded by
``(seed, epoch, index)``, never from global state, so a run resumed at epoch k draws
exactly what an uninterrupted run draws, whatever the number of loader workers.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .audio import AudioError, fix_length, load_audio, normalize
from .manifests import Skipped


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

    ``items`` have ``.audio`` and ``.where``. This catches missing, unreadable, corrupt
    and empty files before training starts instead of hours into it.
    """
    bad: dict[Path, DataError] = {}
    for item in items:
        if item.audio in bad:
            continue
        try:
            info = sf.info(str(item.audio))
            if info.frames == 0:
                raise AudioError("audio file holds no samples", f"{item.where}: {item.audio}")
        except AudioError as exc:
            bad[item.audio] = exc
        except Exception as exc:  # soundfile raises several types for unreadable files
            bad[item.audio] = AudioError(f"cannot read audio ({exc})", f"{item.where}: {item.audio}", reason="unreadable audio")
    if bad and not skip_bad:
        first = next(iter(bad.values()))
        raise DataError(f"{first} [{len(bad)} bad audio file(s) in all; use --skip-bad to skip and count them]")
    kept = []
    for item in items:
        if item.audio in bad:
            skipped.add(bad[item.audio])
        else:
            kept.append(item)
    return kept


class ClipDataset(Dataset):
    """Fixed-length, normalised waveforms of ``items`` (anything with ``.audio``, ``.where``).

    ``train=True`` takes a random segment seeded by (seed, epoch, index); otherwise the
    centre segment. Returns ``(wave, index)``.
    """

    def __init__(self, items: Sequence, sample_rate: int, seconds: float, norm: bool = True,
                 train: bool = False, seed: int = 0, cache_mb: float = 1024):
        self.items = list(items)
        self.length = int(round(seconds * sample_rate))
        self.norm, self.train, self.seed = norm, train, seed
        self.epoch = 0
        self.cache = WaveCache(sample_rate, cache_mb)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def wave(self, i: int) -> np.ndarray:
        item = self.items[i]
        wave = self.cache.get(item.audio, item.where)
        rng = np.random.default_rng((self.seed, self.epoch, i)) if self.train else None
        wave = fix_length(wave, self.length, rng)
        return normalize(wave) if self.norm else wave

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(np.ascontiguousarray(self.wave(i))), i


def collate_clips(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    waves, idx = zip(*batch, strict=True)
    return torch.stack(waves), torch.tensor(idx)
