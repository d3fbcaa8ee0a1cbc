"""Evaluation throughput at scale: clips per second of ``embed_items`` on the shared ESC-50
(414 clips: decode, resample, normalise, forward) in fp32 and in bf16 autocast, and with
1 and 2 processes under torchrun (each embeds every other batch; the machine's cores are
divided between the processes). The model is clapkit's ``small`` preset at random
initialisation (speed does not depend on training). Prints one JSON line per case and
the ratios.

Usage: python bench_eval_scale.py [--repeats 2]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import SHARED  # noqa: E402


def worker(checkpoint: str, precision: str, repeats: int) -> None:
    import torch

    from clapkit.data.audio.labelled import load_labelled
    from clapkit.distributed import init_distributed, is_main
    from clapkit.inference.embed import inference_precision
    from clapkit.inference.features import embed_items
    from clapkit.models.dual import DualEncoder

    _, world = init_distributed()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    clips = load_labelled(f"esc50:{SHARED / 'esc50'}").clips
    net = DualEncoder.load(checkpoint)
    embed_items(net, clips[:32], ("E",))  # warm-up (one batch)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        with inference_precision(precision, "cpu"):
            embed_items(net, clips, ("E",))
        best = min(best, time.perf_counter() - t0)
    if is_main():
        print(json.dumps({"processes": world, "precision": precision, "clips": len(clips),
                          "clips_per_s": round(len(clips) / best, 1)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--worker", nargs=2, metavar=("CHECKPOINT", "PRECISION"))
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker, args.repeats)
        return
    from clapkit.config import load_config
    from clapkit.models.dual import DualEncoder

    tmp = Path(tempfile.mkdtemp(prefix="clapkit-bench-"))
    cfg = load_config("small", ["audio.sample_rate=16000", "audio.segment_seconds=5.0"])
    DualEncoder(cfg).save(tmp / "checkpoint")
    rows = {}
    for n, precision in ((1, "fp32"), (1, "bf16"), (2, "fp32")):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port",
               str(29900 + n), __file__, "--worker", str(tmp / "checkpoint"), precision, "--repeats", str(args.repeats)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        print(out)
        rows[(n, precision)] = json.loads(out)["clips_per_s"]
    print(json.dumps({"bf16_over_fp32": round(rows[(1, "bf16")] / rows[(1, "fp32")], 2),
                      "two_over_one_process": round(rows[(2, "fp32")] / rows[(1, "fp32")], 2),
                      "cores": os.cpu_count()}))


if __name__ == "__main__":
    main()
