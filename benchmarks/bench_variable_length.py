"""Variable-length training input (``audio.crop: variable``) against a fixed crop.

(a) The share of the signal a fixed crop never shows in an epoch (one ``c``-second crop
per clip leaves ``max(d - c, 0)`` of a ``d``-second clip out), for clips of 1-30 s
(uniform) and of 15-30 s (uniform, as Clotho's), with 5 s and 10 s crops.

(b) SmallCNN (``model.audio`` defaults, 16 kHz) forward + backward steps per second on
synthetic noise clips of 1-30 s: bucketed variable-length batches
(:func:`~clapkit.training.sources.bucketed_batches`, padded with a mask) against fixed
5 s crops of the same clips, and against unbucketed variable-length batches of the same
clips (shuffled and cut into batches: each padded to its longest clip). The timed clips
are those of ``--steps`` bucketed batches of an epoch, so the two variable-length
conditions train the same audio in as many steps; ``fixed_5s_with_mask`` is the fixed
crops through the masked path (all real: the mask's own cost). The conditions take turns step by step
in one process; a figure is steps over the summed step times. Also the share of the
padded samples that is padding (over the whole epoch), and the real audio seconds
trained per second of wall time.

Prints one JSON line. Usage: python bench_variable_length.py [--batch-size 8] [--steps 6]
[--bucket-batches 16] [--threads N]
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import _common  # noqa: E402,F401  (offline transformers settings)

from clapkit.config import load_config  # noqa: E402
from clapkit.data.datasets import pad_waves  # noqa: E402
from clapkit.models.towers.audio import SmallCNN  # noqa: E402
from clapkit.training.sources import bucketed_batches  # noqa: E402


def unseen(seconds: np.ndarray, crop: float) -> float:
    """The share of ``seconds`` (all clips) that one ``crop``-second segment per clip leaves out."""
    return float(np.maximum(seconds - crop, 0).sum() / seconds.sum())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per condition")
    ap.add_argument("--bucket-batches", type=int, default=16)
    ap.add_argument("--sample-rate", type=int, default=16000)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    uniform, clotho = rng.uniform(1, 30, 10000), rng.uniform(15, 30, 10000)
    result = {"benchmark": "variable_length", "unseen_fraction_per_epoch": {
        name: {"fixed_5s": unseen(d, 5.0), "fixed_10s": unseen(d, 10.0), "variable_30s": unseen(d, 30.0)}
        for name, d in (("uniform_1_30s", uniform), ("clotho_15_30s", clotho))}}

    bs, sr = args.batch_size, args.sample_rate
    n = bs * args.bucket_batches * 2
    seconds = rng.uniform(1, 30, n)
    cfg = load_config(None, ["audio.crop=variable", f"train.batch_size={bs}", f"data.bucket_batches={args.bucket_batches}",
                             "data.no_duplicate_media=false"])
    order = np.random.default_rng(1).permutation(n)
    unbucketed = [order[a : a + bs].tolist() for a in range(0, n, bs)]
    epoch = {"bucketed": bucketed_batches(unbucketed, seconds, list(range(n)), cfg, 0), "unbucketed": unbucketed}
    result["padding_fraction"] = {name: float(1 - sum(seconds[b].sum() for b in bb) / sum(len(b) * seconds[b].max() for b in bb))
                                  for name, bb in epoch.items()}
    timed = [i for b in epoch["bucketed"][: args.steps + 1] for i in b]  # step 0 warms up
    shuffled = np.random.default_rng(2).permutation(timed[bs:]).tolist()
    batches = {"bucketed": epoch["bucketed"][: args.steps + 1],
               "unbucketed": [timed[:bs]] + [shuffled[a : a + bs] for a in range(0, len(shuffled), bs)]}
    samples = (seconds * sr).astype(int)
    waves = {i: torch.randn(int(samples[i]), generator=torch.Generator().manual_seed(int(i))) for i in timed}

    def crop(rows):
        return torch.stack([waves[i][:5 * sr] if len(waves[i]) >= 5 * sr
                            else torch.nn.functional.pad(waves[i], (0, 5 * sr - len(waves[i]))) for i in rows]), None

    inputs = {"fixed_5s": [crop(b) for b in batches["bucketed"]]}
    inputs["fixed_5s_with_mask"] = [(w, torch.ones(w.shape, dtype=torch.bool)) for w, _ in inputs["fixed_5s"]]
    for name, bb in batches.items():
        inputs[name] = [(p["wave"], p["mask"]) for p in (pad_waves([waves[i] for i in b]) for b in bb)]
    result["timed_padding_fraction"] = {name: float(1 - sum(m.sum() for _, m in inputs[name][1:])
                                                    / sum(m.numel() for _, m in inputs[name][1:])) for name in batches}
    real = {name: statistics.mean(bs * 5.0 if name.startswith("fixed") else float(m.sum()) / sr for _, m in inputs[name][1:])
            for name in inputs}

    torch.manual_seed(0)
    tower = SmallCNN(sample_rate=sr, fmax=min(14000.0, sr / 2)).train()
    times: dict[str, list[float]] = {name: [] for name in inputs}
    for k in range(args.steps + 1):  # step 0 warms up; the conditions take turns
        for name, steps in inputs.items():
            wave, mask = steps[k]
            tower.zero_grad()
            t0 = time.perf_counter()
            tower(wave, mask).sum().backward()
            if k:
                times[name].append(time.perf_counter() - t0)
    per_s = {name: len(t) / sum(t) for name, t in times.items()}
    result.update({
        "batch_size": bs, "sample_rate": sr, "bucket_batches": args.bucket_batches, "timed_steps": args.steps,
        "threads": torch.get_num_threads(), "tower": "small_cnn (channels 16, 32, 64, 128; 64 mels, hop 320)",
        "clip_seconds": "uniform 1-30", "epoch_clips": n, "steps_per_s": per_s,
        "real_audio_seconds_per_step": real,
        "real_audio_seconds_per_s": {name: per_s[name] * real[name] for name in inputs},
        "ratio_steps_bucketed_over_fixed_5s": per_s["bucketed"] / per_s["fixed_5s"],
        "ratio_steps_fixed_5s_with_mask_over_without": per_s["fixed_5s_with_mask"] / per_s["fixed_5s"],
        "ratio_steps_bucketed_over_unbucketed": per_s["bucketed"] / per_s["unbucketed"],
        "ratio_audio_per_s_bucketed_over_unbucketed": (per_s["bucketed"] * real["bucketed"])
        / (per_s["unbucketed"] * real["unbucketed"]),
    })
    print(json.dumps(result))


if __name__ == "__main__":
    main()
