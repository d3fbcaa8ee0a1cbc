"""One cell of ``clapkit bench``: a model on a task, its metrics with intervals, the
leakage columns of a model that names its training captions, and its provenance."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.files import fingerprint_files
from ..errors import ConfigError
from ..models.provenance import audio_input, describe, model_fingerprint  # noqa: F401 (bench's provenance)


def task_medium(task: dict, model_medium: str) -> str:
    """The medium of a task: its own ``medium``, else the one its spec's kind is read
    for, else (a kind both media read) the model's."""
    from ..data import specs

    if task.get("medium"):
        return task["medium"]
    role = specs.PAIRS if task["type"] == "retrieval" else specs.LABELLED
    media = [m for m in ("audio", "image") if specs.is_kind(task["data"], role, m)
             or (role == specs.PAIRS and specs.is_kind(task["data"], specs.LABELLED, m))]
    return media[0] if len(media) == 1 else model_medium


def cell_name(model: str, task: str) -> str:
    return f"{model}__{task}"


def versions() -> dict:
    import torch
    import transformers

    from .. import __version__

    return {"clapkit": __version__, "torch": torch.__version__, "transformers": transformers.__version__}


def write_cell(folder: Path, name: str, record: dict, arrays: dict[str, np.ndarray]) -> None:
    """The arrays, then the JSON (the JSON's presence marks the cell done), each atomically;
    under ``torchrun`` by the first process only (every process computed the same cell)."""
    from ..atomic import atomic_write_text
    from ..distributed import is_main

    if not is_main():
        return
    tmp = folder / f".{name}.npz.tmp"
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    os.replace(tmp, folder / f"{name}.npz")
    atomic_write_text(folder / f"{name}.json", json.dumps(record, indent=1))


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


def frequency_columns(captions: list[str], data, metrics: dict, scores: np.ndarray, boot: int, seed: int) -> list[dict]:
    """The concept-frequency columns of a zero-shot cell (:mod:`clapkit.audit.frequency`):
    the slope of accuracy (a multi-label set: AP) per class against log10(captions naming
    the class + 1), by the paper's rule, with its t interval, and r^2 with its Fisher
    interval. The ``frequency_slope`` row carries the whole curve (``curve``, both rules)
    for ``bench_report``, which draws ``OUT/figures/MODEL__TASK.frequency.png`` from it; a
    multi-label set's per-class APs are drawn without intervals here (``audit model`` gives
    them), so the cell's costliest bootstrap is not run twice."""
    from ..audit.frequency import accuracy_intervals, count_files, frequency_section
    from ..audit.leakage import default_word_list

    counts = count_files(captions, default_word_list(data.class_names))
    per, names = metrics["per_class"], data.class_names
    if data.multilabel:
        values, items, metric = {c: v["AP"] for c, v in per.items()}, {c: v["positives"] for c, v in per.items()}, "AP"
        intervals = None  # per-class AP intervals would redo zeroshot_metrics' bootstrap; the fit needs none
    else:
        values, items, metric = {c: v["accuracy"] for c, v in per.items()}, {c: v["clips"] for c, v in per.items()}, \
            "accuracy"
        labels = np.array([c.label for c in data.clips])
        intervals = accuracy_intervals(metrics["ranks"] == 1, labels, names, boot, seed) if boot else None
    section = frequency_section(counts, values, intervals, items, metric)
    c = section["paper"]
    return [_row("frequency_slope", c["slope"], c["slope_ci"], c["n"]) | {"curve": section},
            _row("frequency_r2", c["r2"], c["r2_ci"], c["n"])]


def overlap_columns(train_data: list[str], data, correct: np.ndarray | None, medium: str) -> list[dict]:
    """The overlap columns of a zero-shot cell (:func:`clapkit.audit.overlap.overlap_split`)."""
    from ..audit.overlap import overlap_split

    r = overlap_split(train_data, data, medium, correct)
    rows = [_row("overlap_fraction", r["eval_fraction_matched"], n=r["eval_items"])]
    for key in ("top1_overlapping", "top1_not_overlapping"):
        if key in r:
            rows.append(_row(key, r[key]["value"], n=r[key]["n"]))
    return rows


