"""The cost of ``train.ema``: one training step through the loop with the weight average
updated after it, against the same step without, interleaved in one process (ABBA
order), on the `small` preset's audio CNN + the shipped MiniLM (both trainable, ~23M
parameters), batch 32 of 2 s clips. Also the update alone (``torch._foreach_lerp_`` over
every parameter and buffer) and the swap used for evaluation and checkpoint/. Prints one
JSON line.

Usage: python benchmarks/bench_ema.py [REPEATS] [BATCH]
"""

import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import interleaved, synthetic, timed  # noqa: E402

from clapkit.config import load_config  # noqa: E402
from clapkit.training.ema import WeightAverage  # noqa: E402


def main(repeats: int = 24, batch: int = 32) -> None:
    from clapkit.training.clap import ClapTrainer

    tmp = Path(tempfile.mkdtemp())
    data = synthetic(tmp / "syn", train_clips=4, test_clips=1, unseen_clips=1)
    cfg = load_config("small", [f"data.train=[csv:{data / 'train.csv'}]", "audio.segment_seconds=2.0",
                                f"train.batch_size={batch}", "train.frozen_epochs=0", "runtime.progress=false"])
    tr = ClapTrainer(cfg, tmp / "run")
    tr._start_phase("unfrozen")
    model = tr.model.train()
    idx = list(range(batch))
    media = torch.stack([tr.train_ds[i][0] for i in idx])
    ema = WeightAverage(model, 0.999)
    step = [0]

    def plain():
        tr.loop._run_step((idx, media, None))

    def averaged():
        tr.loop._run_step((idx, media, None))
        step[0] += 1
        ema.update(model, step[0])

    a, b = interleaved(averaged, plain, repeats)
    update = [timed(ema.update, model, 10**6)[0] for _ in range(repeats)]

    def swap():
        with ema.applied(model):
            pass

    swaps = [timed(swap)[0] for _ in range(repeats)]
    n = sum(t.numel() for t in ema.shadow)
    print(json.dumps({
        "benchmark": "ema", "batch": batch, "repeats": repeats, "tensors": len(ema.shadow), "elements": n,
        "step_with_ema_s": statistics.median(a), "step_s": statistics.median(b),
        "ratio_median": statistics.median([x / y for x, y in zip(a, b, strict=True)]),
        "update_s": statistics.median(update), "update_share_of_step": statistics.median(update) / statistics.median(b),
        "swap_in_and_out_s": statistics.median(swaps), "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
