"""Zero-shot classification: media (audio or image) embeddings against label-text embeddings.

Each class name (the data's with ``_`` read as a space, or the names of a class-name file;
one function builds the texts for every command, :func:`~clapkit.evaluation.prompts.zeroshot_texts`)
is put into one or more prompt templates; with
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
from ..errors import ConfigError
from ..inference.embed import embed_media, embed_text, unit_rows
from ..models.dual import DualEncoder
from .metrics import (
    classification_metrics,
    fold_mean_interval,
    multilabel_metrics,
    per_fold,
    weighted_average_precision,
)
from .prompts import (  # noqa: F401  (the default prompts live with the published ones; importable here too)
    DEFAULT_IMAGE_TEMPLATE,
    DEFAULT_TEMPLATE,
    ENSEMBLE_TEMPLATES,
    IMAGE_ENSEMBLE_TEMPLATES,
    ZeroshotTexts,
    class_prompts,
    default_templates,
    zeroshot_texts,
)
from .retrieval import REFERENCE_LANGUAGE
from .uncertainty import weighted_intervals

FOLD_PROTOCOLS = {
    "all-folds": "every clip of every fold, one pooled top-1 (LAION-CLAP's eval_zeroshot_classification.py, "
                 "msclap's ESC-50 example)",
    "fold-K": "the clips of fold K only, e.g. fold-1 (LAION-CLAP's README: ESC-50's first official fold)",
    "per-fold-mean": "each fold's top-1, then their unweighted mean (HEAR's and X-ARES's UrbanSound8K protocol)",
}


def fold_protocol(name: str, where: str = "fold_protocol") -> tuple[list[int] | None, str]:
    """The folds a named zero-shot fold protocol scores (None: all) and the metric it
    reports (:data:`FOLD_PROTOCOLS`): ``all-folds`` -> (None, ``top1``), ``fold-K`` ->
    ([K], ``top1``), ``per-fold-mean`` -> (None, ``top1_fold_mean``)."""
    if name == "all-folds":
        return None, "top1"
    if name == "per-fold-mean":
        return None, "top1_fold_mean"
    if name.startswith("fold-") and name[5:].isdigit():
        return [int(name[5:])], "top1"
    raise ConfigError(f"{where} {name!r}: choose all-folds, fold-K (e.g. fold-1) or per-fold-mean")


def task_folds(folds, protocol: str | None, where: str = "") -> tuple[list[int] | None, str | None]:
    """The folds a zero-shot run scores and the metric it reports, from ``--folds`` or a named
    ``--fold-protocol`` (one of them): (folds or None, the protocol's metric or None)."""
    if not protocol:
        return (list(folds) if folds else None), None
    if folds:
        raise ConfigError(f"{where}give folds or a fold protocol ({protocol}), not both")
    return fold_protocol(str(protocol), f"{where}fold protocol")


def class_text_embeddings(model: DualEncoder, labels: list[str], templates: list[str] | tuple[str, ...], device="cpu") -> np.ndarray:
    """Each label's text embedding: its templates' normalised embeddings averaged and
    renormalised (:func:`class_embeddings` of the filled templates)."""
    for tpl in templates:
        if "{label}" not in tpl:
            raise ValueError(f"prompt template {tpl!r} has no {{label}} placeholder")
    return class_embeddings(model, [[tpl.format(label=label) for tpl in templates] for label in labels], device)


def class_embeddings(model: DualEncoder, texts: list[list[str]], device="cpu") -> np.ndarray:
    """(classes, dim): each class's prompts embedded, their normalised embeddings averaged
    and renormalised (prompt ensembling, as CLIP and CLIP_benchmark's
    ``zero_shot_classifier`` do)."""
    flat = embed_text(model, [t for ts in texts for t in ts], device=device)
    counts = np.array([len(ts) for ts in texts])
    sums = np.add.reduceat(flat, np.cumsum(counts) - counts, axis=0)  # each class's rows summed
    return unit_rows(sums / counts[:, None].astype(flat.dtype))  # the embeddings' own dtype


def zeroshot_scores(model: DualEncoder, data: LabelledSet, texts: ZeroshotTexts | None = None, batch_size: int = 32,
                    device="cpu", progress: bool = False, num_workers: int = 0, media_emb: np.ndarray | None = None,
                    owner: np.ndarray | None = None) -> np.ndarray:
    """(items, classes) cosines of the media and each class's text embedding. ``texts``:
    the task's prompts (:func:`~clapkit.evaluation.prompts.zeroshot_texts`; default: the
    medium's prompt on the data's names); ``media_emb``: the items' E already computed
    (from the embedding cache), else embedded here; with ``owner`` (each row's item) its
    rows are windows and an item's score for a class is the highest of its windows'
    (``--pool max``, :mod:`clapkit.inference.windows`)."""
    texts = texts or zeroshot_texts(data.class_names, model.medium, class_ids=data.class_ids)
    if len(texts.texts) != len(data.class_names):
        raise ValueError(f"prompts for {len(texts.texts)} classes; the data has {len(data.class_names)}")
    text_emb = class_embeddings(model, texts.texts, device)
    if media_emb is None:
        media_emb = embed_media(model, data.clips, batch_size, device=device, num_workers=num_workers, progress=progress)
    scores = media_emb @ text_emb.T
    if owner is not None:
        pooled = np.full((len(data.clips), scores.shape[1]), -np.inf, dtype=scores.dtype)
        np.maximum.at(pooled, owner, scores)
        scores = pooled
    return scores


def zeroshot_metrics(scores: np.ndarray, data: LabelledSet, bootstrap: int = 0, seed: int = 0,
                     keep_ranks: bool = False) -> dict:
    """The metrics of zero-shot ``scores`` on ``data`` (single- or multi-label), with
    bootstrap intervals when ``bootstrap`` resamples are asked for; ``keep_ranks``: each
    item's rank of its class too (``ranks``, single-label sets). A single-label set with
    official folds also gets each fold's top-1 and their mean (``per_fold``,
    ``top1_fold_mean``: UrbanSound8K's protocol as HEAR and X-ARES report it)."""
    if data.multilabel:
        targets = data.targets()
        out = multilabel_metrics(scores, targets, data.class_names)
        if bootstrap:
            share = float(targets.any(axis=0).mean())  # the classes with a positive in the data

            def both(w):
                # a class whose positives one resample misses is left out of that resample's mean;
                # CLIP_benchmark's 0 is for the classes with no positive in the data, a fixed share
                m = float(np.nanmean(weighted_average_precision(scores, targets, w)))
                return {"mAP": m, "mAP_clip_benchmark": m * share}

            out["ci"] = weighted_intervals(both, len(scores), bootstrap, seed)
    else:
        y = np.array([c.label for c in data.clips])
        out = classification_metrics(scores, y, data.class_names, bootstrap=bootstrap, seed=seed, keep_ranks=True)
        folds = [c.fold for c in data.clips]
        by_fold = per_fold(out["ranks"] == 1, folds)
        if by_fold is not None:
            out["per_fold"], out["top1_fold_mean"] = by_fold, by_fold["mean"]
            if bootstrap:
                out["ci"]["top1_fold_mean"] = fold_mean_interval(out["ranks"] == 1, folds, bootstrap, seed)
        if not keep_ranks:
            out.pop("ranks")
    if bootstrap:
        out["bootstrap"] = {"resamples": bootstrap, "seed": seed, "level": 0.95, "over": "clips"}
    out["multilabel"] = data.multilabel
    return out


def zeroshot_eval(
    model: DualEncoder, data: LabelledSet, templates: list[str] | tuple[str, ...] | dict | str | None = None,
    batch_size: int = 32, device="cpu", progress: bool = False, num_workers: int = 0, bootstrap: int = 0,
    seed: int = 0, class_names: list[str] | str | None = None, keep_ranks: bool = False,
) -> dict:
    """Top-1/5, per-class accuracy and confusion (a multi-label set: mAP and the rest);
    ``templates`` default to the medium's prompt (or each class's own prompts, a dict, or
    a prompt spec); ``class_names`` replace the data's in the prompts (a list, as given, or
    a ``--classnames`` spec); ``num_workers`` DataLoader processes decode the media (the
    result does not depend on it)."""
    texts = zeroshot_texts(data.class_names, model.medium, list(templates) if isinstance(templates, tuple) else templates,
                           class_names, data.class_ids)
    scores = zeroshot_scores(model, data, texts, batch_size, device, progress, num_workers)
    out = zeroshot_metrics(scores, data, bootstrap, seed, keep_ranks=keep_ranks)
    out.update(texts_record(texts))
    out["skipped"] = data.skipped.to_dict()
    return out


def texts_record(texts: ZeroshotTexts) -> dict:
    """What a zero-shot result records of its prompts: the templates, where they come
    from, and the class names written into them (every result, single- or multi-label)."""
    return {"templates": texts.templates if isinstance(texts.templates, dict) else list(texts.templates),
            "prompts": texts.source, "classnames": texts.classnames, "class_names_used": list(texts.names)}


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


def _score_texts(model: DualEncoder, data: LabelledSet, texts: ZeroshotTexts, media_emb: np.ndarray, owner,
                 bootstrap: int, seed: int, device) -> tuple[dict, np.ndarray]:
    """One set of prompts scored on embeddings already computed (a sweep's step): the main
    metric (top-1, a multi-label set's mAP) with its interval and the first class's prompts,
    and what a paired comparison needs per item (correctness, or the scores)."""
    metric = "mAP" if data.multilabel else "top1"
    scores = zeroshot_scores(model, data, texts, device=device, media_emb=media_emb, owner=owner)
    m = zeroshot_metrics(scores, data, bootstrap, seed, keep_ranks=not data.multilabel)
    per_item = scores if data.multilabel else m["ranks"] == 1
    return {metric: m[metric], "ci": m.get("ci", {}).get(metric), "first_prompts": texts.texts[0]}, per_item


def _paired_against(results: dict, per_item: dict, reference: str, key: str, data: LabelledSet, bootstrap: int,
                    seed: int) -> None:
    """Each result but ``reference``'s gets ``key``: its difference from the reference on the
    same items with a paired-bootstrap interval, and McNemar's exact p for top-1 (the paired
    bootstrap's p for a multi-label set's mAP)."""
    from .uncertainty import mcnemar, paired_bootstrap

    base, targets = per_item[reference], data.targets() if data.multilabel else None
    metric = "mAP" if data.multilabel else "top1"
    for name, r in results.items():
        if name == reference:
            continue
        if data.multilabel:
            def diff(w, a=per_item[name], b=base, y=targets):
                return float(np.nanmean(weighted_average_precision(a, y, w))
                             - np.nanmean(weighted_average_precision(b, y, w)))

            lo, hi, p = paired_bootstrap(diff, len(targets), bootstrap or 1000, seed)
            r[key] = {"difference": r[metric] - results[reference][metric], "ci": [lo, hi], "p_value": p,
                      "test": "paired_bootstrap"}
        else:
            d = per_item[name].astype(float) - base.astype(float)
            lo, hi, _ = paired_bootstrap(lambda w, d=d: float((w * d).sum() / w.sum()), len(d), bootstrap or 1000, seed)
            r[key] = {"difference": float(d.mean()), "ci": [lo, hi], "p_value": mcnemar(per_item[name], base)["p_value"],
                      "test": "mcnemar_exact"}


def prompt_sweep(model: DualEncoder, data: LabelledSet, media_emb: np.ndarray, owner: np.ndarray | None = None,
                 default=None, classnames=None, bootstrap: int = 1000, seed: int = 0, device="cpu") -> dict:
    """How much the prompt moves a zero-shot number: every registered prompt set of the
    medium (:func:`~clapkit.evaluation.prompts.registered_prompt_sets`) scored on one
    embedding of the media (``media_emb``, with ``owner`` for ``--pool max`` windows), each
    with its 95% interval, the spread (best minus worst), and a paired comparison with
    ``default`` (the ``--prompts`` given, else the medium's default): the difference with
    its paired-bootstrap interval and McNemar's exact p for top-1 (the paired bootstrap's p
    for a multi-label set's mAP). A set that does not apply to the data (its own class
    phrases lack one of the classes) is listed under ``not_applicable`` with the reason.
    Each set's number equals an ``eval zeroshot --prompts NAME`` run on the same items."""
    from ..errors import ClapkitError
    from .prompts import registered_prompt_sets

    metric = "mAP" if data.multilabel else "top1"
    spec = default or "clapkit:default"
    default = spec if isinstance(spec, str) else "task prompts"  # a list of templates, a class -> prompts map
    sets = {e["name"]: e["name"] for e in registered_prompt_sets(model.medium)}
    if default not in sets:
        sets = {default: spec, **sets}
    results, per_item, skipped = {}, {}, {}
    for name, prompts in sets.items():
        try:
            texts = zeroshot_texts(data.class_names, model.medium, prompts, classnames, data.class_ids)
        except ClapkitError as exc:
            skipped[name] = str(exc)
            continue
        results[name], per_item[name] = _score_texts(model, data, texts, media_emb, owner, bootstrap, seed, device)
        results[name] = {"name": name, **results[name]}
    if default not in results:
        raise ClapkitError(f"--prompt-sweep: the default prompts {default!r} do not apply to the data "
                           f"({skipped.get(default, 'not scored')})")
    _paired_against(results, per_item, default, "vs_default", data, bootstrap, seed)
    values = [r[metric] for r in results.values()]
    return {"metric": metric, "default": default, "sets": list(results.values()),
            "spread": float(max(values) - min(values)), "best": max(results, key=lambda k: results[k][metric]),
            "worst": min(results, key=lambda k: results[k][metric]), "not_applicable": skipped,
            "items": len(data.clips)}


def load_language_prompts(spec, class_names: list[str]) -> tuple[dict[str, dict], str]:
    """The prompts of each language of a ``--language-prompts`` file (YAML or JSON; or the
    mapping itself): ``{en: {templates: [...], classnames: {data class: name}}, de: {...}}``,
    keyed by language code. Every language needs ``templates`` (each with ``{label}``);
    ``classnames`` maps each of the data's classes (by its name, ``_``, spaces and case
    aside) to the name written into that language's prompts, and may be left out for
    English (``en``: the data's own names). Returns ({language: {templates, names}}, where)."""
    from ..errors import DataError
    from .prompts import _read_file, name_key

    where = "the given language prompts" if isinstance(spec, dict) else str(spec)
    data = dict(spec) if isinstance(spec, dict) else _read_file(Path(spec))
    if not isinstance(data, dict) or not data:
        raise DataError("expected a mapping from language code to {templates: [...], classnames: {...}}", where)
    out = {}
    for lang, entry in data.items():
        if not isinstance(lang, str) or not lang.strip():
            raise DataError(f"a language key read as {lang!r}: quote language codes that YAML reads as booleans or "
                            "numbers ('no': ..., 'on': ...)", where)
        templates = entry.get("templates") if isinstance(entry, dict) else None
        if not isinstance(templates, list) or not templates:
            raise DataError(f"language {lang!r}: no templates (give {lang}: {{templates: [...]}})", where)
        bad = [t for t in templates if not isinstance(t, str) or "{label}" not in t]
        if bad:
            raise DataError(f"language {lang!r}: template {bad[0]!r} has no {{label}} placeholder", where)
        given = entry.get("classnames")
        if given is None and lang == REFERENCE_LANGUAGE:
            names = [n.replace("_", " ") for n in class_names]
        elif not isinstance(given, dict):
            raise DataError(f"language {lang!r}: needs classnames, a mapping from each of the data's classes to its "
                            f"name in {lang} (only {REFERENCE_LANGUAGE} may leave them out)", where)
        else:
            keyed = {name_key(str(k)): v for k, v in given.items()}
            names = []
            for c in class_names:
                name = given.get(c, keyed.get(name_key(c)))
                if not isinstance(name, str) or not name.strip():
                    raise DataError(f"language {lang!r}: class {c!r} of the data has no name in its classnames", where)
                names.append(name.strip())
        out[lang.strip()] = {"templates": list(templates), "names": names}
    return out, where


def language_sweep(model: DualEncoder, data: LabelledSet, media_emb: np.ndarray, spec, owner: np.ndarray | None = None,
                   bootstrap: int = 1000, seed: int = 0, device="cpu") -> dict:
    """Zero-shot in each language of a ``--language-prompts`` file
    (:func:`load_language_prompts`) on one embedding of the media (``media_emb``, with
    ``owner`` for ``--pool max`` windows), as :func:`prompt_sweep` scores prompt sets: each
    language's top-1 (a multi-label set: mAP) with its 95% interval, and against English
    (``vs_en``; the same items, so paired): the difference (language minus English) with
    its paired-bootstrap interval and McNemar's exact p for top-1 (the paired bootstrap's p
    for mAP). ``tokenizer``: how the text tower's tokenizer covers the language's prompts
    (:func:`~clapkit.evaluation.retrieval.tokenizer_coverage`). Each language's number
    equals an ``eval zeroshot --template ... --classnames ...`` run with its prompts."""
    from .retrieval import tokenizer_coverage

    ref = REFERENCE_LANGUAGE

    languages, where = load_language_prompts(spec, data.class_names)
    metric = "mAP" if data.multilabel else "top1"
    results, per_item = {}, {}
    for lang, entry in sorted(languages.items(), key=lambda kv: (kv[0] != ref, kv[0])):
        texts = zeroshot_texts(data.class_names, model.medium, entry["templates"], entry["names"], data.class_ids)
        r, per_item[lang] = _score_texts(model, data, texts, media_emb, owner, bootstrap, seed, device)
        results[lang] = {**r, "templates": entry["templates"], "class_names_used": entry["names"],
                         "tokenizer": tokenizer_coverage(model, [t for ts in texts.texts for t in ts])}
    if ref in results:
        _paired_against(results, per_item, ref, f"vs_{ref}", data, bootstrap, seed)
    return {"metric": metric, "file": where, "reference": ref if ref in results else None, "languages": results,
            "items": len(data.clips)}