def run_cell(net, model: dict, task: dict, bench: dict, folder: Path, device, batch_size: int, num_workers: int,
             skip_bad: bool, cache=None, prompt_sweep: bool = False, manifests=(), intersect: bool = False) -> None:
    """Score one model on one task (its type's function in :data:`CELLS`) and write the cell."""
    from ..inference.embed import compile_mode, precision_tag

    name = cell_name(model["name"], task["name"])
    if net is None:  # a text encoder on a media task
        write_cell(folder, name, {"model": model["name"], "model_spec": model["model"], "task": task["name"],
                                  "type": task["type"], "data": task["data"], "medium": "text", "seed": bench["seed"],
                                  **versions(), "model_fingerprint": model_fingerprint(str(model["model"])),
                                  "precision": precision_tag() or "fp32", "metrics": [],
                                  "not_applicable": "a text encoder (it scores sts tasks only)"}, {})
        return
    medium = "text" if task["type"] == "sts" else task_medium(task, net.medium)
    record = {"model": model["name"], "model_spec": model["model"], "task": task["name"], "type": task["type"],
              "data": task["data"], "medium": medium, "seed": bench["seed"], **versions(),
              "model_fingerprint": model_fingerprint(str(model["model"])), "precision": precision_tag() or "fp32",
              "compile": compile_mode(),
              **{f"model_{k}": v for k, v in describe(str(model["model"]), getattr(net, "dual", None) or net).items()
                 if k in ("kind", "family", "training_data")}}
    if medium == "audio":
        record["audio_input"] = audio_input(net)
    if medium != "text" and medium != net.medium:  # an image model on an audio task: nothing to score
        article = "an" if net.medium == "image" else "a"
        write_cell(folder, name, {**record, "metrics": [], "not_applicable": f"{article} {net.medium} model"}, {})
        return
    windows = None
    if task.get("window"):
        from ..inference.windows import Windows

        windows = Windows(float(task["window"]), task.get("hop"), task.get("pool") or "mean")
        if windows.pool == "max" and task["type"] != "zeroshot":
            raise ConfigError(f"task {task['name']}: pool max is for zero-shot scores; {task['type']} pools by mean")
    ctx = CellContext(net, model, task, medium, task.get("audio_dir") if medium == "audio" else task.get("image_dir"),
                      int(bench["bootstrap"]), int(bench["seed"]), device, batch_size, num_workers, skip_bad, cache,
                      windows, prompt_sweep, tuple(manifests), intersect)
    rows, extra, arrays = CELLS[task["type"]](ctx)
    record.update(extra)
    if ctx.cache_stats:
        record["cache"] = ctx.cache_stats
    if ctx.window_record:
        record["windows"] = ctx.window_record
    record["metrics"] = rows
    write_cell(folder, name, record, arrays)


@dataclass
class CellContext:
    """What a cell's scoring function gets: the loaded model, its bench entry, the task,
    and the run's settings (``cache``: the embedding cache folder, or None)."""

    net: object
    model: dict
    task: dict
    medium: str
    media_dir: str | None
    boot: int
    seed: int
    device: object
    batch_size: int
    num_workers: int
    skip_bad: bool
    cache: object = None

    windows: object = None  # the task's sliding windows (inference.windows.Windows), or None
    prompt_sweep: bool = False  # zero-shot tasks: every registered prompt set too (evaluation.zeroshot.prompt_sweep)
    manifests: tuple = ()  # other copies' manifests (data.manifest): zero-shot cells record the difference
    intersect: bool = False  # and score only the items every copy holds with the same content
    cache_stats: dict = field(default_factory=dict)
    window_record: dict | None = None

    def features(self, items, kinds=("E",), pooled: bool = True) -> tuple[dict[str, np.ndarray], dict]:
        """The media features of ``items`` (:func:`~clapkit.inference.features.embed_items`), in
        the task's windows when it names them, through the embedding cache when there is
        one (its reused/computed counts added up in ``cache_stats``)."""
        from ..inference.features import embed_items

        feats, info = embed_items(self.net, items, kinds, self.batch_size, self.device, self.num_workers, self.cache,
                                  self.model["model"], self.windows, pooled)
        for k, v in info.get("cache", {}).items():
            self.cache_stats[k] = self.cache_stats.get(k, 0) + v
        if "windows" in info:
            self.window_record = info["windows"]
        return feats, info


