"""How much one centre segment loses on long clips, and what sliding windows win back.

Synthetic long clips: each clip of a labelled folder (``folder:DIR``, e.g. the demo's
``data/unseen``) is placed at a seeded random offset in ``--seconds`` of low noise, so
the sound is rarely in the centre. Zero-shot top-1 of a checkpoint on the original clips,
then on the long clips with the centre segment, windows pooled by mean, and windows
pooled by max (window = the model's segment length, hop half of it); then the embedding
cache: the seconds of a max-pooled run that fills it and of a mean-pooled run that reads
the same windows back (their ratio; same process). Prints one JSON line.

Usage: python bench_long_clips.py [--model RUN/checkpoint --data RUN/data/unseen] [--seconds 20]
(without --model it first trains the demo, ``clapkit demo``, into a temporary folder: ~90 s)
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def main() -> None:
    from clapkit.data.audio.labelled import load_labelled
    from clapkit.data.records import LabelledSet
    from clapkit.evaluation.metrics import classification_metrics
    from clapkit.evaluation.zeroshot import zeroshot_scores
    from clapkit.inference.features import embed_items
    from clapkit.inference.windows import Windows
    from clapkit.models.public.loader import load_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--data", help="a folder of class subfolders (with --model)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--noise", type=float, default=0.01)
    args = ap.parse_args()
    if args.model is None:
        from clapkit.demo import run_demo

        demo = Path(tempfile.mkdtemp(prefix="clapkit-demo-"))
        run_demo(demo)
        args.model, args.data = str(demo / "checkpoint"), str(demo / "data" / "unseen")
    net = load_model(args.model, "cpu")
    seg = net.cfg["audio"]["segment_seconds"]
    data = load_labelled(f"folder:{args.data}")
    rng = np.random.default_rng(0)
    y = np.array([c.label for c in data.clips])

    def top1(d, windows=None, cache=None):
        feats, info = embed_items(net, d.clips, ("E",), windows=windows, cache=cache, model_spec=args.model,
                                  pooled=windows is None or windows.pool == "mean")
        scores = zeroshot_scores(net, d, media_emb=feats["E"], owner=info.get("owner"))
        return classification_metrics(scores, y, d.class_names)["top1"]

    result = {"clips": len(y), "classes": len(data.class_names), "clip_seconds": seg, "long_seconds": args.seconds,
              "original": top1(data)}
    with tempfile.TemporaryDirectory() as tmp:
        long = []
        for k, c in enumerate(data.clips):
            wave, rate = sf.read(c.media, dtype="float32")
            out = (args.noise * rng.normal(size=int(args.seconds * rate))).astype(np.float32)
            at = int(rng.integers(0, len(out) - len(wave)))
            out[at : at + len(wave)] += wave
            path = Path(tmp) / f"{k}.wav"
            sf.write(path, out, rate, subtype="FLOAT")
            long.append(type(c)(path, c.label, c.fold, c.where))
        ld = LabelledSet(long, data.class_names, data.skipped)
        result["centre_segment"] = top1(ld)
        for pool in ("mean", "max"):
            result[f"windows_{pool}"] = top1(ld, Windows(seg, seg / 2, pool))
        cache, timed = Path(tmp) / "cache", {}
        for pool in ("max", "mean"):
            start = time.perf_counter()
            assert top1(ld, Windows(seg, seg / 2, pool), cache) == result[f"windows_{pool}"]
            timed[pool] = time.perf_counter() - start
        result["cache"] = {"max_fills_s": round(timed["max"], 2), "mean_reads_s": round(timed["mean"], 2),
                           "ratio": round(timed["max"] / timed["mean"], 1)}
    result["chance"] = 1 / len(data.class_names)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
