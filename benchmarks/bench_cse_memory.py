"""Memory of a SimCSE text step: gradient caching at a large batch against the plain loss.

Each setting runs in its own process (so each peak RSS is its own): the shipped MiniLM,
the STS-B training sentences, max length 32, two ``CseTrainer.train_step`` calls (the
first allocates gradients and AdamW's state, about 270 MB for MiniLM's 22.7M
parameters, the same for every setting). Settings:

- ``plain:64``           the plain loss at batch 64 (one graph of 128 rows);
- ``cached:512:128``     the cached loss at batch 512 in chunks of 128 rows (1024 rows in
  all, the graph of one chunk as large as plain:64's);
- ``cached:512:64``      the same with chunks of 64 rows;
- ``plain:512``          the plain loss at batch 512, for reference (one graph of 1024 rows).

Per setting: the peak RSS of the process (``ru_maxrss``), the RSS once the model and data
are loaded (``VmRSS``), and the growth from there to the peak (gradients, optimizer
state and the largest graph of the steps). Prints one JSON line per setting and a summary
with the ratios against the first setting.

Usage: python bench_cse_memory.py [--settings plain:64,cached:512:128,cached:512:64,plain:512]
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import SHARED  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return peak_rss_mb()  # no /proc: the peak so far


def one(setting: str) -> dict:
    import torch

    from clapkit.config import load_config
    from clapkit.training.cse import CseTrainer

    torch.set_num_threads(2)
    kind, batch, *rest = setting.split(":")
    chunk = int(rest[0]) if kind == "cached" else 0
    cfg = load_config("cse-cpu", [f"cse.corpus=stsb:{SHARED / 'sts' / 'stsbenchmark'}", "cse.sts_dev=",
                                  f"cse.batch_size={batch}", f"cse.cache_chunk={chunk}", "cse.steps=2",
                                  "runtime.progress=false", "runtime.device=cpu", "seed=0"])
    with tempfile.TemporaryDirectory() as out:
        trainer = CseTrainer(cfg, out)
        loaded = current_rss_mb()
        trainer.train_step(0)  # allocates gradients and the optimizer state
        t0 = time.perf_counter()
        loss = trainer.train_step(1)[0]
        seconds = time.perf_counter() - t0
    peak = peak_rss_mb()
    return {"setting": setting, "batch_size": int(batch), "rows": 2 * int(batch), "cache_chunk": chunk,
            "loss": loss, "step_seconds": seconds, "peak_rss_mb": peak, "rss_loaded_mb": loaded,
            "growth_mb": peak - loaded}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--settings", default="plain:64,cached:512:128,cached:512:64,plain:512")
    ap.add_argument("--one")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return
    rows = []
    for setting in args.settings.split(","):
        out = subprocess.run([sys.executable, __file__, "--one", setting], capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{setting} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    print(json.dumps({"benchmark": "cse_memory", "baseline": base["setting"],
                      "settings": [r["setting"] for r in rows],
                      "peak_rss_ratio": [r["peak_rss_mb"] / base["peak_rss_mb"] for r in rows],
                      "growth_ratio": [r["growth_mb"] / base["growth_mb"] for r in rows],
                      "step_seconds_per_row": [r["step_seconds"] / r["rows"] for r in rows]}))


if __name__ == "__main__":
    main()
