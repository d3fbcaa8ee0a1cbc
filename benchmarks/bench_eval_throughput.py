"""Evaluation throughput: clips per second of embed_media on the shared ESC-50 clips
(decode Ogg Vorbis, resample, normalise, forward) against the model forward alone on
the same clips already decoded. Prints one JSON line."""

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import SHARED  # noqa: E402

from clapkit.config import load_config  # noqa: E402
from clapkit.data.audio.labelled import load_labelled  # noqa: E402
from clapkit.data.datasets import ClipDataset  # noqa: E402
from clapkit.inference.embed import embed_media  # noqa: E402
from clapkit.models.dual import DualEncoder  # noqa: E402


def main(batch: int = 32, workers: int = 0) -> None:
    clips = load_labelled(f"esc50:{SHARED / 'esc50'}").clips
    cfg = load_config("small", ["audio.sample_rate=16000", "audio.segment_seconds=5.0"])
    model = DualEncoder(cfg).eval()
    t0 = time.perf_counter()
    embed_media(model, clips, batch, num_workers=workers)
    full = time.perf_counter() - t0
    a = cfg["audio"]
    ds = ClipDataset(clips, a["sample_rate"], a["segment_seconds"])
    waves = torch.stack([ds.tensor(i) for i in range(len(ds))])
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(waves), batch):
            model.encode_media(waves[i : i + batch])
    forward = time.perf_counter() - t0
    print(json.dumps({
        "benchmark": "eval_throughput", "clips": len(clips), "batch": batch, "workers": workers,
        "clips_per_s_with_decoding": len(clips) / full, "clips_per_s_forward_only": len(clips) / forward,
        "ratio_forward_only_over_full": full / forward,
    }))


if __name__ == "__main__":
    main()
