"""One cell of ``clapkit bench``: a model on a task, its metrics with intervals, the
leakage columns of a model that names its training captions, and its provenance."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np


def task_medium(task: dict, model_medium: str) -> str:
    """The medium of a task: its own ``medium``, else the one its spec's kind is read
    for, else (a kind both media read) the model's."""
    from ..data import specs

    if task.get("medium"):
        return task["medium"]
    role = specs.LABELLED if task["type"] == "zeroshot" else specs.PAIRS
    media = [m for m in ("audio", "image") if specs.is_kind(task["data"], role, m)
             or (role == specs.PAIRS and specs.is_kind(task["data"], specs.LABELLED, m))]
    return media[0] if len(media) == 1 else model_medium


def cell_name(model: str, task: str) -> str:
    return f"{model}__{task}"


def fingerprint_files(paths) -> str:
    """sha256 of the sorted (path, size) of the files (their bytes are not read)."""
    h = hashlib.sha256()
    for p in sorted(str(p) for p in paths):
        size = os.path.getsize(p) if os.path.isfile(p) else -1
        h.update(f"{p}\t{size}\n".encode())
    return h.hexdigest()[:16]


def model_fingerprint(spec: str) -> str:
    path = Path(spec)
    if not path.exists():
        return hashlib.sha256(spec.encode()).hexdigest()[:16]  # a hub name: the name is what is known
    files = [p for p in sorted(path.rglob("*")) if p.is_file()] if path.is_dir() else [path]
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(path) if path.is_dir() else p.name}\t{p.stat().st_size}\n".encode())
        if p.name == "config.json":
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def versions() -> dict:
    import torch
    import transformers

    from .. import __version__

    return {"clapkit": __version__, "torch": torch.__version__, "transformers": transformers.__version__}


def write_cell(folder: Path, name: str, record: dict, arrays: dict[str, np.ndarray]) -> None:
    """The arrays, then the JSON (the JSON's presence marks the cell done), each atomically."""
    tmp = folder / f".{name}.npz.tmp"
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    os.replace(tmp, folder / f"{name}.npz")
    tmp = folder / f".{name}.json.tmp"
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, folder / f"{name}.json")


def _row(metric: str, value: float, ci=None, n: int | None = None) -> dict:
    lo, hi = ci if ci is not None else (None, None)
    return {"metric": metric, "value": value, "ci_low": lo, "ci_high": hi, "n": n}


def leakage_columns(captions: list[str], data, correct: np.ndarray | None, medium: str) -> list[dict]:
    """The leakage columns of a zero-shot cell (:func:`clapkit.audit.leakage.zeroshot_leakage`)."""
    from ..audit.leakage import zeroshot_leakage

    r = zeroshot_leakage(captions, data, correct, medium)
    rows = [_row("dirty_fraction", r["dirty_fraction"], n=r["caption_pairs"]),
            _row("classes_named", float(len(r["classes_named"])), n=len(data.class_names))]
    for key in ("top1_named_classes", "top1_unnamed_classes"):
        if key in r:
            rows.append(_row(key, r[key]["value"], n=r[key]["n"]))
    return rows


def run_cell(net, model: dict, task: dict, bench: dict, folder: Path, device, batch_size: int, num_workers: int,
             skip_bad: bool) -> None:
    from ..inference.embed import embed_media

    medium = task_medium(task, net.medium)
    name = cell_name(model["name"], task["name"])
    record = {"model": model["name"], "model_spec": model["model"], "task": task["name"], "type": task["type"],
              "data": task["data"], "medium": medium, "seed": bench["seed"], **versions(),
              "model_fingerprint": model_fingerprint(str(model["model"]))}
    boot, seed = int(bench["bootstrap"]), int(bench["seed"])
    if medium != net.medium:  # an image model on an audio task: nothing to score
        write_cell(folder, name, {**record, "metrics": [], "not_applicable": f"a {net.medium} model"}, {})
        return
    media_dir = task.get("audio_dir") if medium == "audio" else task.get("image_dir")
    arrays: dict[str, np.ndarray] = {}
    if task["type"] == "zeroshot":
        from ..data.media import load_labelled_media
        from ..evaluation.prompts import load_classnames, load_prompts
        from ..evaluation.zeroshot import zeroshot_metrics, zeroshot_scores

        data = load_labelled_media(task["data"], medium, task.get("folds"), task.get("classes"), skip_bad, checked=True,
                                   split=task.get("split"), media_dir=media_dir)
        prompts, source = load_prompts(task.get("prompts"), medium)
        names = load_classnames(task.get("classnames"), data.class_names)
        scores, _ = zeroshot_scores(net, data, prompts, names, batch_size, device, num_workers=num_workers)
        m = zeroshot_metrics(scores, data, boot, seed, keep_ranks=True)
        ci = m.get("ci", {})
        n = len(data.clips)
        correct = None
        if data.multilabel:
            rows = [_row("mAP", m["mAP"], ci.get("mAP"), n), _row("mAUC", m["mAUC"], n=n),
                    _row("d_prime", m["d_prime"], n=n), _row("lrap", m["lrap"], n=n)]
            arrays.update(scores=scores.astype(np.float32), targets=data.targets())
        else:
            rows = [_row(k, m[k], ci.get(k), n) for k in ("top1", "top5") if k in m]
            rows.append(_row("mean_class_accuracy", m["mean_class_accuracy"], n=n))
            correct = m["ranks"] == 1
            arrays.update(correct1=correct, correct5=m["ranks"] <= 5)
        if model.get("captions"):
            rows += leakage_columns(list(model["captions"]), data, correct, medium)
        record.update(prompts=source, templates=prompts, class_names=names, skipped=data.skipped.count,
                      data_fingerprint=fingerprint_files(str(c.media) for c in data.clips),
                      per_class=m.get("per_class"), classes_without_positives=m.get("classes_without_positives"))
    else:
        from ..data.files import Skipped
        from ..data.media import check_media
        from ..data.records import clip_index
        from ..data.specs import ReadOptions, read_pairs
        from ..evaluation.metrics import audio_text_retrieval
        from ..inference.embed import embed_text

        skipped = Skipped()
        from ..evaluation.prompts import default_templates

        opts = ReadOptions(medium, Path(media_dir) if media_dir else None, split=task.get("split"), skip_bad=skip_bad,
                           label_templates=tuple(default_templates(medium)))  # a labelled set as pairs: the prompt
        pairs = check_media(medium, read_pairs(task["data"], opts, skipped), skip_bad, skipped)
        clips, rows_of = clip_index(pairs)
        media_emb = embed_media(net, clips, batch_size, device=device, num_workers=num_workers)
        text_emb = embed_text(net, [p.caption for p in pairs], device=device)
        both = audio_text_retrieval(media_emb, text_emb, np.array(rows_of), boot, seed, keep_ranks=True)
        rows = []
        for direction, key in ((f"text_to_{medium}", "text_to_audio"), (f"{medium}_to_text", "audio_to_text")):
            r = both[key]
            rows += [_row(f"{direction}_R@{k}", r[f"R@{k}"], r.get("ci", {}).get(f"R@{k}"), r["queries"]) for k in (1, 5, 10)]
            rows.append(_row(f"{direction}_mAP@10", r["mAP@10"], n=r["queries"]))
        arrays.update(t2m_ranks=both["text_to_audio"]["ranks"], m2t_ranks=both["audio_to_text"]["ranks"])
        record.update(skipped=skipped.count, data_fingerprint=fingerprint_files(str(p.media) for p in clips),
                      captions=len(pairs))
    record["metrics"] = rows
    write_cell(folder, name, record, arrays)
