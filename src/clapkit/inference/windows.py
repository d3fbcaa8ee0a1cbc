"""Sliding-window evaluation of long clips.

By default a clip is evaluated on one centre segment of the model's length. With
:class:`Windows` (``--window SECONDS --hop SECONDS``) each clip is cut into windows
starting at 0, ``hop``, ``2 hop``, ... while a window fits, plus one window ending at the
clip's end when the last regular one stops short of it, so the whole clip is seen; a clip
shorter than the window is one window (padded as the pipeline pads). Each window goes
through the model's own input pipeline (cut, then fitted to the model's segment length).

Pooling (``--pool``): ``mean`` — a clip's E is the mean of its windows' normalised E,
renormalised (its x the mean of the windows' x); ``max`` (zero-shot only) — a clip's
score for a class is the highest of its windows' scores. A fused public CLAP
(``laion/clap-htsat-fused``) keeps its own fusion of the whole clip: windows are not cut
for it, and the record says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, DataError

POOLS = ("mean", "max")


@dataclass(frozen=True)
class Windows:
    seconds: float
    hop: float | None = None  # default: the window (no overlap)
    pool: str = "mean"

    def __post_init__(self):
        if not self.seconds or self.seconds <= 0:
            raise ConfigError(f"--window {self.seconds}: give a window length in seconds > 0")
        if self.hop is not None and self.hop <= 0:
            raise ConfigError(f"--hop {self.hop}: give a hop in seconds > 0")
        if self.pool not in POOLS:
            raise ConfigError(f"--pool {self.pool!r}: choose {' or '.join(POOLS)}")

    @property
    def step(self) -> float:
        return self.hop or self.seconds

    def starts(self, duration: float) -> list[float]:
        if duration <= self.seconds:
            return [0.0]
        n = int(np.floor((duration - self.seconds) / self.step + 1e-9)) + 1
        starts = [k * self.step for k in range(n)]
        if starts[-1] + self.seconds < duration - 1e-9:
            starts.append(duration - self.seconds)
        return starts


def windows_of(items: Sequence, spec: Windows) -> tuple[list, np.ndarray, dict]:
    """The windows of ``items`` (audio clips), the index of the clip each came from, and a
    record: the settings, the number of windows, and how many clips were shorter than one
    window. A window longer than every clip is an error naming the longest clip."""
    from ..data.audio.io import audio_info
    from ..data.records import Window

    out, owner, durations = [], [], []
    for n, item in enumerate(items):
        try:
            info = audio_info(item.media)
        except Exception as exc:  # soundfile raises several types for unreadable files
            raise DataError(f"cannot read audio ({exc})", f"{item.where}: {item.media}") from exc
        duration = info.frames / info.samplerate
        durations.append(duration)
        for start in spec.starts(duration):
            out.append(Window(item.media, item.where, start, spec.seconds))
            owner.append(n)
    if items and max(durations) < spec.seconds:
        longest = int(np.argmax(durations))
        raise DataError(f"--window {spec.seconds:g} s is longer than every clip (the longest is {durations[longest]:.2f} s); "
                        "give a shorter window, or none for the centre segment", f"{items[longest].where}: "
                        f"{items[longest].media}")
    record = {"window": spec.seconds, "hop": spec.step, "pool": spec.pool, "windows": len(out),
              "clips_shorter_than_window": int(sum(d < spec.seconds for d in durations))}
    return out, np.asarray(owner, np.int64), record


def pool_mean(feats: dict[str, np.ndarray], owner: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Each clip's mean over its windows: E renormalised, x as is."""
    from .embed import unit_rows

    counts = np.bincount(owner, minlength=n).astype(np.float32)[:, None]
    out = {}
    for kind, f in feats.items():
        total = np.zeros((n, f.shape[1]), np.float32)
        np.add.at(total, owner, f)
        mean = total / counts
        out[kind] = unit_rows(mean) if kind == "E" else mean
    return out


def cut_windows(model, items: Sequence, spec: Windows) -> tuple[list, np.ndarray, dict]:
    """What ``model`` embeds for ``items`` under ``spec``: their windows (see
    :func:`windows_of`), each window's clip index, and the record. A fused CLAP's clips
    stay whole (one "window" each)."""
    if model.medium != "audio":
        raise ConfigError("--window is for audio; a picture has no windows")
    if getattr(model, "fused", False):
        return list(items), np.arange(len(items)), {"window": spec.seconds, "hop": spec.step, "pool": spec.pool,
                                                    "fused": "the model fuses each whole clip itself; no windows cut"}
    return windows_of(items, spec)
