"""Zero-shot classification: audio embeddings against label-text embeddings.

Each class name (``_`` read as a space) is put into one or more prompt templates; with
several templates the normalised text embeddings of a class are averaged and
renormalised (prompt ensembling, as in CLIP). A clip is assigned the class whose text
embedding has the highest cosine similarity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.labelled import LabelledSet
from ..models.clap import ClapModel
from .embed import embed_audio, embed_text
from .metrics import classification_metrics

DEFAULT_TEMPLATE = "This is a sound of {label}."
ENSEMBLE_TEMPLATES = (
    "This is a sound of {label}.",
    "a sound of {label}.",
    "the sound of {label}.",
    "{label}.",
    "a recording of {label}.",
    "a {label} can be heard.",
)


def class_text_embeddings(model: ClapModel, labels: list[str], templates: list[str] | tuple[str, ...], device="cpu") -> np.ndarray:
    for tpl in templates:
        if "{label}" not in tpl:
            raise ValueError(f"prompt template {tpl!r} has no {{label}} placeholder")
    texts = [tpl.format(label=label) for label in labels for tpl in templates]
    emb = embed_text(model, texts, device=device).reshape(len(labels), len(templates), -1).mean(axis=1)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def zeroshot_eval(
    model: ClapModel, data: LabelledSet, templates: list[str] | tuple[str, ...] = (DEFAULT_TEMPLATE,),
    batch_size: int = 32, device="cpu", progress: bool = False,
) -> dict:
    labels = data.label_texts()
    text_emb = class_text_embeddings(model, labels, templates, device)
    audio_emb = embed_audio(model, data.clips, batch_size, device=device, progress=progress)
    y = np.array([c.label for c in data.clips])
    out = classification_metrics(audio_emb @ text_emb.T, y, data.class_names)
    out["templates"] = list(templates)
    out["skipped"] = data.skipped.to_dict()
    return out


def plot_confusion(confusion: list[list[int]], class_names: list[str], path: str | Path, title: str = "") -> None:
    from ..plotting import pyplot

    plt = pyplot()

    cm = np.asarray(confusion, dtype=float)
    cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    size = max(5.0, 0.22 * n + 3)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), [c.replace("_", " ") for c in class_names], rotation=90, fontsize=7)
    ax.set_yticks(range(n), [c.replace("_", " ") for c in class_names], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "zero-shot confusion (row-normalised)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
