"""What ``--prompt-sweep`` costs: every registered audio prompt set scored on one embedding
of the media, against the same sets run one ``eval zeroshot --prompts NAME`` at a time
(each embedding the media again), in the same process on the same clips (the shared ESC-50
copy, 414 clips), with a model trained here (``clapkit demo``'s recipe, shortened).

Prints one JSON line: seconds for the sweep and for the separate runs, their ratio, the
number of sets, and whether every set's top-1 is the same both ways.

Usage: python benchmarks/bench_prompt_sweep.py [--model CHECKPOINT] [--bootstrap 200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import SHARED


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="a clapkit checkpoint (default: a demo model trained here for 2 epochs)")
    ap.add_argument("--bootstrap", type=int, default=200)
    args = ap.parse_args()
    from clapkit.data.media import load_labelled_media
    from clapkit.evaluation.prompts import zeroshot_texts
    from clapkit.evaluation.zeroshot import prompt_sweep, zeroshot_metrics, zeroshot_scores
    from clapkit.inference.features import embed_items
    from clapkit.models.public.loader import load_model

    model = args.model
    if model is None:
        from clapkit.demo import run_demo

        out = Path(tempfile.mkdtemp()) / "demo"
        run_demo(out, overrides=["train.epochs=2"])
        model = str(out / "checkpoint")
    net = load_model(model, "cpu")
    data = load_labelled_media(f"esc50:{SHARED / 'esc50'}", "audio")

    t0 = time.perf_counter()
    media = embed_items(net, data.clips, ("E",), 32, "cpu")[0]["E"]
    sweep = prompt_sweep(net, data, media, bootstrap=args.bootstrap)
    swept = time.perf_counter() - t0

    t0 = time.perf_counter()
    alone = {}
    for s in sweep["sets"]:
        texts = zeroshot_texts(data.class_names, "audio", s["name"])
        scores = zeroshot_scores(net, data, texts, media_emb=embed_items(net, data.clips, ("E",), 32, "cpu")[0]["E"])
        alone[s["name"]] = zeroshot_metrics(scores, data, args.bootstrap)["top1"]
    separate = time.perf_counter() - t0
    print(json.dumps({"benchmark": "prompt_sweep", "clips": len(data.clips), "sets": len(sweep["sets"]),
                      "sweep_s": round(swept, 2), "separate_runs_s": round(separate, 2),
                      "separate_over_sweep": round(separate / swept, 2),
                      "same_top1": all(alone[s["name"]] == s["top1"] for s in sweep["sets"]),
                      "spread": sweep["spread"]}))


if __name__ == "__main__":
    main()
