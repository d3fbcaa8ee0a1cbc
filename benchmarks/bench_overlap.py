"""Time and peak memory of the overlap audit's embedding rule (``audit.overlap``) against the
size of the training pool: 10k and 100k synthetic training embeddings (512-d, the E of a
CLAP) against 2,000 evaluation items, 1% of them planted near-duplicates. Each size runs
in its own process (peak resident memory, ``ru_maxrss``, above the process's baseline
after the arrays exist); the ratio of 100k to 10k is printed, and every planted copy
must be found.

Usage: python bench_overlap.py [--sizes 10000,100000] [--eval 2000]
"""

import argparse
import json
import resource
import subprocess
import sys
import time


def run_case(n_train: int, n_eval: int) -> None:
    import numpy as np

    from clapkit.audit.overlap import Side, find_overlap

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rng = np.random.default_rng(0)
    train = rng.standard_normal((n_train, 512), dtype=np.float32)
    evaluate = rng.standard_normal((n_eval, 512), dtype=np.float32)
    planted = rng.choice(n_train, n_eval // 100, replace=False)
    evaluate[: len(planted)] = train[planted] + 0.05 * rng.standard_normal((len(planted), 512), dtype=np.float32)
    arrays_mb = (train.nbytes + evaluate.nbytes) / 2**20

    class Item:
        media, source, where = "x", None, "x"

    side_t, side_e = Side(["t"], [Item()] * n_train, ["t"] * n_train), Side(["e"], [Item()] * n_eval, ["e"] * n_eval)
    t0 = time.perf_counter()
    found = find_overlap(side_t, side_e, "audio", ["embedding"], (train, evaluate), threshold=0.95)["found"]
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    hits = {(t, e) for t, e in found}
    recall = sum((int(p), i) in hits for i, p in enumerate(planted)) / len(planted)
    print(json.dumps({"train": n_train, "eval": n_eval, "seconds": round(seconds, 3), "peak_mb_above_base": round(peak / 1024, 1),
                      "embeddings_mb": round(arrays_mb, 1),
                      "pairs": len(found), "planted_recall": recall}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--eval", type=int, default=2000)
    ap.add_argument("--case", type=int)
    args = ap.parse_args()
    if args.case:
        run_case(args.case, args.eval)
        return
    rows = []
    for n in map(int, args.sizes.split(",")):
        out = subprocess.run([sys.executable, __file__, "--case", str(n), "--eval", str(args.eval)], check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
        print(out)
        rows.append(json.loads(out))
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(json.dumps({"pool_ratio": b["train"] / a["train"], "time_ratio": round(b["seconds"] / a["seconds"], 2),
                          "memory_ratio": round(b["peak_mb_above_base"] / max(a["peak_mb_above_base"], 0.1), 2)}))


if __name__ == "__main__":
    main()
