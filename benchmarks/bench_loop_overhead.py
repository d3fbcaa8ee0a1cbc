"""Loop overhead: ClapTrainer.train_step against a bare forward + backward + Adam step of
the same model on the same batch, interleaved in one process. Prints one JSON line.

Model: the `small` preset's audio CNN + the shipped MiniLM, both trainable (the
unfrozen phase, the expensive one), batch 32 of 2 s clips at 16 kHz.
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
from clapkit.losses import clip_loss  # noqa: E402
from clapkit.training.clap import ClapTrainer  # noqa: E402


def main(repeats: int = 16, batch: int = 32) -> None:
    tmp = Path(tempfile.mkdtemp())
    data = synthetic(tmp / "syn", train_clips=4, test_clips=1, unseen_clips=1)
    cfg = load_config("small", [f"data.train=[csv:{data / 'train.csv'}]", "audio.segment_seconds=2.0",
                                f"train.batch_size={batch}", "train.frozen_epochs=0", "train.progress=false"])
    trainer = ClapTrainer(cfg, tmp / "run")
    trainer._start_phase("unfrozen")
    model = trainer.model.train()
    idx = list(range(batch))
    waves = torch.stack([torch.from_numpy(trainer.train_ds.wave(i)) for i in idx])
    tokens = model.text.tokenize([trainer.data.train[i].caption for i in idx])
    params = [p for p in model.parameters() if p.requires_grad]
    bare_opt = torch.optim.Adam(params, lr=1e-5)

    def bare_step():
        e_a, e_t, s = model(media=waves, tokens=tokens)
        loss = clip_loss(e_a, e_t, s, 100.0)
        bare_opt.zero_grad(set_to_none=True)
        loss.backward()
        bare_opt.step()

    bare_step(), trainer.train_step(idx, waves)  # warm-up
    ours, bare = [], []
    for r in range(repeats):  # ABBA order, so neither side always runs first
        if r % 2 == 0:
            ours.append(timed(trainer.train_step, idx, waves)[0])
            bare.append(timed(bare_step)[0])
        else:
            bare.append(timed(bare_step)[0])
            ours.append(timed(trainer.train_step, idx, waves)[0])
    ratios = [a / b for a, b in zip(ours, bare, strict=True)]
    print(json.dumps({
        "benchmark": "loop_overhead", "batch": batch, "repeats": repeats,
        "train_step_s": statistics.median(ours), "bare_step_s": statistics.median(bare),
        "ratio_median": statistics.median(ratios), "target": "< 1.10",
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
