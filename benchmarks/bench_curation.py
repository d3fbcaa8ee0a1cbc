"""Curation scaling: DU matching of 10k, 100k and 1M audio embeddings against 50k
captions (random unit vectors, dim 256; the model is not run). Embeddings are written by
one process and matched by another, reading them from disk batch by batch (as from a
cache file), so each peak RSS is the matching's own and should not grow with the pool.
Prints one JSON line per size and a summary.

Usage: python bench_curation.py [--sizes 10000,100000,1000000] [--index exact|hnsw]
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM, CAPTIONS = 256, 50_000


def unit_chunks(n, seed, chunk=100_000):
    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        x = rng.standard_normal((min(chunk, n - start), DIM), dtype=np.float32)
        yield x / np.linalg.norm(x, axis=1, keepdims=True)


def generate(size: int, folder: Path) -> None:
    mm = np.memmap(folder / f"audio_{size}.f32", dtype=np.float32, mode="w+", shape=(size, DIM))
    start = 0
    for chunk in unit_chunks(size, 1):
        mm[start : start + len(chunk)] = chunk
        start += len(chunk)
    mm.flush()


def one(size: int, index: str, folder: Path) -> dict:
    """Match only: the embeddings were written by another process."""
    from clapkit.curation import match

    path = folder / f"audio_{size}.f32"

    def batches(rows=8192):  # read from disk batch by batch, as from a cache file
        with open(path, "rb") as fh:
            for start in range(0, size, rows):
                n = min(rows, size - start)
                yield np.fromfile(fh, dtype=np.float32, count=n * DIM).reshape(n, DIM)

    text = np.concatenate(list(unit_chunks(CAPTIONS, 2)))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    rows, _, _, _ = match(batches(), text, top_k=1, sigma=0.25, index=index)
    seconds = time.perf_counter() - t0
    return {"audio": size, "captions": CAPTIONS, "dim": DIM, "index": index, "seconds": seconds,
            "audio_per_s": size / seconds, "kept_pairs": int(len(rows)),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_before_match_mb": rss0, "audio_embeddings_mb": size * DIM * 4 / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--index", default="exact")
    ap.add_argument("--one", type=int)
    ap.add_argument("--generate", type=int)
    ap.add_argument("--folder")
    args = ap.parse_args()
    if args.generate:
        generate(args.generate, Path(args.folder))
        return
    if args.one:
        print(json.dumps(one(args.one, args.index, Path(args.folder))))
        return
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for size in map(int, args.sizes.split(",")):
            subprocess.run([sys.executable, __file__, "--generate", str(size), "--folder", folder], check=True)
            out = subprocess.run([sys.executable, __file__, "--one", str(size), "--index", args.index, "--folder", folder],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    print(json.dumps({"benchmark": "curation_scaling", "index": args.index,
                      "time_ratio_vs_smallest": [r["seconds"] / base["seconds"] for r in rows],
                      "size_ratio_vs_smallest": [r["audio"] / base["audio"] for r in rows],
                      "peak_rss_mb": [r["peak_rss_mb"] for r in rows]}))


if __name__ == "__main__":
    main()
