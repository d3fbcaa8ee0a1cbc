"""Concept-frequency counting (``clapkit.audit.frequency``) at 1M captions: speed and memory.

The captions are drawn with replacement (seed 0) from the shared Clotho (development,
validation, evaluation: 5 captions a clip) and AudioCaps (train, val, test) caption files,
written to a temporary ``audio,caption`` CSV, and streamed from it against ESC-50's 50 class
names (the default word list). In one process, after every import:

- ``baseline``: the same stream through the same tokenizer, no matching (what reading and
  splitting the captions costs);
- ``count_cold``: ``count_files`` with empty caches (the lemma dictionary, wordfreq and
  the stems loaded and computed on first use), then ``count_warm``: a second pass with a
  fresh token cache but warm stem/lemma caches;
- memory: the resident set after 100k captions and after all of them (bounded: the same),
  and the process's peak RSS (``resource.getrusage``) after the baseline and at the end.

With ``--scan`` (default on) the leakage scan's in-memory path (``read_pairs`` + ``scan``,
all pairs held) runs on the same file in a child process, whose peak RSS is its own
(``RUSAGE_CHILDREN``). Prints one JSON line.

Usage: python benchmarks/bench_concept_frequency.py [--captions 1000000] [--no-scan] [--folder DIR]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FILES = ["clotho/development.csv", "clotho/validation.csv", "clotho/evaluation.csv", "audiocaps/train.csv",
         "audiocaps/val.csv", "audiocaps/test.csv"]


def rss_mb() -> float:
    """The resident set now (``/proc/self/statm``)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # kB on Linux


def write_captions(path: Path, n: int, seed: int = 0) -> int:
    """``n`` captions drawn with replacement from the shared files; returns the pool size."""
    import numpy as np

    from clapkit.audit.frequency import stream_captions

    pool = [t for f in FILES for t in stream_captions(str(SHARED / "captions" / f))]
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["audio", "caption"])
        for start in range(0, n, 100_000):
            idx = rng.integers(0, len(pool), size=min(100_000, n - start))
            w.writerows((f"{i}.wav", pool[i]) for i in idx)
    return len(pool)


def scan_child(path: str, labels: str) -> None:
    """The in-memory leakage path on ``path``: prints its seconds."""
    from clapkit.audit.leakage import default_word_list, scan
    from clapkit.data.files import Skipped
    from clapkit.data.specs import ReadOptions, read_pairs
    from clapkit.data.text import load_label_names

    words = default_word_list(load_label_names(labels))
    t0 = time.perf_counter()
    pairs = read_pairs(f"csv:{path}", ReadOptions("audio", require_media=False), Skipped())
    scan(pairs, words)
    print(json.dumps({"seconds": time.perf_counter() - t0, "pairs": len(pairs)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--captions", type=int, default=1_000_000)
    ap.add_argument("--no-scan", action="store_true", help="skip the in-memory leakage scan's comparison")
    ap.add_argument("--folder", type=Path, default=None, help="where the temporary CSV goes (default: a temp dir)")
    ap.add_argument("--scan-child", nargs=2, metavar=("CSV", "LABELS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    labels = f"esc50:{SHARED / 'esc50'}"
    if args.scan_child:
        scan_child(*args.scan_child)
        return

    from clapkit.audit.frequency import count_files, stream_captions
    from clapkit.audit.leakage import default_word_list, is_word, lemma, stem, tokenize
    from clapkit.data.text import load_label_names

    words = default_word_list(load_label_names(labels))
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        path = Path(tmp) / "captions.csv"
        t0 = time.perf_counter()
        pool = write_captions(path, args.captions)
        write_s = time.perf_counter() - t0
        rss_start = rss_mb()

        t0 = time.perf_counter()
        tokens = sum(len(tokenize(t)) for t in stream_captions(str(path)))
        base_s = time.perf_counter() - t0
        peak_base = peak_mb()

        t0 = time.perf_counter()
        cold = count_files([str(path)], words)
        cold_s = time.perf_counter() - t0
        rss_cold = rss_mb()
        t0 = time.perf_counter()
        warm = count_files([str(path)], words)
        warm_s = time.perf_counter() - t0
        # bounded memory: the resident set after 100k captions and after all of them, one more pass
        from clapkit.audit.frequency import concept_frequencies

        stream = stream_captions(str(path))
        concept_frequencies(itertools.islice(stream, 100_000), words)
        rss_100k = rss_mb()
        concept_frequencies(stream_captions(str(path)), words)
        rss_all = rss_mb()
        assert cold == warm and cold.captions == args.captions
        out = {
            "benchmark": "concept_frequency", "captions": args.captions, "pool": pool, "classes": len(words),
            "csv_mb": round(path.stat().st_size / 2**20, 1), "write_s": round(write_s, 2), "tokens": tokens,
            "baseline_s": round(base_s, 2), "baseline_captions_per_s": round(args.captions / base_s),
            "count_cold_s": round(cold_s, 2), "count_cold_captions_per_s": round(args.captions / cold_s),
            "count_warm_s": round(warm_s, 2), "count_warm_captions_per_s": round(args.captions / warm_s),
            "warm_vs_baseline_time": round(warm_s / base_s, 2),
            "rss_mb_before": round(rss_start, 1), "rss_mb_after_count": round(rss_cold, 1),
            "rss_mb_after_100k": round(rss_100k, 1), "rss_mb_after_all": round(rss_all, 1),
            "peak_rss_mb_after_baseline": round(peak_base, 1), "peak_rss_mb": round(peak_mb(), 1),
            "peak_rss_vs_baseline": round(peak_mb() / peak_base, 3),
            "caches": {"stem": stem.cache_info().currsize, "lemma": lemma.cache_info().currsize,
                       "is_word": is_word.cache_info().currsize},
            "top_paper": dict(sorted(cold.paper.items(), key=lambda kv: -kv[1])[:3]),
            "cpu": os.cpu_count(), "python": sys.version.split()[0],
        }
        if not args.no_scan:
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--scan-child", str(path), labels], capture_output=True,
                                  text=True, check=True)
            child = json.loads(proc.stdout.strip().splitlines()[-1])
            out.update(scan_in_memory_s=round(child["seconds"], 2), scan_in_memory_peak_rss_mb=round(
                peak_mb(resource.RUSAGE_CHILDREN), 1), scan_process_s=round(time.perf_counter() - t0, 2))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
