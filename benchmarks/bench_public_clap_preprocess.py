"""Cost of per-clip preprocessing for a public CLAP (``HFDualEncoder.preprocess``).

Each clip goes through transformers' ``ClapFeatureExtractor`` on its own, with numpy's
generator seeded by the clip's key, so its input does not depend on the batch. The
baseline, in the same process, is one extractor call on the whole batch (what clapkit
did before, with one seed per call). Both run on the same 32 clips (half shorter than
the 10 s window, half longer, 48 kHz as laion/clap-htsat-*), for a rand_trunc and a
fusion extractor. Prints one JSON line per extractor: seconds per batch and the ratio.

Usage: python bench_public_clap_preprocess.py [--repeats 5]
"""

import argparse
import json
import time
import types

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from transformers import ClapFeatureExtractor

    from clapkit.models.hf_dual import HFDualEncoder

    rng = np.random.default_rng(0)
    sr = 48000
    clips = [rng.standard_normal(int(sr * s)).astype(np.float32) * 0.1 for s in np.r_[np.linspace(2, 9, 16),
                                                                                      np.linspace(11, 20, 16)]]
    keys = [f"clip{i}.wav" for i in range(len(clips))]
    for truncation in ("rand_trunc", "fusion"):
        fe = ClapFeatureExtractor(truncation=truncation, padding="repeatpad")  # LAION-CLAP's 48 kHz, 10 s, 64 mels
        model = HFDualEncoder.__new__(HFDualEncoder)  # the preprocessing alone: no weights needed
        torch_module_init(model)
        model.processor, model.medium, model.sample_rate, model.family = fe, "audio", sr, "clap"
        model.model = types.SimpleNamespace(audio_model=types.SimpleNamespace(training=False))  # evaluation

        def batched(fe=fe):
            np.random.seed(0)
            fe(clips, sampling_rate=sr, return_tensors="pt")

        def per_clip(model=model):
            model.preprocess(clips, keys)

        times = {}
        for name, fn in (("batched", batched), ("per_clip", per_clip)):
            fn()  # warm
            t0 = time.perf_counter()
            for _ in range(args.repeats):
                fn()
            times[name] = (time.perf_counter() - t0) / args.repeats
        print(json.dumps({"bench": "public_clap_preprocess", "truncation": truncation, "clips": len(clips),
                          "batched_s": round(times["batched"], 4), "per_clip_s": round(times["per_clip"], 4),
                          "ratio": round(times["per_clip"] / times["batched"], 3)}), flush=True)


def torch_module_init(model) -> None:
    import torch

    torch.nn.Module.__init__(model)


if __name__ == "__main__":
    main()