def _zeroshot(ctx: CellContext) -> tuple[list[dict], dict, dict]:
    from ..data.manifest import against_copies
    from ..data.media import load_labelled_media
    from ..evaluation.prompts import zeroshot_texts
    from ..evaluation.zeroshot import task_folds, texts_record, zeroshot_metrics, zeroshot_scores

    task, medium = ctx.task, ctx.medium
    folds, main = task_folds(task.get("folds"), task.get("fold_protocol"), f"task {task['name']}: ")
    data = load_labelled_media(task["data"], medium, folds, task.get("classes"), ctx.skip_bad, checked=True,
                               split=task.get("split"), media_dir=ctx.media_dir)
    coverage = data.skipped.coverage(len(data.clips))  # this copy against the metadata, before --intersect
    copies = against_copies(data, ctx.manifests, ctx.intersect)  # other labs' copies; --intersect narrows the set
    texts = zeroshot_texts(data.class_names, medium, task.get("prompts"), task.get("classnames"), data.class_ids)
    feats, info = ctx.features(data.clips, pooled=ctx.windows is None or ctx.windows.pool == "mean")
    scores = zeroshot_scores(ctx.net, data, texts, ctx.batch_size, ctx.device, media_emb=feats["E"],
                             owner=info.get("owner"))
    m = zeroshot_metrics(scores, data, ctx.boot, ctx.seed, keep_ranks=True)
    ci, n, correct, arrays = m.get("ci", {}), len(data.clips), None, {}
    if data.multilabel:
        rows = [_row(k, m[k], ci.get(k), n) for k in ("mAP", "mAP_clip_benchmark", "mAUC", "d_prime", "d_prime_hear",
                                                        "lrap")]
        arrays.update(scores=scores.astype(np.float32), targets=data.targets())
    else:
        rows = [_row(k, m[k], ci.get(k), n) for k in ("top1", "top5", "mean_class_accuracy") if k in m]
        if "top1_fold_mean" in m:  # the mean of the per-fold top-1 (HEAR's, X-ARES's UrbanSound8K protocol)
            rows.append(_row("top1_fold_mean", m["top1_fold_mean"], ci.get("top1_fold_mean"), n))
        correct = m["ranks"] == 1
        arrays.update(correct1=correct, correct5=m["ranks"] <= 5)
        if main == "top1_fold_mean" and "top1_fold_mean" not in m:
            raise ConfigError(f"task {task['name']}: fold_protocol per-fold-mean needs a set with official folds; "
                              f"{task['data']} has none (or one)")
    if ctx.model.get("captions"):
        rows += leakage_columns(list(ctx.model["captions"]), data, correct, medium)
        rows += frequency_columns(list(ctx.model["captions"]), data, m, scores, ctx.boot, ctx.seed)
    if ctx.model.get("train_data"):
        rows += overlap_columns(list(ctx.model["train_data"]), data, correct, medium)
    rec = texts_record(texts)
    extra = dict(prompts=rec["prompts"], templates=rec["templates"], class_names=rec["class_names_used"],
                 classnames=rec["classnames"], skipped=data.skipped.count,
                 data_fingerprint=fingerprint_files(str(c.media) for c in data.clips),
                 per_class=m.get("per_class"), classes_without_positives=m.get("classes_without_positives"),
                 per_fold=m.get("per_fold"), coverage=coverage, **copies)
    if main:
        extra.update(main_metric=main, fold_protocol=task["fold_protocol"])
    if ctx.prompt_sweep:
        from ..evaluation.zeroshot import prompt_sweep

        sweep = prompt_sweep(ctx.net, data, feats["E"], info.get("owner"), task.get("prompts"), task.get("classnames"),
                             ctx.boot, ctx.seed, ctx.device)
        metric = sweep["metric"]
        rows += [_row(f"{metric}[prompts={r['name']}]", r[metric], r["ci"], n) for r in sweep["sets"]]
        rows.append(_row(f"{metric}_prompt_spread", sweep["spread"], None, n))
        extra["prompt_sweep"] = sweep
    return rows, extra, arrays


