"""A frozen ``hf:`` audio tower's training step against a bare forward + backward of the
projectors on the same batch (same process), CPU.

The step is what the trainer runs when the tower is frozen and not cached
(``train.cache_frozen: false``): the tower's feature extractor and forward under no grad,
then both projectors, the CLIP loss and its backward. The bare step is the projectors, loss
and backward on x computed once, which is what ``train.cache_frozen: true`` leaves after the
first epoch. The ratio is the price of not caching a frozen pretrained tower.

Tower: a random AST with AST-base's input (10.24 s, 128 mel bands, 16 kHz) and a narrow body
(``--width``, ``--layers``), batch 8; text: x_t drawn once (the text tower is not timed).

Usage: python benchmarks/bench_hf_tower_step.py [--width 192] [--layers 4] [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (offline, quiet transformers)
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=192)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    import transformers as tf

    from clapkit.models.dual import Projector
    from clapkit.models.towers.hf_audio import HFAudioTower

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tf.ASTModel(tf.ASTConfig(hidden_size=args.width, num_hidden_layers=args.layers, num_attention_heads=3,
                                 intermediate_size=4 * args.width)).save_pretrained(tmp)
        tf.ASTFeatureExtractor().save_pretrained(tmp)
        tower = HFAudioTower(tmp).eval().requires_grad_(False)
    proj_a, proj_t = Projector(tower.embed_dim, 512, 1024, 2, 0.1), Projector(384, 512, 1024, 2, 0.1)
    opt = torch.optim.AdamW([*proj_a.parameters(), *proj_t.parameters()], lr=1e-4)
    wave, x_t = torch.randn(8, int(10.24 * tower.sample_rate)) * 0.1, torch.randn(8, 384)

    def step(x_a: torch.Tensor) -> None:
        e_a, e_t = F.normalize(proj_a(x_a), dim=-1), F.normalize(proj_t(x_t), dim=-1)
        logits = 20.0 * e_a @ e_t.T
        target = torch.arange(len(logits))
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()

    def full() -> None:
        with torch.no_grad():
            x_a = tower(wave)
        step(x_a)

    with torch.no_grad():
        cached = tower(wave)
    timings = {}
    for name, fn in (("frozen_tower_step", full), ("bare_projector_step", lambda: step(cached))):
        fn()  # warm-up
        t0 = time.perf_counter()
        for _ in range(args.steps):
            fn()
        timings[name] = (time.perf_counter() - t0) / args.steps
    print(json.dumps({"tower": f"AST width {args.width} x {args.layers} layers", "batch": 8, "threads": torch.get_num_threads(),
                      **{k: round(v, 4) for k, v in timings.items()},
                      "overhead_ratio": round(timings["frozen_tower_step"] / timings["bare_projector_step"], 1)}))


if __name__ == "__main__":
    main()
