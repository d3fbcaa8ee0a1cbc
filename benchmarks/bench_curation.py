"""Curation scaling through ``clapkit curate`` itself: DU matching of 10k, 100k and 1M
pool clips against 50k captions (exact index, dim 256).

Per size, a pool CSV lists N audio paths (symbolic links to one short WAV, so each is a
distinct file to the cache) and the teacher cache is filled beforehand with random unit
vectors through clapkit's own cache API (``EmbeddingCache.store(...).append``), keyed by
those files' ids and stamps: a 1M-clip teacher forward pass is not feasible on 2 CPU
cores, and it is linear in the pool by construction. ``clapkit curate`` then runs as it
would on a re-run: it streams the pool CSV, looks every clip up in the cache, reads its
rows memory-mapped, searches FAISS and writes the manifest. Each size runs in its own
process, whose child's peak RSS (``RUSAGE_CHILDREN``) is the curate command's alone.
Prints one JSON line per size and a summary.

Usage: python bench_curation.py [--sizes 10000,100000,1000000] [--index exact|hnsw] [--folder DIR]
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM, CAPTIONS, CHUNK = 256, 50_000, 8192


def unit(n: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_teacher(folder: Path) -> Path:
    """A small random clapkit checkpoint with 256-d projections (its weights are never used:
    every embedding comes from the cache)."""
    from clapkit.config import load_config
    from clapkit.models.dual import DualEncoder

    cfg = load_config("demo", ["model.projector.dim=256"])
    DualEncoder(cfg).save(folder / "teacher")
    return folder / "teacher"


def prepare(size: int, folder: Path) -> dict:
    """Pool CSV, caption CSV and a filled cache for ``size`` clips."""
    import hashlib

    import soundfile as sf

    from clapkit.inference.cache import EmbeddingCache, _file_stamp

    teacher = folder / "teacher" if (folder / "teacher").is_dir() else make_teacher(folder)
    wav = folder / "clip.wav"
    if not wav.exists():
        sf.write(wav, np.zeros(1600, np.float32), 16000)
    links = folder / f"pool_{size}"
    links.mkdir()
    pool_csv = folder / f"pool_{size}.csv"
    with open(pool_csv, "w") as fh:
        fh.write("audio\n")
        for i in range(size):
            sub = links / f"{i // 10000:04d}"
            if i % 10000 == 0:
                sub.mkdir()
            link = sub / f"{i:07d}.wav"
            os.symlink(wav, link)
            fh.write(f"{link}\n")
    captions = folder / "captions.csv"
    texts = [f"caption number {i}" for i in range(CAPTIONS)]
    if not captions.exists():
        captions.write_text("audio,caption\n" + "".join(f"x.wav,{t}\n" for t in texts))
    cache_dir = folder / f"cache_{size}"
    cache = EmbeddingCache(cache_dir, teacher)
    rng = np.random.default_rng(size)
    cache.store("text").append([hashlib.sha1(t.encode()).hexdigest() for t in texts], [""] * CAPTIONS,
                               unit(CAPTIONS, rng))
    stamp = _file_stamp(wav)
    audio = cache.store("audio")
    for start in range(0, size, CHUNK):
        n = min(CHUNK, size - start)
        ids = [os.path.abspath(links / f"{i // 10000:04d}" / f"{i:07d}.wav") for i in range(start, start + n)]
        audio.append(ids, [stamp] * n, unit(n, rng))
    return {"teacher": str(teacher), "pool": str(pool_csv), "captions": str(captions), "cache": str(cache_dir)}


def one(size: int, index: str, folder: Path) -> dict:
    paths = prepare(size, folder)
    out = folder / f"curated_{size}.csv"
    cmd = [sys.executable, "-m", "clapkit.cli", "curate", "--teacher", paths["teacher"], "--audio", paths["pool"],
           "--captions", paths["captions"], "--out", str(out), "--sigma", "0.25", "--index", index,
           "--cache", paths["cache"], "--device", "cpu"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    stats = json.loads(out.with_suffix(".stats.json").read_text())
    assert stats["audio_pool"] == size and stats["cache"]["audio_computed"] == 0
    result = {"audio": size, "captions": CAPTIONS, "dim": DIM, "index": index, "seconds": seconds,
              "curate_seconds": stats["seconds"], "audio_per_s": size / seconds, "kept_pairs": stats["pairs"],
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
              "audio_embeddings_mb": size * DIM * 4 / 2**20}
    for p in (folder / f"pool_{size}", folder / f"cache_{size}"):
        shutil.rmtree(p)
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--index", default="exact")
    ap.add_argument("--one", type=int)
    ap.add_argument("--folder")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.index, Path(args.folder))))
        return
    rows = []
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        for size in map(int, args.sizes.split(",")):
            out = subprocess.run([sys.executable, __file__, "--one", str(size), "--index", args.index, "--folder", folder],
                                 capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(out.stderr[-3000:])
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    print(json.dumps({"benchmark": "curation_scaling_cli", "index": args.index,
                      "time_ratio_vs_smallest": [r["seconds"] / base["seconds"] for r in rows],
                      "size_ratio_vs_smallest": [r["audio"] / base["audio"] for r in rows],
                      "peak_rss_mb": [r["peak_rss_mb"] for r in rows]}))


if __name__ == "__main__":
    main()
