"""``clapkit demo``: the whole pipeline on the embedded synthetic set, offline.

Writes the synthetic set, trains a CLAP (small audio CNN + the shipped MiniLM) with the
``demo`` preset, then evaluates zero-shot classification on the classes never used in
training and retrieval on held-out clips of the seen classes. ``modality="image"``
does the same for a CLIP (small image CNN + MiniLM, preset ``demo-image``) on the
synthetic pictures of :mod:`clapkit.data.image.synthetic`. Outputs in ``out``::

    data/                the synthetic set (see clapkit.data.audio.synthetic)
    checkpoint/ last/    the trained model (best by validation loss) and the last epoch
    metrics.json         zero-shot (with chance level) and retrieval metrics, timings
    confusion_unseen.png training_curve.png
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .config import load_config
from .data.audio.synthetic import write_synthetic
from .data.files import Skipped
from .data.image.synthetic import write_synthetic_images
from .data.media import load_labelled_media, load_media_pairs
from .errors import ConfigError
from .evaluation.retrieval import retrieval_eval
from .evaluation.zeroshot import plot_confusion, zeroshot_eval
from .models.dual import DualEncoder
from .training.clap import train_clap


def run_demo(out: str | Path, overrides: list[str] | None = None, modality: str = "audio") -> dict:
    out = Path(out)
    t0 = time.time()
    if modality not in ("audio", "image"):
        raise ConfigError(f"--modality {modality!r}: choose audio or image")
    cfg = load_config("demo" if modality == "audio" else "demo-image", overrides)
    if modality == "audio":
        meta = write_synthetic(out / "data", seed=cfg["seed"], sr=cfg["audio"]["sample_rate"],
                               seconds=cfg["audio"]["segment_seconds"])
    else:
        meta = write_synthetic_images(out / "data", seed=cfg["seed"])
    t_data = time.time() - t0
    cfg["data"]["train"] = [f"csv:{out / 'data' / 'train.csv'}"]
    summary = train_clap(cfg, out)
    t_train = time.time() - t0 - t_data

    model = DualEncoder.load(out / "checkpoint")
    unseen = load_labelled_media(f"folder:{out / 'data' / 'unseen'}", modality)
    zs = zeroshot_eval(model, unseen)
    seen = load_labelled_media(f"folder:{out / 'data' / 'seen'}", modality)
    zs_seen = zeroshot_eval(model, seen)
    retrieval = retrieval_eval(model, load_media_pairs(cfg, f"csv:{out / 'data' / 'test.csv'}", Skipped()))
    plot_confusion(zs["confusion"], unseen.class_names, out / "confusion_unseen.png",
                   "zero-shot on never-seen classes")
    _plot_curve(out / "metrics.csv", out / "training_curve.png")

    metrics = {
        "zeroshot_unseen": {
            "accuracy": zs["accuracy"], "chance": zs["chance"], "accuracy_over_chance": zs["accuracy"] / zs["chance"],
            "top5": zs.get("top5"), "mean_class_accuracy": zs["mean_class_accuracy"],
            "clips": zs["clips"], "classes": unseen.class_names, "per_class": zs["per_class"],
            "template": zs["templates"][0],
        },
        "modality": modality,
        "zeroshot_seen_heldout": {"accuracy": zs_seen["accuracy"], "chance": zs_seen["chance"], "clips": zs_seen["clips"]},
        "retrieval_heldout": retrieval,
        "train": summary,
        "data": {k: meta[k] for k in ("train_pairs", "test_pairs", "seed")},
        "seconds": {"data": t_data, "train": t_train, "total": time.time() - t0},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _plot_curve(csv_path: Path, png: Path) -> None:
    import csv

    from .plotting import pyplot

    plt = pyplot()

    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    epochs = [int(r["epoch"]) for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key in ("train_loss", "val_loss"):
        ax.plot(epochs, [float(r[key]) for r in rows], marker="o", label=key.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylabel("CLIP loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