def _retrieval(ctx: CellContext) -> tuple[list[dict], dict, dict]:
    from ..data.files import Skipped
    from ..data.media import check_media
    from ..data.records import clip_index
    from ..data.specs import ReadOptions, read_pairs
    from ..evaluation.metrics import audio_text_retrieval
    from ..evaluation.prompts import default_templates
    from ..evaluation.retrieval import graded_text_retrieval, judged_queries
    from ..inference.embed import embed_text

    skipped, medium, task = Skipped(), ctx.medium, ctx.task
    opts = ReadOptions(medium, Path(ctx.media_dir) if ctx.media_dir else None, split=task.get("split"),
                       skip_bad=ctx.skip_bad, label_templates=tuple(default_templates(medium)))  # a labelled set: the prompt
    pairs = check_media(medium, read_pairs(task["data"], opts, skipped), ctx.skip_bad, skipped)
    clips, rows_of = clip_index(pairs)
    # a relevance file (several relevant clips per caption): read and matched before embedding
    judged = judged_queries(task["relevance"], pairs, clips, ctx.skip_bad) if task.get("relevance") else None
    text_emb = embed_text(ctx.net, [p.caption for p in pairs], device=ctx.device)
    media_emb = ctx.features(clips)[0]["E"]
    both = audio_text_retrieval(media_emb, text_emb, np.array(rows_of), ctx.boot, ctx.seed, keep_ranks=True)
    if judged is not None:  # text-to-media: the file's captions with its graded relevance
        both["text_to_audio"] = graded_text_retrieval(media_emb, text_emb, judged, ctx.boot, ctx.seed, keep_ranks=True)
    rows = []
    for direction, key in ((f"text_to_{medium}", "text_to_audio"), (f"{medium}_to_text", "audio_to_text")):
        r = both[key]
        rows += [_row(f"{direction}_{k}", r[k], r.get("ci", {}).get(k), r["queries"])
                 for k in ("mAP@16", "nDCG@10", "R@1", "R@5", "R@10", "mAP@10", "mAP@10_laion") if k in r]
    arrays = dict(t2m_ranks=both["text_to_audio"]["ranks"], m2t_ranks=both["audio_to_text"]["ranks"])
    extra = dict(skipped=skipped.count, data_fingerprint=fingerprint_files(str(p.media) for p in clips),
                 captions=len(pairs))
    if judged is not None:  # pairs.csv compares models on the main metric's per-query values (correct1)
        arrays["correct1"] = both["text_to_audio"]["per_query"]["mAP@16"]
        extra.update(main_metric=f"text_to_{medium}_mAP@16", relevance=judged.record)
    return rows, extra, arrays


