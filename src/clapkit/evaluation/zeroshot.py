"""Zero-shot classification: media (audio or image) embeddings against label-text embeddings.

Each class name (``_`` read as a space) is put into one or more prompt templates; with
several templates the normalised text embeddings of a class are averaged and
renormalised (prompt ensembling, as in CLIP). A clip is assigned the class whose text
embedding has the highest cosine similarity. A multi-label set (FSD50K) is scored per
class on those cosines instead: mAP, mAUC, d-prime and LRAP
(:func:`~clapkit.evaluation.metrics.multilabel_metrics`), as LAION-CLAP scores AudioSet.

With ``bootstrap`` resamples, each accuracy (or the mAP) gets a 95% interval over the
clips (:mod:`clapkit.evaluation.uncertainty`), seeded by ``seed``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.records import LabelledSet
from ..inference.embed import embed_media, embed_text, unit_rows
from ..models.dual import DualEncoder
from .metrics import (
    classification_metrics,
    multilabel_metrics,
    weighted_average_precision,
)
from .prompts import (  # noqa: F401  (the default prompts live with the published ones; importable here too)
    DEFAULT_IMAGE_TEMPLATE,
    DEFAULT_TEMPLATE,
    ENSEMBLE_TEMPLATES,
    IMAGE_ENSEMBLE_TEMPLATES,
    class_prompts,
    default_templates,
)
from .uncertainty import weighted_interval


def class_text_embeddings(model: DualEncoder, labels: list[str], templates: list[str] | tuple[str, ...], device="cpu") -> np.ndarray:
    for tpl in templates:
        if "{label}" not in tpl:
            raise ValueError(f"prompt template {tpl!r} has no {{label}} placeholder")
    texts = [tpl.format(label=label) for label in labels for tpl in templates]
    emb = embed_text(model, texts, device=device).reshape(len(labels), len(templates), -1).mean(axis=1)
    return unit_rows(emb)


def zeroshot_scores(model: DualEncoder, data: LabelledSet, prompts: list[str] | dict[str, list[str]] | None = None,
                    class_names: list[str] | None = None, batch_size: int = 32, device="cpu", progress: bool = False,
                    num_workers: int = 0, media_emb: np.ndarray | None = None,
                    owner: np.ndarray | None = None) -> tuple[np.ndarray, list[list[str]]]:
    """(items, classes) cosines of the media and each class's text embedding, and the
    prompts of each class. ``prompts``: templates with ``{label}`` (default: the
    medium's prompt) or each class's own prompts (keyed by the data's class names);
    ``class_names`` replace the data's in the prompts, as given (:mod:`.prompts`; the data's
    own names have "_" read as spaces); ``media_emb``: the
    items' E already computed (from the embedding cache), else embedded here; with ``owner``
    (each row's item) its rows are windows and an item's score for a class is the highest
    of its windows' (``--pool max``, :mod:`clapkit.inference.windows`)."""
    templates = prompts if prompts else default_templates(model.medium)
    # the data's own names lose their "_" (door_wood_knock -> door wood knock); names given
    # by --classnames are used as given (CLIP_benchmark's CIFAR-100 names keep theirs)
    names = list(class_names) if class_names else [n.replace("_", " ") for n in data.class_names]
    per_class = class_prompts(templates, names, data.class_names)
    if isinstance(templates, dict):
        flat = embed_text(model, [p for ps in per_class for p in ps], device=device)
        bounds = np.cumsum([0] + [len(ps) for ps in per_class])
        text_emb = np.stack([flat[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
        text_emb = unit_rows(text_emb)
    else:
        text_emb = class_text_embeddings(model, names, templates, device)
    if media_emb is None:
        media_emb = embed_media(model, data.clips, batch_size, device=device, num_workers=num_workers, progress=progress)
    scores = media_emb @ text_emb.T
    if owner is not None:
        pooled = np.full((len(data.clips), scores.shape[1]), -np.inf, dtype=scores.dtype)
        np.maximum.at(pooled, owner, scores)
        scores = pooled
    return scores, per_class


def zeroshot_metrics(scores: np.ndarray, data: LabelledSet, bootstrap: int = 0, seed: int = 0,
                     keep_ranks: bool = False) -> dict:
    """The metrics of zero-shot ``scores`` on ``data`` (single- or multi-label), with
    bootstrap intervals when ``bootstrap`` resamples are asked for; ``keep_ranks``: each
    item's rank of its class too (``ranks``, single-label sets)."""
    if data.multilabel:
        targets = data.targets()
        out = multilabel_metrics(scores, targets, data.class_names)
        if bootstrap:
            out["ci"] = {"mAP": weighted_interval(
                lambda w: float(np.nanmean(weighted_average_precision(scores, targets, w))), len(scores), bootstrap, seed)}
    else:
        y = np.array([c.label for c in data.clips])
        out = classification_metrics(scores, y, data.class_names, bootstrap=bootstrap, seed=seed, keep_ranks=keep_ranks)
    if bootstrap:
        out["bootstrap"] = {"resamples": bootstrap, "seed": seed, "level": 0.95, "over": "clips"}
    out["multilabel"] = data.multilabel
    return out


def zeroshot_eval(
    model: DualEncoder, data: LabelledSet, templates: list[str] | tuple[str, ...] | dict | None = None,
    batch_size: int = 32, device="cpu", progress: bool = False, num_workers: int = 0, bootstrap: int = 0,
    seed: int = 0, class_names: list[str] | None = None, keep_ranks: bool = False,
) -> dict:
    """Top-1/5, per-class accuracy and confusion (a multi-label set: mAP and the rest);
    ``templates`` default to the medium's prompt (or each class's own prompts, a dict);
    ``num_workers`` DataLoader processes decode the media (the result does not depend on it)."""
    templates = templates or default_templates(model.medium)
    scores, per_class = zeroshot_scores(model, data, templates, class_names, batch_size, device, progress, num_workers)
    out = zeroshot_metrics(scores, data, bootstrap, seed, keep_ranks=keep_ranks)
    out["templates"] = templates if isinstance(templates, dict) else list(templates)
    if class_names:
        out["class_names_used"] = list(class_names)
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
