"""runtime.precision: ClapTrainer.train_step in bf16 (and fp16) autocast against fp32 on
the same batch, model and starting weights, interleaved in one process (ABBA), on this
machine's device. Prints one JSON line: median step times and their ratios, plus the
first step's loss in each precision.

The `small` preset's audio CNN + the shipped MiniLM, both trainable, batch 32 of 2 s
clips at 16 kHz; on CUDA the same script measures the GPU.
"""

import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import synthetic, timed  # noqa: E402

from clapkit.config import load_config  # noqa: E402
from clapkit.training.clap import ClapTrainer  # noqa: E402


def trainer(precision: str, data: Path, tmp: Path, batch: int) -> ClapTrainer:
    cfg = load_config("small", [f"data.train=[csv:{data / 'train.csv'}]", "audio.segment_seconds=2.0",
                                f"train.batch_size={batch}", "train.frozen_epochs=0", "runtime.progress=false",
                                f"runtime.precision={precision}"])
    t = ClapTrainer(cfg, tmp / f"run-{precision}")
    t._start_phase("unfrozen")
    t.model.train()
    return t


def main(repeats: int = 12, batch: int = 32, precisions=("fp32", "bf16", "fp16")) -> None:
    tmp = Path(tempfile.mkdtemp())
    data = synthetic(tmp / "syn", train_clips=4, test_clips=1, unseen_clips=1)
    trainers = {p: trainer(p, data, tmp, batch) for p in precisions}
    idx = list(range(batch))
    media = torch.stack([trainers["fp32"].train_ds[i][0] for i in idx])
    first = {p: t.train_step(idx, media) for p, t in trainers.items()}  # warm-up; the same weights and batch
    times: dict[str, list[float]] = {p: [] for p in precisions}
    for r in range(repeats):
        order = precisions if r % 2 == 0 else precisions[::-1]
        for p in order:
            times[p].append(timed(trainers[p].train_step, idx, media)[0])
    out = {"benchmark": "precision", "device": str(trainers["fp32"].device), "batch": batch, "repeats": repeats,
           "threads": torch.get_num_threads(), "first_step_loss": first,
           "step_s": {p: statistics.median(v) for p, v in times.items()}}
    out["ratio_vs_fp32"] = {p: statistics.median([a / b for a, b in zip(times[p], times["fp32"], strict=True)])
                            for p in precisions if p != "fp32"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