def _sts(ctx: CellContext) -> tuple[list[dict], dict, dict]:
    """STS Spearman x 100 of the model's sentence embeddings (:func:`clapkit.evaluation.sts.sts_eval`,
    as ``eval sts``): each set's with its interval over pairs, and the 7-task average when a
    task lists all seven sets. ``data``: one STS spec or a list of them."""
    from ..data.text.sts import load_sts
    from ..evaluation.sts import sts_eval

    task = ctx.task
    specs = task["data"] if isinstance(task["data"], list) else [task["data"]]
    sets = [s for spec in specs for s in load_sts(spec, task.get("split") or "test")]
    encoder = ctx.net  # bench loads a sentence encoder for an sts task (SentenceEncoder)
    r = sts_eval(encoder, sets, bootstrap=ctx.boot, seed=ctx.seed)
    rows = [_row(f"spearman_{name}", t["spearman"], t.get("ci", {}).get("spearman"), t["pairs"])
            for name, t in r["tasks"].items()]
    if "avg" in r:
        rows.append(_row("avg", r["avg"], r.get("ci", {}).get("avg"), sum(t["pairs"] for t in r["tasks"].values())))
    extra = dict(main_metric="avg" if "avg" in r else rows[0]["metric"], pooling=encoder.pooling, skipped=0,
                 coverage={"listed": sum(len(s.scores) for s in sets), "present": sum(len(s.scores) for s in sets),
                           "missing": 0, "unreadable": 0, "malformed": 0},
                 data_fingerprint=fingerprint_files(str(p) for p in _sts_files(specs)))
    return rows, extra, {}


def _sts_files(specs: list[str]) -> list[Path]:
    paths = [Path(str(s).partition(":")[2]) for s in specs]
    return [f for p in paths for f in ([q for q in sorted(p.rglob("*")) if q.is_file()] if p.is_dir() else [p])]


def _probe(ctx: CellContext) -> tuple[list[dict], dict, dict]:
    from ..evaluation.probe import ProbeOptions, load_probe_data, probe_eval, probe_splits

    task = ctx.task
    kinds = list(task.get("features") or ["x", "E"])
    shots = task.get("shots")
    given = {}
    for key, kind in (("val_proportion", float), ("lr", float), ("epochs", int), ("batch_size", int),
                      ("normalize", bool)):
        value = task.get(key)
        if value is None:
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        ok = isinstance(value, bool) if kind is bool else number and (kind is float or float(value).is_integer())
        if not ok:  # YAML reads 1e-3 as a string, and "false" in quotes as one
            wanted = {bool: "true or false", float: "a number", int: "a whole number"}[kind]
            raise ConfigError(f"task {task['name']}: {key}: {value!r} is not {wanted}")
        given[key] = kind(value)
    opts = ProbeOptions(task.get("protocol") or "clip_benchmark", shots, int(task.get("seeds") or (3 if shots else 1)),
                        ctx.seed, int(task.get("knn_k") or 20), bootstrap=ctx.boot, **given)
    pd = load_probe_data(task["data"], ctx.medium, task.get("folds"), task.get("classes"), task.get("split"),
                         task.get("train_split"), ctx.skip_bad, ctx.media_dir)
    splits, rule = probe_splits(pd.y, pd.folds, int(task.get("cv") or 5), ctx.seed, pd.train_mask)
    r, correct = probe_eval(ctx.features(pd.items, kinds)[0], pd.y, pd.class_names, splits, opts, where=task["data"])
    rows = []
    for kind in kinds:
        f = r["features"][kind]
        for head in ("linear", "knn"):
            rows += [_row(f"{head}_{k}_{kind}", f[head][k], f[head].get("ci", {}).get(k), r["tested"])
                     for k in ("top1", "top5", "mean_class_accuracy", "top1_fold_mean") if k in f[head]]
    arrays = {f"correct_{k}": v for k, v in correct.items()}
    arrays["correct1"] = correct[f"linear_{kinds[0]}"]
    extra = dict(main_metric=f"linear_top1_{kinds[0]}", splits=rule, probe=r["options"], class_names=pd.class_names,
                 skipped=pd.skipped_count, data_fingerprint=fingerprint_files(str(c.media) for c in pd.items))
    return rows, extra, arrays


CELLS = {"zeroshot": _zeroshot, "retrieval": _retrieval, "probe": _probe, "sts": _sts}  # a task type -> its scoring function
