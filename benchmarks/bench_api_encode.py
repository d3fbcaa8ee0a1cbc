"""``clapkit.load(...).encode_audio`` against each owner's own embedding call on the same
100 clips, in the same process (items/s and the ratio; above 1 means clapkit is slower).

- a transformers ClapModel (the layout laion/clap-htsat-* and LAION-CLAP ``.pt`` files load
  as): the owner's call is ``ClapFeatureExtractor`` on the batch, then
  ``get_audio_features``; clapkit runs the extractor on each clip alone (its crop seeded by
  the clip, so a clip's embedding never depends on its batch);
- Perception Encoder audio: ``PeAudioFeatureExtractor`` on the batch, then ``get_audio_embeds``.

Tiny random models (the weights do not change what is measured: the pipeline around the
forward), clips of 1-10 s at the model's rate, batch 16, CPU, one thread. LAION-CLAP's own
``get_audio_embedding_from_data`` cannot join this process (tests/reference/: numpy < 2);
its equality is tested there, not timed here.

Usage: python benchmarks/bench_api_encode.py [--clips 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (offline, quiet transformers)
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from conftest import write_tiny_public_model
    from transformers import AutoModel, AutoProcessor

    import clapkit

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in ("clap", "pe_audio"):
            folder = write_tiny_public_model(family, Path(tmp) / family, dropout=False)
            model = clapkit.load(folder, device="cpu")
            sr = model.sample_rate
            rng = np.random.default_rng(0)
            clips = [(0.1 * rng.standard_normal(int(sr * s))).astype(np.float32)
                     for s in (rng.uniform(1, 10, args.clips) if family == "pe_audio" else rng.uniform(0.3, 2, args.clips))]
            own = AutoModel.from_pretrained(folder).eval()
            if family == "clap":
                from transformers import ClapFeatureExtractor

                fx = ClapFeatureExtractor.from_pretrained(folder)

                def theirs(fx=fx, own=own, clips=clips, sr=sr):
                    with torch.no_grad():
                        for i in range(0, len(clips), 16):
                            own.get_audio_features(**fx(clips[i:i + 16], sampling_rate=sr, return_tensors="pt"))
            else:
                proc = AutoProcessor.from_pretrained(folder)

                def theirs(proc=proc, own=own, clips=clips, sr=sr):
                    with torch.no_grad():
                        for i in range(0, len(clips), 16):
                            a = proc.feature_extractor(clips[i:i + 16], sampling_rate=sr, return_tensors="pt")
                            own.get_audio_embeds(a["input_values"], padding_mask=a["padding_mask"])

            def ours(model=model, clips=clips, sr=sr):
                model.encode_audio(clips, sample_rate=sr, batch_size=16, progress=False)

            t_theirs, t_ours = best(theirs, args.repeats), best(ours, args.repeats)
            out.append({"family": family, "clips": len(clips), "owner_items_per_s": round(len(clips) / t_theirs, 1),
                        "clapkit_items_per_s": round(len(clips) / t_ours, 1), "time_ratio": round(t_ours / t_theirs, 3)})
            print(json.dumps(out[-1]), flush=True)


if __name__ == "__main__":
    main()
