"""Frozen phase: epoch time with and without the backbone-output cache (both towers
frozen, the `paper` recipe's first phase), on the demo's synthetic set with the demo
model. Prints one JSON line; the ratio is uncached / cached epoch time, and the cache's
one-off build time is reported separately."""

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import synthetic  # noqa: E402

from clapkit.config import load_config  # noqa: E402
from clapkit.training.clap import ClapTrainer  # noqa: E402


def epoch_times(cfg, out, epochs=2):
    trainer = ClapTrainer(cfg, out)
    t0 = time.perf_counter()
    trainer._start_phase("frozen")
    setup = time.perf_counter() - t0
    times = []
    for e in range(epochs):
        t0 = time.perf_counter()
        trainer.train_epoch(e)
        times.append(time.perf_counter() - t0)
    return setup, min(times)


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    data = synthetic(tmp / "syn", train_clips=8, test_clips=1, unseen_clips=1)
    base = ["train.frozen_backbones=[audio, text]", "train.frozen_epochs=10", "runtime.progress=false",
            f"data.train=[csv:{data / 'train.csv'}]"]
    setup_c, cached = epoch_times(load_config("demo", base + ["train.cache_frozen=true"]), tmp / "c")
    setup_n, uncached = epoch_times(load_config("demo", base + ["train.cache_frozen=false"]), tmp / "n")
    print(json.dumps({
        "benchmark": "frozen_cache", "pairs": 24 * 8 * 3,
        "epoch_s_cached": cached, "epoch_s_uncached": uncached, "cache_build_s": setup_c - setup_n,
        "speedup_uncached_over_cached": uncached / cached,
    }))


if __name__ == "__main__":
    main()
