"""Cost of S0's joint loss (train.se) in the CLAP trainer.

1. Step time: ClapTrainer.train_step with the plain CLIP loss against CLIP + SimCSE on
   the batch's captions and CLIP + supervised SimCSE on 32 NLI triplets (the shared SNLI
   triplets), on the same batch and starting weights, interleaved (ABBA) in one process:
   the `small` preset's audio CNN + MiniLM, both trainable, batch 32 of 2 s clips.
2. Peak memory: one process per setting (each peak RSS its own), two train_steps of the
   joint loss with an SE batch of 256 sentences from the STS-B training sentences, plain
   against gradient caching in chunks of 64 rows (train.se.cache_chunk).
Prints one JSON line per part.

Usage: python bench_joint_se.py [--one SETTING]
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import SHARED, synthetic, timed  # noqa: E402
from bench_cse_memory import current_rss_mb, peak_rss_mb  # noqa: E402


def trainer(tmp: Path, name: str, *extra):
    from clapkit.config import load_config
    from clapkit.training.clap import ClapTrainer

    data = synthetic(tmp / "syn", train_clips=4, test_clips=1, unseen_clips=1)
    cfg = load_config("small", [f"data.train=[csv:{data / 'train.csv'}]", "audio.segment_seconds=2.0",
                                "train.batch_size=32", "train.frozen_epochs=0", "runtime.progress=false", *extra])
    t = ClapTrainer(cfg, tmp / name)
    t._start_phase("unfrozen")
    t.model.train()
    return t


def step_times(repeats: int = 8) -> dict:
    import torch

    tmp = Path(tempfile.mkdtemp())
    nli = SHARED / "nli" / "snli_test_triplets.csv"
    runs = {"plain": trainer(tmp, "plain"),
            "captions": trainer(tmp, "captions", "train.se.weight=0.5"),
            "nli_32": trainer(tmp, "nli", "train.se.weight=0.5", "train.se.loss=nli", f"train.se.nli={nli}",
                              "train.se.batch_size=32")}
    idx = list(range(32))
    media = torch.stack([runs["plain"].train_ds[i][0] for i in idx])
    for t in runs.values():
        t.train_step(idx, media)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    for r in range(repeats):
        for k in (names if r % 2 == 0 else names[::-1]):
            times[k].append(timed(runs[k].train_step, idx, media)[0])
    return {"benchmark": "joint_se_step", "batch": 32, "step_s": {k: statistics.median(v) for k, v in times.items()},
            "ratio_vs_plain": {k: statistics.median([a / b for a, b in zip(times[k], times["plain"], strict=True)])
                               for k in names if k != "plain"}}


def one(chunk: int) -> dict:
    import torch

    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp())
    t = trainer(tmp, "mem", "train.se.weight=0.5", "train.se.loss=corpus",
                f"train.se.corpus=stsb:{SHARED / 'sts' / 'stsbenchmark'}", "train.se.batch_size=256",
                f"train.se.cache_chunk={chunk}", "model.text.max_length=32")
    idx = list(range(32))
    loaded = current_rss_mb()
    t.train_step(idx)
    t.train_step(idx)
    peak = peak_rss_mb()
    return {"cache_chunk": chunk, "se_rows": 512, "peak_rss_mb": peak, "rss_loaded_mb": loaded, "growth_mb": peak - loaded}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", type=int)
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.one)))
        return
    print(json.dumps(step_times()), flush=True)
    rows = []
    for chunk in (0, 64):
        out = subprocess.run([sys.executable, __file__, "--one", str(chunk)], capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"cache_chunk {chunk} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(json.dumps({"benchmark": "joint_se_memory", "settings": rows,
                      "growth_ratio_cached_vs_plain": rows[1]["growth_mb"] / rows[0]["growth_mb"]}))


if __name__ == "__main__":
    main()
