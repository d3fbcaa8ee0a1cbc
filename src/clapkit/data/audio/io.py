"""Audio input: decode (soundfile), mix to mono, resample (soxr), cut or pad, normalise.

``fix_length`` picks a *random* segment when given a generator (training) and the
*centre* segment otherwise (evaluation), so evaluation never depends on a seed;
``cap_length`` keeps a clip whole up to a length (``audio.crop: variable``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ...errors import DataError
from ..files import TarMember
from ..records import ArrayAudio

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".au", ".mp3")


class AudioError(DataError):
    """A file could not be decoded, or holds no samples."""


def audio_info(ref):
    """soundfile's header of a file or a shard's member (frames, samplerate, ...), without
    decoding it; soundfile's own errors pass through."""
    return sf.info(ref.open() if isinstance(ref, TarMember) else str(ref))


def declared_wav_frames(path) -> int | None:
    """The frames a PCM WAV file's header says its data chunk holds (Python's ``wave``
    reads the header only), or None for another format, a header ``wave`` cannot read, or a
    size left open by a streaming writer (0 or 0xFFFFFFFF). libsndfile reads a file cut
    short without complaint and reports the frames it found, so a WAV that holds fewer
    frames than this was truncated (a copy interrupted mid-file)."""
    import wave

    if isinstance(path, TarMember) or Path(str(path)).suffix.lower() != ".wav":
        return None
    try:
        with wave.open(str(path), "rb") as fh:
            frames, block = fh.getnframes(), fh.getnchannels() * fh.getsampwidth()
    except (wave.Error, EOFError, OSError, ValueError):
        return None
    return frames if 0 < frames * block < 0xFFFFFFF0 else None


def load_audio(path, sample_rate: int, where: str | None = None) -> np.ndarray:
    """Decode ``path`` (a file, or a :class:`~clapkit.data.files.TarMember` of a shard) to
    a mono float32 array at ``sample_rate``.

    ``where`` (e.g. ``"train.csv row 12"``) is added to the error so a user can find
    the manifest row that points at a bad file.
    """
    label = f"{where}: {path}" if where else str(path)
    if isinstance(path, ArrayAudio):
        return _array_wave(path, sample_rate, label)
    in_tar = isinstance(path, TarMember)
    if not (path.tar if in_tar else Path(path)).is_file():
        raise AudioError("audio file not found", label)
    try:
        data, sr = sf.read(path.open() if in_tar else str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(f"cannot decode audio ({exc})", label, reason="unreadable audio") from exc
    if data.shape[0] == 0:
        raise AudioError("audio file holds no samples", label, reason="empty audio")
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.all(np.isfinite(wave)):
        raise AudioError("audio holds NaN or infinite samples", label)
    if sr != sample_rate:
        wave = soxr.resample(wave, sr, sample_rate, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(wave, dtype=np.float32)


def _array_wave(ref: ArrayAudio, sample_rate: int, label: str) -> np.ndarray:
    """An in-memory waveform checked as a decoded file is, at ``sample_rate``."""
    wave = np.asarray(ref.wave)
    if wave.ndim != 1 or not np.issubdtype(wave.dtype, np.number):
        raise AudioError(f"give a mono waveform, a 1-D array of samples (this one has shape {wave.shape}, "
                         f"dtype {wave.dtype}); average the channels of a multichannel clip first", label)
    if len(wave) == 0:
        raise AudioError("the waveform holds no samples", label)
    if not np.all(np.isfinite(wave)):
        raise AudioError("audio holds NaN or infinite samples", label)
    wave = wave.astype(np.float32)
    if ref.sample_rate != sample_rate:
        wave = soxr.resample(wave, ref.sample_rate, sample_rate, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(wave)


def fix_length(
    wave: np.ndarray, length: int, rng: np.random.Generator | None = None, pad: str = "zero"
) -> np.ndarray:
    """Cut ``wave`` to ``length`` samples or pad it at the end.

    With ``rng`` a random segment is taken (training); without, the centre segment
    (evaluation, deterministic). ``pad`` fills a short clip as LAION-CLAP's and
    transformers' CLAP feature extractor do: ``zero`` (zeros after the clip),
    ``repeatpad`` (the clip repeated floor(length / n) times, then zeros) or ``repeat``
    (repeated and cut to ``length``).
    """
    n = wave.shape[0]
    if n == length:
        return wave
    if n < length:
        if pad == "repeat":
            return np.tile(wave, length // n + 1)[:length].astype(np.float32)
        out = np.zeros(length, dtype=np.float32)
        body = np.tile(wave, length // n) if pad == "repeatpad" else wave
        out[: body.shape[0]] = body
        return out
    start = int(rng.integers(0, n - length + 1)) if rng is not None else (n - length) // 2
    return wave[start : start + length]


def cap_length(wave: np.ndarray, length: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """``wave`` whole, or cut to ``length`` samples when longer (a random segment with
    ``rng``, else the centre one, as :func:`fix_length` cuts); never padded."""
    return wave if wave.shape[0] <= length else fix_length(wave, length, rng)


def normalize(wave: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Zero mean, unit variance per clip (silence stays silence)."""
    wave = wave - wave.mean()
    std = wave.std()
    return (wave / std).astype(np.float32) if std > eps else wave.astype(np.float32)


def resolve_audio(path: Path) -> Path:
    """Return ``path``, or a file with the same stem and another audio extension.

    Datasets are often re-encoded (ESC-50's csv names ``.wav`` while a copy holds
    ``.ogg``); metadata keeps the original name.
    """
    if path.exists():
        return path
    for ext in AUDIO_EXTENSIONS:
        alt = path.with_suffix(ext)
        if alt.exists():
            return alt
    return path
