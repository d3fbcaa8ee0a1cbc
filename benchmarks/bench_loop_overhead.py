"""Loop overhead: ClapTrainer.train_step against a bare forward + backward + optimizer
step of the same model on the same batch, interleaved in one process. Prints one JSON
line with a result per medium.

audio: the `small` preset's audio CNN + the shipped MiniLM, both trainable (the
unfrozen phase, the expensive one), batch 32 of 2 s clips at 16 kHz, Adam.
image: the `clip-cpu` preset's image CNN (64 x 64 pictures) + MiniLM, both trainable,
batch 32, AdamW with the cosine schedule and CyCLIP's regularisers on.
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


def trainer_for(medium: str, tmp: Path, batch: int) -> ClapTrainer:
    common = [f"train.batch_size={batch}", "train.frozen_epochs=0", "train.progress=false"]
    if medium == "audio":
        data = synthetic(tmp / "syn", train_clips=4, test_clips=1, unseen_clips=1)
        cfg = load_config("small", [f"data.train=[csv:{data / 'train.csv'}]", "audio.segment_seconds=2.0", *common])
    else:
        from clapkit.data.synthetic_images import write_synthetic_images

        write_synthetic_images(tmp / "img", train_images=2, test_images=1, unseen_images=1)
        cfg = load_config("clip-cpu", [f"data.train=[csv:{tmp / 'img' / 'train.csv'}]", "train.cyclip.in_modal=0.25",
                                       "train.cyclip.cross_modal=0.25", *common])
    trainer = ClapTrainer(cfg, tmp / f"run-{medium}")
    trainer._start_phase("unfrozen")
    return trainer


def measure(medium: str, tmp: Path, repeats: int, batch: int) -> dict:
    trainer = trainer_for(medium, tmp, batch)
    model = trainer.model.train()
    idx = list(range(batch))
    media = torch.stack([trainer.train_ds[i][0] for i in idx])
    tokens = model.text.tokenize([trainer.data.train[i].caption for i in idx])
    params = [p for p in model.parameters() if p.requires_grad]
    bare_opt = torch.optim.Adam(params, lr=1e-5)

    def bare_step():
        e_m, e_t, s = model(media=media, tokens=tokens)
        loss = clip_loss(e_m, e_t, s, 100.0)
        bare_opt.zero_grad(set_to_none=True)
        loss.backward()
        bare_opt.step()

    bare_step(), trainer.train_step(idx, media)  # warm-up
    ours, bare = [], []
    for r in range(repeats):  # ABBA order, so neither side always runs first
        if r % 2 == 0:
            ours.append(timed(trainer.train_step, idx, media)[0])
            bare.append(timed(bare_step)[0])
        else:
            bare.append(timed(bare_step)[0])
            ours.append(timed(trainer.train_step, idx, media)[0])
    ratios = [a / b for a, b in zip(ours, bare, strict=True)]
    return {"train_step_s": statistics.median(ours), "bare_step_s": statistics.median(bare),
            "ratio_median": statistics.median(ratios)}


def main(repeats: int = 16, batch: int = 32) -> None:
    tmp = Path(tempfile.mkdtemp())
    print(json.dumps({
        "benchmark": "loop_overhead", "batch": batch, "repeats": repeats, "target": "< 1.10",
        "audio": measure("audio", tmp, repeats, batch), "image": measure("image", tmp, repeats, batch),
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
