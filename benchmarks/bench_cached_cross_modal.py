"""Peak memory of gradient caching over both towers (``losses.cached_cross_modal_backward``)
at a global batch 8x the plain step's, as a ratio to the plain step at 1x.

Two towers with large activations (5 layers of width 1024 on 1024-d inputs, dropout: activations, not weights, dominate), the
CLIP loss; each case runs in its own process, whose peak resident memory (``ru_maxrss``)
is read after one forward and backward. Cases: plain at batch B, plain at 8B (what caching
avoids), cached at 8B in chunks of B. Prints one JSON line per case and the ratios.

Usage: python bench_cached_cross_modal.py [--batch 256]
"""

import argparse
import json
import resource
import subprocess
import sys


def run_case(mode: str, batch: int, chunk: int) -> None:
    import torch

    from clapkit.losses import cached_cross_modal_backward, clip_loss

    torch.manual_seed(0)

    def tower():
        layers = [torch.nn.Linear(1024, 1024), torch.nn.GELU(), torch.nn.Dropout(0.1)]
        for _ in range(4):
            layers += [torch.nn.Linear(1024, 1024), torch.nn.GELU(), torch.nn.Dropout(0.1)]
        return torch.nn.Sequential(*layers, torch.nn.Linear(1024, 256))

    media_tower, text_tower = tower(), tower()
    scale = torch.nn.Parameter(torch.tensor(2.659))
    media, text = torch.randn(batch, 1024), torch.randn(batch, 1024)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def enc(t):
        return lambda x: torch.nn.functional.normalize(t(x), dim=1)

    if mode == "plain":
        clip_loss(enc(media_tower)(media), enc(text_tower)(text), scale.exp()).backward()
    else:
        cached_cross_modal_backward(enc(media_tower), enc(text_tower), list(media.split(chunk)), list(text.split(chunk)),
                                    lambda a, b: clip_loss(a, b, scale.exp()))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"mode": mode, "batch": batch, "chunk": chunk, "peak_mb": peak / 1024, "before_mb": base / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--case", nargs=3, metavar=("MODE", "BATCH", "CHUNK"))
    args = ap.parse_args()
    if args.case:
        run_case(args.case[0], int(args.case[1]), int(args.case[2]))
        return
    b = args.batch
    results = {}
    for name, case in (("plain_1x", ("plain", b, b)), ("plain_8x", ("plain", 8 * b, 8 * b)),
                       ("cached_8x", ("cached", 8 * b, b))):
        out = subprocess.run([sys.executable, __file__, "--case", *map(str, case)], capture_output=True, text=True,
                             check=True).stdout.strip().splitlines()[-1]
        results[name] = json.loads(out)
        print(json.dumps({"bench": "cached_cross_modal", "case": name, **results[name]}), flush=True)
    work = {k: v["peak_mb"] - v["before_mb"] for k, v in results.items()}
    print(json.dumps({"bench": "cached_cross_modal", "cached_8x_over_plain_1x": round(work["cached_8x"] / work["plain_1x"], 3),
                      "plain_8x_over_plain_1x": round(work["plain_8x"] / work["plain_1x"], 3)}))


if __name__ == "__main__":
    main()
