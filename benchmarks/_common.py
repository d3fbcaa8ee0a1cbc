"""Helpers shared by the benchmarks: a synthetic set and a timer."""

from __future__ import annotations

import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import transformers  # noqa: E402

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def synthetic(folder: Path, **kw) -> Path:
    from clapkit.data.audio.synthetic import write_synthetic

    if not (folder / "train.csv").exists():
        write_synthetic(folder, **kw)
    return folder


def timed(fn, *args, **kw) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - t0, out


def interleaved(a, b, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds of ``repeats`` calls of ``a`` and of ``b`` (after one warm-up call each),
    interleaved in ABBA order so that the machine's drift falls on both alike."""
    a(), b()
    ta, tb = [], []
    for r in range(repeats):
        first, second = (a, b) if r % 2 == 0 else (b, a)
        t1, t2 = timed(first)[0], timed(second)[0]
        (ta.append(t1), tb.append(t2)) if r % 2 == 0 else (tb.append(t1), ta.append(t2))
    return ta, tb
