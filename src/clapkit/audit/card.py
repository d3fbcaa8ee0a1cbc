"""Model cards: a ``README.md`` in the Hugging Face layout beside every checkpoint, carrying
the contamination audit.

A card has YAML front matter that ``huggingface_hub.ModelCard.load`` parses
(``library_name``, ``pipeline_tag``, ``tags``, ``datasets``, ``metrics``, ``base_model``
and a ``model-index`` of the results: ``name, results: [{task: {type, name}, dataset:
{type, name, split}, metrics: [{type, value, name}]}]``) plus a ``clapkit`` block that
clapkit reads back (the fingerprints, every result with its interval and count, the
contamination summary), then markdown sections:

- **Recipe**: the command, the key hyperparameters, where the full config is;
- **Training data**: the specs, item counts, the media fingerprint
  (:func:`clapkit.experiments.bench_cells.fingerprint_files` of the distinct media files, by absolute path)
  and a text fingerprint (SHA-256 of the captions or sentences, in reading order);
- **Evaluation results**: each metric with its 95% interval and the count it came from;
- **Contamination**: which classes of the standard suites (:data:`SUITES_FILE`: ESC-50,
  UrbanSound8K, CIFAR-10; more with ``labels``) the training captions name, by the
  paper's rule (a word of the class set by stem or lemma, :data:`~.leakage.PAPER_RULES`)
  and by all four rules of :mod:`.leakage`; and, given evaluation sets, which of their
  recordings the training data holds (:mod:`.overlap`, rules ``id`` and ``content``; ``perceptual`` too for
  images).

``datasets:`` is what :func:`clapkit.models.provenance.describe` reports as the model's
``training_data`` (a clapkit checkpoint's ``data.train``; otherwise this card's list), so
the card and the provenance of every result agree.

The model fingerprint written into the card is :func:`clapkit.models.provenance.model_fingerprint`
of the folder, which leaves model cards (``README.md``) aside: writing or refreshing a card
changes neither the fingerprint bench cells and exports record nor the card's own value.

Why here and not under ``models/``: a card reads training captions, media files and
evaluation sets to audit them, and ``models/`` reads no data files (data flows one way:
files -> data -> models -> training -> checkpoints -> evaluation/audit). Training calls
:func:`write_training_card` once, after the run, on its final ``checkpoint/``;
``clapkit card`` calls :func:`refresh_card` for any model the loader recognises.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from ..errors import ConfigError, DataError
from .leakage import PAPER_RULES

SUITES_FILE = Path(__file__).with_name("suites.yaml")
ALL_RULES = (*PAPER_RULES, "derivation", "compound")  # the order WordMatcher tries them
OVERLAP_RULES = ("id", "content")
CARD = "README.md"
_FRONT = re.compile(r"\A---\n(.*?)\n---\n", re.S)


# --- the standard suites ------------------------------------------------------------------------
@lru_cache(maxsize=1)
def load_suites() -> dict[str, dict]:
    """``{key: {name, medium, source, classes}}`` of :data:`SUITES_FILE`."""
    return yaml.safe_load(SUITES_FILE.read_text(encoding="utf-8"))


def suites_for(medium: str | None) -> list[str]:
    """The suites a model of ``medium`` is evaluated on (every suite for a text model)."""
    return [k for k, s in load_suites().items() if medium in (None, "text") or s["medium"] == medium]


def label_suites(names: Iterable[str], labels: Iterable[str] = ()) -> dict[str, dict]:
    """The shipped suites ``names`` and the class-name specs ``labels`` (``esc50:ROOT``,
    ``txt:FILE``, ...; read with :func:`clapkit.data.text.load_label_names`), by key."""
    known = load_suites()
    out = {}
    for n in names:
        if n not in known:
            raise ConfigError(f"suite {n!r}: choose from {', '.join(known)} ({SUITES_FILE})")
        out[n] = dict(known[n])
    for spec in labels:
        from ..data.text import load_label_names

        out[spec] = {"name": spec, "medium": None, "source": spec, "classes": list(load_label_names(spec))}
    return out


# --- what a model was trained on -----------------------------------------------------------------
@dataclass
class TrainingData:
    """The training data a card describes: its ``specs``, the ``texts`` the model read
    (captions or sentences: what the leakage scan reads), the ``media`` behind them (for
    the fingerprint; any order, repeats ignored), ``counts`` to print and a ``note``
    where something could not be read."""

    specs: list[str]
    texts: list[str] = field(default_factory=list)
    media: list = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    note: str | None = None

    def record(self) -> dict:
        from ..data.files import fingerprint_files

        distinct = list(dict.fromkeys(map(_media_name, self.media)))
        return {"specs": list(self.specs), "counts": dict(self.counts),
                "media_fingerprint": fingerprint_files(distinct) if distinct else None,
                "text_fingerprint": text_fingerprint(self.texts) if self.texts else None,
                **({"note": self.note} if self.note else {})}


def _media_name(media) -> str:
    """A media file's absolute path (the same file named from two folders is one), or a
    shard member's or array item's own name."""
    return os.path.abspath(media) if isinstance(media, str | Path) else str(media)


def text_fingerprint(texts: Sequence[str]) -> str:
    """SHA-256 (16 hex digits) of the texts in reading order, one a line."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "replace") + b"\n")
    return h.hexdigest()[:16]


# --- contamination: class names in the training captions -----------------------------------------
def class_leakage(texts: Sequence[str], suites: dict[str, dict], examples: int = 2) -> dict:
    """Which classes of each suite ``texts`` name (:func:`clapkit.audit.leakage.scan`, one
    pass over the texts for every suite), by the paper's rule and by all rules:
    ``{suite: {name, classes, texts, dirty_texts, dirty_texts_paper, named_paper,
    named_all, by_rule: {rule: [class]}, per_class: {class: {captions, paper_captions,
    words: {word: rule}, examples}}}}`` (``per_class``: the named classes only)."""
    from ..data.records import Pair
    from .leakage import default_word_list, scan

    words: dict[str, list[str]] = {}
    for key, s in suites.items():
        for name, ws in default_word_list(s["classes"]).items():
            words[f"{key}\t{name}"] = ws
    result = scan([Pair(Path(), t, "", "") for t in texts], words, examples)
    out = {}
    for key, s in suites.items():
        prefix = f"{key}\t"
        per_class, by_rule = {}, {r: [] for r in ALL_RULES}
        for name in s["classes"]:
            e = result.per_class[prefix + name]
            if not e["captions"]:
                continue
            per_class[name] = {"captions": e["captions"], "paper_captions": e["paper_captions"],
                               "words": {w: e["rules"][w] for w in e["matched_words"]}, "examples": e["examples"]}
            for rule in dict.fromkeys(e["rules"].values()):
                by_rule[rule].append(name)
        out[key] = {
            "name": s["name"], "source": s.get("source"), "classes": len(s["classes"]), "texts": len(texts),
            "dirty_texts": sum(1 for d in result.dirty if any(c.startswith(prefix) for c in d)),
            "dirty_texts_paper": sum(1 for d in result.dirty_paper if any(c.startswith(prefix) for c in d)),
            "named_paper": [n for n, e in per_class.items() if e["paper_captions"]],
            "named_all": list(per_class), "by_rule": by_rule, "per_class": per_class,
        }
    return out


# --- contamination: evaluation recordings in the training data -----------------------------------
def overlap_evidence(train, eval_spec: str, medium: str, train_fingerprint: str | None, eval_dir=None,
                     skip_bad: bool = False, rules: Sequence[str] = OVERLAP_RULES, examples: int = 5) -> dict:
    """Which items of ``eval_spec`` the training side ``train`` (:func:`.overlap.load_side`)
    holds, by ``rules`` (:func:`.overlap.find_overlap`): counts per rule, the classes with a
    matched item, a few matched pairs and both sides' fingerprints."""
    from ..data.files import fingerprint_files
    from .overlap import find_overlap, load_side, overlap_report

    ev = load_side([eval_spec], medium, None, eval_dir, skip_bad)
    matched = find_overlap(train, ev, medium, list(rules))
    r = overlap_report(train, ev, medium, list(rules), matched, {})
    classes = {k: {"items": v["items"], "matched": v["matched"]} for k, v in (r.get("per_class") or {}).items()
               if v["matched"]}
    return {"eval": eval_spec, "rules": list(rules), "eval_items": r["eval_items"],
            "eval_items_matched": r["eval_items_matched"], "eval_fraction_matched": r["eval_fraction_matched"],
            "train_items": r["train_items"], "train_items_matched": r["train_items_matched"],
            "per_rule": r["per_rule"], "classes_matched": classes,
            "examples": [{"train": p["train"], "eval": p["eval"], "rule": p["rule"]} for p in r["pairs"][:examples]],
            "eval_fingerprint": fingerprint_files(_media_name(i.media) for i in ev.items),
            "train_fingerprint": train_fingerprint}


# --- results -------------------------------------------------------------------------------------
_METRIC_TYPES = {"top1": "accuracy", "top5": "top_5_accuracy", "top1_fold_mean": "accuracy",
                 "mean_class_accuracy": "mean_class_accuracy", "mAP": "map", "mAUC": "roc_auc", "lrap": "lrap",
                 "spearman": "spearmanr", "mAP@10": "map", "mAP@16": "map", "nDCG@10": "ndcg"}


def _metric_type(metric: str) -> str:
    if metric in _METRIC_TYPES:
        return _METRIC_TYPES[metric]
    if re.search(r"R@\d+$", metric):
        return "recall"
    return "spearmanr" if metric.startswith("spearman") else metric.lower()


def _task(kind: str, medium: str | None, direction: str | None = None) -> tuple[str, str]:
    m = medium or "audio"
    if kind == "zeroshot":
        return f"zero-shot-{m}-classification", f"Zero-shot {m} classification"
    if kind == "retrieval" and direction:
        a, b = direction.split("_to_")
        return f"{a}-to-{b}-retrieval", f"{a.capitalize()}-to-{b} retrieval"
    if kind == "retrieval":
        return f"{m}-text-retrieval", f"{m.capitalize()}-text retrieval (mean of both directions)"
    if kind == "probe":
        return f"{m}-classification", f"Linear probe ({m} classification)"
    return "sentence-similarity", "Semantic textual similarity"


def _number(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) or math.isinf(v) else v


def _row(kind: str, medium, dataset: str, split, metric: str, value, ci=None, n=None, source=None,
         direction: str | None = None) -> dict | None:
    v = _number(value)
    if v is None:
        return None
    task, task_name = _task(kind, medium, direction)
    interval = [float(ci[0]), float(ci[1])] if isinstance(ci, list | tuple) and len(ci) == 2 and None not in ci else None
    return {"task": task, "task_name": task_name, "dataset": str(dataset), "dataset_type": _dataset_type(dataset),
            "split": None if split in (None, "") else str(split), "metric": metric, "metric_type": _metric_type(metric),
            "value": v, "ci": interval, "n": int(n) if isinstance(n, int | float) and not isinstance(n, bool) else None,
            "source": source}


def _dataset_type(dataset: str) -> str:
    kind, sep, _ = str(dataset).partition(":")
    return kind if sep and kind.isidentifier() else str(dataset)


def _split_of(d: dict) -> str | None:
    if d.get("split"):
        return str(d["split"])
    if d.get("fold_protocol"):
        return str(d["fold_protocol"])
    if d.get("folds"):
        return "folds " + ",".join(map(str, d["folds"]))
    return None


def _medium_of(d: dict, medium: str | None) -> str | None:
    prov = d.get("model_provenance")
    return (prov.get("medium") if isinstance(prov, dict) else None) or d.get("medium") or medium


def _zeroshot_rows(d: dict, medium, dataset: str, source) -> list[dict]:
    ci, n, split, m = d.get("ci") or {}, d.get("clips"), _split_of(d), _medium_of(d, medium)
    if d.get("multilabel"):
        keys = [("mAP", "mAP"), ("mAUC", "mAUC"), ("lrap", "lrap")]
    else:
        keys = [("top1" if "top1" in d else "accuracy", "top1"), ("top5", "top5"), ("top1_fold_mean", "top1_fold_mean"),
                ("mean_class_accuracy", "mean_class_accuracy")]
    return [_row("zeroshot", m, dataset, split, name, d[key], ci.get(key), n, source) for key, name in keys if key in d]


def _retrieval_rows(d: dict, m: str, dataset: str, source) -> list[dict]:
    rows = []
    for direction in (f"text_to_{m}", f"{m}_to_text"):
        sub = d.get(direction) or {}
        for k in ("R@1", "R@5", "R@10", "mAP@10", "mAP@16", "nDCG@10"):
            if k in sub:
                rows.append(_row("retrieval", m, dataset, d.get("split"), k, sub[k], (sub.get("ci") or {}).get(k),
                                 sub.get("queries"), source, direction))
    return rows


def _sts_rows(d: dict, source) -> list[dict]:
    rows = [_row("sts", None, name, d.get("split"), "spearman", t.get("spearman"), (t.get("ci") or {}).get("spearman"),
                 t.get("pairs"), source) for name, t in d["tasks"].items() if isinstance(t, dict)]
    if "avg" in d:
        rows.append(_row("sts", None, "STS 7-task average", None, "spearman", d["avg"], (d.get("ci") or {}).get("avg"),
                         None, source))
    return rows


# a bench cell's audit columns (leakage, overlap, concept frequency) and prompt sweep: not results of the model
_NOT_RESULTS = re.compile(r"dirty_fraction|classes_named|top1_(un)?named_classes|frequency_.*|overlap_fraction|"
                          r"top1_(not_)?overlapping|.*\[prompts=.*|.*_prompt_spread")
_DIRECTION = re.compile(r"((?:text_to_\w+?)|(?:\w+?_to_text))_(.+)")


def _bench_rows(d: dict, source) -> list[dict]:
    kind, m, data, split = d.get("type"), d.get("medium"), str(d.get("data")), d.get("split")
    rows = []
    for r in d["metrics"]:
        if not isinstance(r, dict) or "metric" not in r or _NOT_RESULTS.fullmatch(r["metric"]):
            continue
        metric, dataset, direction = r["metric"], data, None
        if kind == "retrieval" and _DIRECTION.fullmatch(metric):
            direction, metric = _DIRECTION.fullmatch(metric).groups()
        elif kind == "sts":
            dataset, metric = (metric[len("spearman_"):], "spearman") if metric.startswith("spearman_") else \
                ("STS 7-task average", "spearman")
        rows.append(_row(kind, m, dataset, split, metric, r.get("value"), (r.get("ci_low"), r.get("ci_high")),
                         r.get("n"), source, direction))
    return rows


def result_rows(d: dict, source: str | None = None, medium: str | None = None, name: str | None = None) -> list[dict]:
    """The results in one JSON object: ``eval zeroshot``, ``eval retrieval`` or ``eval sts``
    output, a ``bench`` cell, or an object holding such results by name (a run's or the
    demo's ``metrics.json``). Each row: ``task``, ``task_name``, ``dataset``,
    ``dataset_type``, ``split``, ``metric``, ``metric_type``, ``value``, ``ci`` ([low,
    high] or None), ``n``, ``source``."""
    dataset = str(d.get("data") or name or source or "unnamed")
    if isinstance(d.get("metrics"), list) and d.get("type"):
        rows = _bench_rows(d, source)
    elif isinstance(d.get("tasks"), dict) and any(isinstance(t, dict) and "spearman" in t for t in d["tasks"].values()):
        rows = _sts_rows(d, source)
    elif any(f"text_to_{m}" in d for m in ("audio", "image")):
        m = "audio" if "text_to_audio" in d else "image"
        rows = _retrieval_rows(d, m, dataset, source)
    elif "clips" in d and any(k in d for k in ("top1", "accuracy", "mAP")):
        rows = _zeroshot_rows(d, medium, dataset, source)
    else:
        rows = [r for k, v in d.items() if isinstance(v, dict) and k != "model_provenance"
                for r in result_rows(v, source, medium, k)] if name is None else []
    return [r for r in rows if r is not None]


def read_results(path: str | Path, medium: str | None = None) -> list[dict]:
    """:func:`result_rows` of a JSON file; a :class:`DataError` naming the file when it is
    missing, no JSON, or holds no result this card reads."""
    path = Path(path)
    if not path.is_file():
        raise DataError("results file not found", str(path))
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"not a readable JSON file ({exc})", str(path)) from exc
    rows = result_rows(d, str(path), medium) if isinstance(d, dict) else []
    if not rows:
        raise DataError("no results a model card reads: give the JSON of eval zeroshot, eval retrieval or eval sts, "
                        "a bench cell, or a run's metrics.json", str(path))
    return rows


_EVALUATOR_METRICS = {"zeroshot_top1": ("zeroshot", "top1"), "zeroshot_top5": ("zeroshot", "top5"),
                      "zeroshot_mAP": ("zeroshot", "mAP"), "retrieval_r1": ("retrieval", "R@1"),
                      "retrieval_r5": ("retrieval", "R@5"), "retrieval_r10": ("retrieval", "R@10"),
                      "stsb_dev": ("sts_dev", "spearman")}


def run_results(run: Path, cfg: dict | None, summary: dict | None, medium: str | None,
                checkpoint: Path | None = None) -> list[dict]:
    """The results a training run recorded about its selected checkpoint: the evaluators'
    metrics (``train.eval``, ``cse.sts_dev``) in the best window's row of ``metrics.csv``
    (no intervals: the run computes none), and a ``metrics.json`` beside it written after
    ``checkpoint`` (the demo's)."""
    rows: list[dict] = []
    log = run / "metrics.csv"
    if cfg and summary and log.is_file():
        unit, best = ("epoch", summary.get("best_epoch")) if "best_epoch" in summary else ("step", summary.get("best_step"))
        with open(log, newline="", encoding="utf-8") as fh:
            row = next((r for r in csv.DictReader(fh) if best is not None and _number(r.get(unit)) == best), None)
        evals = dict((cfg.get("train") or {}).get("eval") or {})
        if (cfg.get("cse") or {}).get("sts_dev"):
            evals.setdefault("sts_dev", cfg["cse"]["sts_dev"])
        for col, (evaluator, metric) in _EVALUATOR_METRICS.items():
            if row and evals.get(evaluator) and col in row:
                kind = "sts" if evaluator == "sts_dev" else evaluator
                rows.append(_row(kind, medium, evals[evaluator], "dev" if kind == "sts" else None, metric, row[col],
                                 source=f"{log} ({unit} {best})"))
    made = checkpoint / "config.json" if checkpoint and (checkpoint / "config.json").is_file() else checkpoint
    if (run / "metrics.json").is_file() and (made is None or (run / "metrics.json").stat().st_mtime >= made.stat().st_mtime):
        try:  # written after this checkpoint (the demo's), not left by an earlier run in the folder
            rows += result_rows(json.loads((run / "metrics.json").read_text(encoding="utf-8")),
                                str(run / "metrics.json"), medium)
        except (OSError, ValueError):
            pass  # another tool's metrics.json: not a result of this model
    return [r for r in rows if r is not None]


def _result_key(r: dict) -> tuple:
    return r["task"], r["dataset"], r.get("split"), r["metric"]


def merge_results(*groups: Iterable[dict]) -> list[dict]:
    """Rows of later groups replace rows of earlier ones with the same task, dataset, split and metric."""
    out: dict[tuple, dict] = {}
    for group in groups:
        for r in group:
            out[_result_key(r)] = r
    return list(out.values())


def model_index(name: str, rows: Sequence[dict]) -> list[dict] | None:
    """The ``model-index`` of ``rows``: one result per (task, dataset, split), its metrics
    ``{type, value, name}``."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["task"], r["task_name"], r["dataset_type"], r["dataset"], r.get("split"))
        groups.setdefault(key, []).append({"type": r["metric_type"], "value": r["value"], "name": r["metric"]})
    results = []
    for (task, task_name, dtype, dname, split), metrics in groups.items():
        dataset = {"type": dtype, "name": dname, **({"split": split} if split else {})}
        results.append({"task": {"type": task, "name": task_name}, "dataset": dataset, "metrics": metrics})
    return [{"name": name, "results": results}] if results else None


# --- the card ------------------------------------------------------------------------------------
RECIPE_KEYS = {
    "clap": ("model.modality", "model.audio.name", "model.image.name", "model.text.name", "model.text.max_length",
             "model.projector.dim", "model.init_from", "train.loss", "train.batch_size", "train.epochs", "train.steps",
             "train.frozen_epochs", "train.lr_frozen", "train.lr_unfrozen", "train.optimizer", "train.schedule",
             "train.warmup_steps", "train.weight_decay", "train.max_logit_scale", "train.monitor",
             "train.cyclip.in_modal", "train.cyclip.cross_modal", "train.se.weight", "audio.sample_rate",
             "audio.segment_seconds", "image.size", "data.val_fraction", "data.fraction", "runtime.precision", "seed"),
    "cse": ("cse.mode", "cse.text_loss", "cse.model.name", "cse.model.max_length", "cse.model.pool", "cse.model.head",
            "cse.batch_size", "cse.lr", "cse.epochs", "cse.steps", "cse.temperature", "cse.hard_negative_weight",
            "cse.schedule", "cse.weight_decay", "cse.other_loss", "cse.other_lr", "cse.other_batch_size", "cse.weight",
            "runtime.precision", "seed"),
}
COMMANDS = {"clap": "clapkit train clap", "clip": "clapkit train clip", "cse": "clapkit train cse"}


@dataclass
class CardInfo:
    """What a card says (see the module docstring); :func:`build_card` renders it."""

    name: str
    source: str
    kind: str | None = None
    library: str | None = None
    family: str | None = None
    medium: str | None = None  # audio, image; None: a text encoder
    datasets: list[str] | None = None
    base_model: str | None = None
    recipe: str | None = None  # clap, clip, cse; None: not trained by clapkit
    config: dict | None = None
    config_file: str | None = None
    summary: dict | None = None
    training: list[dict] = field(default_factory=list)  # TrainingData.record()s
    results: list[dict] = field(default_factory=list)
    leakage: dict | None = None  # class_leakage(...)
    overlap: list[dict] = field(default_factory=list)  # overlap_evidence(...)s
    notes: list[str] = field(default_factory=list)
    fingerprint: str = ""  # write_card fills in the folder's model_fingerprint


def _plain(x):
    """JSON/YAML-safe copy (numpy numbers as numbers, tuples as lists)."""
    return json.loads(json.dumps(x, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _tags(info: CardInfo) -> tuple[list[str], str]:
    tags = ["clapkit"]
    if info.medium == "audio":
        tags += ["clap", "audio", "zero-shot-audio-classification"]
        pipeline = "zero-shot-audio-classification"
    elif info.medium == "image":
        tags += ["clip", "zero-shot-image-classification"]
        pipeline = "zero-shot-image-classification"
    else:
        tags += ["sentence-transformers", "sentence-similarity", "feature-extraction"]
        pipeline = "sentence-similarity"
    if info.recipe == "cse":
        tags.append("simcse")
    tags.append("contrastive-learning")
    return tags, pipeline


def front_matter(info: CardInfo) -> dict:
    tags, pipeline = _tags(info)
    meta: dict[str, Any] = {"library_name": info.library or "clapkit", "pipeline_tag": pipeline, "tags": tags}
    if info.datasets:
        meta["datasets"] = list(info.datasets)
    metrics = list(dict.fromkeys(r["metric_type"] for r in info.results))
    if metrics:
        meta["metrics"] = metrics
    if info.base_model:
        meta["base_model"] = info.base_model
    index = model_index(info.name, info.results)
    if index:
        meta["model-index"] = index
    meta["clapkit"] = {
        "kind": info.kind, "family": info.family, "medium": info.medium, "fingerprint": info.fingerprint,
        "recipe": info.recipe, "training_data": info.training,
        "results": [{k: v for k, v in r.items() if k != "task_name"} for r in info.results],
        "contamination": {"rules": {"paper": list(PAPER_RULES), "all": list(ALL_RULES)}, "suites": info.leakage,
                          "overlap": info.overlap},
    }
    return _plain(meta)


def _get(cfg: dict, dotted: str):
    cur: Any = cfg
    for k in dotted.split("."):
        if not isinstance(cur, dict) or k not in cur:
            return None
        cur = cur[k]
    return cur


def _cell(x) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x).replace("|", "/").replace("\n", " ")


def _recipe_lines(info: CardInfo) -> list[str]:
    lines = ["## Recipe", ""]
    if not info.recipe or not info.config:
        return lines + ["Not trained by clapkit (or its run config is not beside it): its owner's card or paper "
                        "describes the recipe.", ""]
    lines += [f"Trained with `{COMMANDS.get(info.recipe, info.recipe)}`"
              + (f"; the full config is `{info.config_file}`." if info.config_file else "."), ""]
    other = {"audio": "image", "image": "audio"}.get(info.medium or "")
    keys = [k for k in RECIPE_KEYS["cse" if info.recipe == "cse" else "clap"]
            if not other or not (k.startswith((f"{other}.", f"model.{other}.")))]
    if info.recipe == "cse" and _get(info.config, "cse.mode") not in ("image", "audio"):  # no second medium
        keys = [k for k in keys if not k.startswith("cse.other_") and k != "cse.weight"]
    rows = [(k, _get(info.config, k)) for k in keys]
    lines += ["| key | value |", "| --- | --- |"] + [f"| `{k}` | {_cell(v)} |" for k, v in rows if v not in (None, {}, [])]
    s = info.summary or {}
    said = {k: s[k] for k in ("epochs_run", "best_epoch", "best_step", "monitor", "steps", "best_val_loss",
                              "best_stsb_dev", "skipped_steps", "stopped") if s.get(k) is not None}
    if said:
        lines += ["", "Run summary: " + ", ".join(f"{k} {_cell(v)}" for k, v in said.items()) + "."]
    return lines + [""]


def _training_lines(info: CardInfo) -> list[str]:
    lines = ["## Training data", ""]
    if not info.training:
        return lines + [f"Not known here{': ' + ', '.join(f'`{d}`' for d in info.datasets) if info.datasets else ''}. "
                        "Give `clapkit card MODEL --train-data SPEC` to audit it.", ""]
    for t in info.training:
        counts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in t["counts"].items() if v is not None)
        lines += [f"- {', '.join(f'`{s}`' for s in t['specs']) or '(no spec)'}: {counts or 'no counts'}; "
                  f"media fingerprint `{t['media_fingerprint'] or '-'}`, text fingerprint `{t['text_fingerprint'] or '-'}`"]
        if t.get("note"):
            lines.append(f"  ({t['note']})")
    return lines + ["", "The media fingerprint is `fingerprint_files` of the distinct media files (their absolute "
                    "paths and sizes); the text fingerprint hashes the captions or sentences in reading order.", ""]


def _results_lines(info: CardInfo) -> list[str]:
    lines = ["## Evaluation results", ""]
    if not info.results:
        return lines + ["None recorded. Give `clapkit card MODEL --results FILE.json` (the JSON of `clapkit eval ...` "
                        "or a bench cell).", ""]
    lines += ["| task | data | split | metric | value | 95% interval | n |", "| --- | --- | --- | --- | ---: | --- | ---: |"]
    for r in info.results:
        ci = f"[{r['ci'][0]:.4g}, {r['ci'][1]:.4g}]" if r.get("ci") else "-"
        lines.append(f"| {r['task_name']} | `{_cell(r['dataset'])}` | {r.get('split') or '-'} | {r['metric']} | "
                     f"{r['value']:.4g} | {ci} | {r['n'] if r.get('n') is not None else '-'} |")
    sources = list(dict.fromkeys(str(r["source"]) for r in info.results if r.get("source")))
    if sources:
        lines += ["", "From: " + ", ".join(f"`{s}`" for s in sources) + "."]
    return lines + [""]


def _contamination_lines(info: CardInfo) -> list[str]:
    lines = ["## Contamination", "", "### Evaluation classes named in the training captions", ""]
    if info.leakage is None:
        lines += ["Not scanned: the training captions were not readable here. Give `clapkit card MODEL --train-data "
                  "SPEC`.", ""]
    else:
        lines += ["A caption names a class when one of its words is a word of the class name by the paper's rule "
                  f"({' or '.join(PAPER_RULES)}: the CLAP-pitfalls paper's dirty caption) or by any of clapkit's rules "
                  f"({', '.join(ALL_RULES)}; see `clapkit.audit.leakage`). `clapkit audit leakage` gives the full "
                  "report.", ""]
        for s in info.leakage.values():
            lines += [f"#### {s['name']} ({s['classes']} classes)", ""]
            if s.get("source"):
                lines += [f"Class names: {s['source']}.", ""]
            lines += [f"- Paper's rule: {len(s['named_paper'])} of {s['classes']} classes named "
                      f"({s['dirty_texts_paper']} of {s['texts']} captions): {', '.join(s['named_paper']) or 'none'}.",
                      f"- All rules: {len(s['named_all'])} of {s['classes']} classes named ({s['dirty_texts']} of "
                      f"{s['texts']} captions): {', '.join(s['named_all']) or 'none'}."]
            lines += [f"- By {rule}: {', '.join(names)}." for rule, names in s["by_rule"].items() if names]
            if s["per_class"]:
                lines += ["", "| class | captions (paper's rule) | captions (all rules) | matched words (rule) | example |",
                          "| --- | ---: | ---: | --- | --- |"]
                for name, e in s["per_class"].items():
                    words = ", ".join(f"{w} ({r})" for w, r in list(e["words"].items())[:5])
                    example = _cell(e["examples"][0]) if e["examples"] else ""
                    lines.append(f"| {name} | {e['paper_captions']} | {e['captions']} | {words} | {example} |")
            lines.append("")
    lines += ["### Evaluation recordings in the training data", ""]
    if not info.overlap:
        lines += ["Not checked. `clapkit card MODEL --train-data SPEC --eval SPEC` looks for each evaluation item in "
                  "the training data by source id and decoded content (and perceptual hash, for images; "
                  "`clapkit.audit.overlap`).", ""]
    for o in info.overlap:
        rules = ", ".join(f"{r}: {c['eval_items']}" for r, c in o["per_rule"].items())
        lines += [f"- `{o['eval']}`: {o['eval_items_matched']} of {o['eval_items']} evaluation items "
                  f"({o['eval_fraction_matched']:.1%}) match one or more of the {o['train_items']} training items; "
                  f"by rule {rules}. Evaluation fingerprint `{o['eval_fingerprint']}`."]
        if o["classes_matched"]:
            lines.append("  Classes with a matched item: " + ", ".join(
                f"{k} ({v['matched']} of {v['items']})" for k, v in o["classes_matched"].items()) + ".")
        for ex in o["examples"]:
            lines.append(f"  - `{ex['eval']}` = `{ex['train']}` ({ex['rule']})")
    return lines + [""]


def build_card(info: CardInfo) -> str:
    """The card's text: YAML front matter, then the sections (see the module docstring)."""
    meta = yaml.safe_dump(front_matter(info), sort_keys=False, allow_unicode=True, width=1000)
    what = {"audio": "an audio-text dual encoder (CLAP)", "image": "an image-text dual encoder (CLIP)"}.get(
        info.medium or "", "a sentence encoder")
    head = [f"# {info.name}", "",
            f"{what[0].upper() + what[1:]}{f': `{info.family}`' if info.family not in (None, info.kind) else ''}, in {info.library or 'clapkit'}'s "
            f"format (`{info.kind}`). Load it with `clapkit.load(PATH)`; the command line takes the same path.", "",
            f"Model fingerprint: `{info.fingerprint}` (`clapkit.models.provenance.model_fingerprint` of this folder, "
            "its model card aside: the value every result of this model records).", ""]
    body = head + _recipe_lines(info) + _training_lines(info) + _results_lines(info) + _contamination_lines(info)
    if info.notes:
        body += ["## Notes", ""] + [f"- {n}" for n in info.notes] + [""]
    body += ["Written by `clapkit card` (or at the end of training); run it again to refresh.", ""]
    return f"---\n{meta}---\n\n" + "\n".join(body)


def read_card(path: str | Path) -> dict:
    """A card's front matter ({} when there is none or it is no YAML mapping)."""
    path = Path(path)
    if not path.is_file():
        return {}
    m = _FRONT.match(path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n"))
    try:
        meta = yaml.safe_load(m[1]) if m else None
    except yaml.YAMLError:
        return {}
    return meta if isinstance(meta, dict) else {}


def write_card(folder: str | Path, info: CardInfo, out: str | Path | None = None) -> Path:
    """Write ``info``'s card to ``out`` (default ``folder/README.md``), atomically, with the
    folder's model fingerprint (which leaves model cards aside, so writing one changes
    nothing it names)."""
    from ..atomic import atomic_write_text
    from ..models.provenance import model_fingerprint

    folder = Path(folder)
    out = Path(out) if out else folder / CARD
    out.parent.mkdir(parents=True, exist_ok=True)
    info.fingerprint = model_fingerprint(str(folder))
    atomic_write_text(out, build_card(info))
    return out


def write_text_tower_card(folder: Path, info: CardInfo) -> Path | None:
    """``folder/text/README.md`` for a clapkit checkpoint's text tower (a sentence-transformers
    folder): its tags and datasets, and a pointer to the checkpoint's own card."""
    from ..atomic import atomic_write_text

    text = Path(folder) / "text"
    if not (text / "modules.json").is_file():
        return None
    meta = {"library_name": "sentence-transformers", "pipeline_tag": "sentence-similarity",
            "tags": ["clapkit", "sentence-transformers", "sentence-similarity", "feature-extraction"],
            **({"datasets": list(info.datasets)} if info.datasets else {}),
            "clapkit": {"part": "text tower", "card": f"../{CARD}"}}
    body = [f"# {info.name}: text tower", "",
            f"The text tower of the clapkit dual encoder in the folder above (`{info.family or info.kind}`), "
            "loadable on its own by sentence-transformers and transformers. The recipe, the training data, the "
            "results and the contamination audit are in that folder's card (`../README.md`).", ""]
    atomic_write_text(text / CARD, f"---\n{yaml.safe_dump(_plain(meta), sort_keys=False)}---\n\n" + "\n".join(body))
    return text / CARD


# --- a training run's card -----------------------------------------------------------------------
def _stub(cfg):
    return SimpleNamespace(cfg=cfg)


def _model_facts(folder: Path, kind: str | None, cfg: dict | None) -> tuple[str | None, str | None]:
    """(library, family) as :mod:`clapkit.models.provenance` reports them."""
    from ..models.provenance import _family, _library

    return _library(folder, kind), _family(_stub(cfg), kind)


def _name_of(folder: Path) -> str:
    return folder.parent.name if folder.name in ("checkpoint", "last") and folder.parent.name else folder.name


def write_training_card(out: str | Path, recipe: str, cfg: dict, summary: dict, medium: str | None,
                        training: TrainingData, suite_medium: str | None = None) -> Path | None:
    """``out/checkpoint/README.md`` (and ``checkpoint/text/README.md`` for a dual encoder)
    at the end of a run: the recipe of ``cfg``, the ``training`` data with its counts and
    fingerprints, the run's own results, and the class-name leakage of its captions
    against the suites of ``suite_medium or medium`` (:func:`suites_for`; a text model:
    all). The overlap with evaluation sets is left to ``clapkit card --eval`` (it decodes
    every training file)."""
    from ..models.formats import kind_or_none

    out = Path(out)
    folder = out / "checkpoint"
    if not folder.is_dir():
        return None
    kind = kind_or_none(folder)
    saved = _saved_config(folder, kind)
    library, family = _model_facts(folder, kind, saved or cfg)
    record = training.record()
    leakage = class_leakage(training.texts, label_suites(suites_for(suite_medium or medium))) if training.texts else None
    if recipe == "clap" and _get(cfg, "model.modality") == "image":
        recipe = "clip"
    info = CardInfo(name=_name_of(folder), source=str(folder), kind=kind, library=library, family=family,
                    medium=medium, datasets=_own_datasets(folder, kind, saved) or list(training.specs) or None,
                    base_model=_base_model(cfg), recipe=recipe, config=cfg, config_file="../config.yaml",
                    summary=summary, training=[record], results=run_results(out, cfg, summary, medium, folder),
                    leakage=leakage)
    if training.note and leakage is None:
        info.notes.append(training.note)
    write_text_tower_card(folder, info)
    return write_card(folder, info)


def _base_model(cfg: dict | None) -> str | None:
    """``model.init_from`` when it is a hub name (not a local path)."""
    src = _get(cfg or {}, "model.init_from")
    if isinstance(src, str) and src and "/" in src and not Path(src).exists() and not src.startswith(("/", ".")):
        return src
    return None


def _saved_config(folder: Path, kind: str | None) -> dict | None:
    """A clapkit checkpoint's ``config.json`` (the model's own config)."""
    if kind != "clapkit":
        return None
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _own_datasets(source, kind: str | None, saved: dict | None) -> list[str] | None:
    """What :func:`clapkit.models.provenance.describe` reports as ``training_data``."""
    from ..models.provenance import _training_data

    td = _training_data(source, _stub(saved))
    if td is None:
        return None
    return [str(x) for x in td] if isinstance(td, list | tuple) else [str(td)]


# --- `clapkit card`: any model -------------------------------------------------------------------
def _run_dir(folder: Path) -> Path | None:
    """The run folder a ``checkpoint/`` (or ``last/``) was written into (``config.yaml`` and ``summary.json`` beside it)."""
    parent = folder.parent
    ran = folder.name in ("checkpoint", "last") and (parent / "config.yaml").is_file() and (parent / "summary.json").is_file()
    return parent if ran else None


def _read_yaml(path: Path) -> dict | None:
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return d if isinstance(d, dict) else None


def _read_json(path: Path) -> dict | None:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def _model_medium(folder: Path, kind: str, saved: dict | None) -> tuple[str | None, list[str]]:
    """(medium, CSE modalities) of a model of ``kind``."""
    from ..models.formats import kind_medium

    if kind == "clapkit":
        return (_get(saved or {}, "model.modality") or "audio"), []
    if kind == "train-cse":
        meta = json.loads((folder / "cse_model.json").read_text(encoding="utf-8"))
        return None, list(meta.get("modalities") or [])
    return kind_medium(kind), []


def _cse_specs(cfg: dict) -> list[str]:
    c = cfg.get("cse") or {}
    text = c.get("corpus") if c.get("text_loss", c.get("mode")) == "unsup" else c.get("nli")
    other = {"image": c.get("images"), "audio": c.get("audio")}.get(c.get("mode"))
    return [str(s) for s in (text, other) if s]


def read_training(specs: Sequence[str], medium: str | None, data_cfg: dict | None = None, media_dir=None,
                  skip_bad: bool = False) -> TrainingData:
    """The texts and media of training ``specs`` without opening the media: caption or
    labelled sets of ``medium`` (a labelled set as training reads it: one caption per item
    and label template), sentence corpora and NLI files for a text model."""
    from ..data import specs as registry
    from ..data.files import Skipped

    d = data_cfg or {}
    m = medium or "audio"
    opts = registry.ReadOptions(m, Path(media_dir) if media_dir else (Path(d[f"{m}_dir"]) if d.get(f"{m}_dir") else None),
                                d.get("audiocaps_pattern"), d.get(f"{m}_column"), d.get("caption_column") or "caption",
                                tuple(d.get("label_templates") or ("This is a sound of {label}.",)),
                                split=d.get("split"), skip_bad=skip_bad, require_media=False)
    texts, media, skipped = [], [], Skipped()
    for spec in specs:
        if medium and (registry.is_kind(spec, registry.PAIRS, m) or registry.is_kind(spec, registry.LABELLED, m)):
            pairs = registry.read_pairs(spec, opts, skipped)
            texts += [p.caption for p in pairs]
            media += [p.media for p in pairs]
        elif registry.is_kind(spec, registry.CORPUS, "text"):
            from ..data.text import load_corpus

            texts += load_corpus(spec, skip_bad, skipped)
        elif not medium and any(registry.is_kind(spec, registry.LABELLED, x) for x in ("image", "audio")):
            continue  # a CSE model's unpaired images or audio: no captions to scan
        elif spec.startswith("csv:"):
            from ..data.text import load_nli

            texts += [s for t in load_nli(spec, skip_bad, skipped) for s in (t.anchor, t.positive, t.negative)]
        else:
            raise DataError(f"neither caption pairs{' or a labelled set' if medium else ''} nor a sentence corpus "
                            "clapkit reads (give KIND:PATH of a local copy)", spec)
    counts = {"texts": len(texts), "media": len({str(x) for x in media}) if media else None,
              "skipped": skipped.count or None}
    return TrainingData(list(specs), texts, media, counts)


@dataclass
class _Model:
    """What ``clapkit card`` learns of a model without loading its weights."""

    spec: str
    kind: str
    folder: Path | None
    saved: dict | None = None  # a clapkit checkpoint's config.json
    medium: str | None = None
    suite_medium: str | None = None
    run: Path | None = None  # the run folder around a checkpoint/
    cfg: dict | None = None  # the run's config.yaml, else config.json
    summary: dict | None = None
    own: list[str] | None = None  # the training data the model records (provenance's training_data)
    recipe: str | None = None


def _inspect(spec: str) -> _Model:
    from ..models.formats import detect, kind_medium

    local = Path(spec).expanduser()
    if not local.exists() and (local.is_absolute() or spec.startswith((".", "~")) or local.parent.is_dir()
                               and local.parent != Path(".")):  # a path, not a hub name
        raise ConfigError(f"{spec}: no such model file or folder")
    kind = detect(spec)
    folder = local if local.is_dir() else None
    m = _Model(spec, kind, folder, medium=kind_medium(kind))
    if folder is None:
        m.suite_medium = m.medium
        return m
    m.saved = _saved_config(folder, kind)
    m.medium, modalities = _model_medium(folder, kind, m.saved)
    m.suite_medium = modalities[0] if modalities else m.medium
    m.run = _run_dir(folder)
    m.cfg = (_read_yaml(m.run / "config.yaml") if m.run else None) or m.saved
    m.summary = _read_json(m.run / "summary.json") if m.run else None
    m.own = _own_datasets(folder, kind, m.saved)
    if m.own is None and m.cfg:
        own = _cse_specs(m.cfg) if kind == "train-cse" else (m.cfg.get("data") or {}).get("train")
        m.own = [str(x) for x in own] if own else None
    if m.cfg and kind == "train-cse":
        m.recipe = "cse"
    elif m.cfg and "train" in m.cfg:
        m.recipe = "clip" if _get(m.cfg, "model.modality") == "image" else "clap"
    return m


def _audit_training(m: _Model, train_data: Sequence[str], evals: Sequence[str], suites: dict, media_dir, eval_dir,
                    skip_bad: bool, notes: list[str]) -> tuple[dict | None, dict | None, list[dict]]:
    """(training record, class leakage, overlap evidence) of the training data ``train_data``
    (default: the model's own record, where it is readable here)."""
    specs = list(train_data) or list(m.own or [])
    training = side = None
    if evals:
        if m.medium not in ("audio", "image"):
            raise ConfigError(f"--eval: {m.spec} is a text encoder; the recording overlap is for audio and image models")
        if not specs:
            raise ConfigError(f"--eval: {m.spec} names no training data; give --train-data SPEC")
        from .overlap import load_side

        side = load_side(specs, m.medium, None, media_dir, skip_bad)  # the recordings, for the overlap
        # the captions as training read them (a labelled set: every label template of the run's config), for the
        # class leakage; load_side reads one caption per labelled item
        texts = read_training(specs, m.medium, None if train_data else (m.cfg or {}).get("data"), media_dir,
                              skip_bad).texts
        training = TrainingData(specs, texts, [p.media for p in side.pairs],
                                {"pairs": len(texts), "media": len(side.items)})
    elif specs:
        try:
            training = read_training(specs, m.medium, None if train_data else (m.cfg or {}).get("data"), media_dir,
                                     skip_bad)
        except DataError as exc:
            if train_data:
                raise
            notes.append(f"The training data was not readable here ({exc}); give --train-data SPEC to audit it.")
    if training is None:
        return None, None, []
    record = training.record()
    leakage = class_leakage(training.texts, suites) if training.texts else None
    rules = (*OVERLAP_RULES, "perceptual") if m.medium == "image" else OVERLAP_RULES  # as `audit overlap` defaults
    overlap = [overlap_evidence(side, e, m.medium, record["media_fingerprint"], eval_dir, skip_bad, rules)
               for e in evals]
    return record, leakage, overlap


_SCAN_KEYS = {"name", "classes", "texts", "dirty_texts", "dirty_texts_paper", "named_paper", "named_all", "by_rule",
              "per_class"}  # a suite's entry of class_leakage, as a card keeps it


def _old_results(old: dict) -> list[dict]:
    rows = [dict(r) for r in old.get("results") or [] if isinstance(r, dict) and {"task", "dataset", "metric", "value"} <= set(r)]
    for r in rows:
        r.setdefault("task_name", _task_name(r["task"]))
        r.setdefault("metric_type", _metric_type(r["metric"]))
        r.setdefault("dataset_type", _dataset_type(r["dataset"]))
    return rows


def _check_results_model(results: Sequence[str | Path], spec: str) -> None:
    """Refuse a result file that names another model (its recorded fingerprint, an eval
    JSON's ``model_provenance`` or a bench cell's ``model_fingerprint``, is neither this
    model's nor, written before cards were left out of it, this model's with its card)."""
    from ..models.provenance import model_fingerprint

    ours = {model_fingerprint(str(spec)), model_fingerprint(str(spec), cards=True)}
    for f in results:
        d = json.loads(Path(f).read_text(encoding="utf-8"))
        theirs = (d.get("model_provenance") or {}).get("fingerprint") or d.get("model_fingerprint") \
            if isinstance(d, dict) else None
        if theirs and theirs not in ours:
            raise ConfigError(f"{f}: these results are of another model (fingerprint {theirs}, {d.get('model')!r}); "
                              f"{spec} is {model_fingerprint(str(spec))}. Give the results of this model")


def refresh_card(model: str | Path, train_data: Sequence[str] = (), evals: Sequence[str] = (),
                 results: Sequence[str | Path] = (), out: str | Path | None = None, labels: Sequence[str] = (),
                 media_dir=None, eval_dir=None, skip_bad: bool = False, fresh: bool = False) -> tuple[Path, CardInfo]:
    """Write or refresh the card of ``model`` (a path or hub name the loader recognises;
    its weights are not loaded): see the module docstring. ``train_data``: the training
    specs to audit (default: the model's own record, where it is readable here);
    ``evals``: evaluation sets for the overlap; ``results``: result JSON files;
    ``labels``: more class-name specs. A refresh that reads nothing new keeps the card's
    training record and class scan (a run's card counts the pairs the run trained on);
    it keeps the results and overlap evidence of the card it replaces (a new result of
    the same task, data, split and metric, or a new check of the same evaluation set,
    replaces its entry; overlap evidence about other training data is dropped) unless
    ``fresh``. ``out`` defaults to ``MODEL/README.md`` for a folder (required otherwise);
    a card there that clapkit did not write is not replaced."""
    m = _inspect(str(model))
    if out is None:
        if m.folder is None:
            raise ConfigError(f"{m.spec}: not a folder; give --out FILE for its card")
        out = m.folder / CARD
        if out.is_file() and "clapkit" not in read_card(out):
            raise ConfigError(f"{out}: a model card clapkit did not write is there; give --out FILE to write beside it")
    out = Path(out)
    old = {} if fresh else (read_card(out).get("clapkit") or {})
    new_results = [r for f in results for r in read_results(f, m.medium)]  # bad files fail before any long audit
    _check_results_model(results, m.spec)
    notes: list[str] = []
    old_suites = (old.get("contamination") or {}).get("suites")
    whole = isinstance(old_suites, dict) and all(isinstance(x, dict) and _SCAN_KEYS <= set(x) for x in old_suites.values())
    if not (train_data or evals or labels) and isinstance(old.get("training_data"), list) and old["training_data"] \
            and whole:
        training, leakage, overlap = list(old["training_data"]), old_suites, []
    else:
        suites = label_suites(suites_for(m.suite_medium), labels)
        record, leakage, overlap = _audit_training(m, train_data, evals, suites, media_dir, eval_dir, skip_bad, notes)
        training = [record] if record else []
    train_fp = training[0].get("media_fingerprint") if training else None
    kept = [o for o in (old.get("contamination") or {}).get("overlap") or []
            if isinstance(o, dict) and o.get("eval") not in evals and (train_fp is None or o.get("train_fingerprint") == train_fp)]
    library, family = _model_facts(m.folder or Path(m.spec), m.kind, m.saved)
    info = CardInfo(name=_name_of(m.folder) if m.folder else m.spec.rstrip("/").split("/")[-1], source=m.spec,
                    kind=m.kind, library=library, family=family, medium=m.medium,
                    datasets=m.own or list(train_data) or None, base_model=_base_model(m.cfg), recipe=m.recipe,
                    config=m.cfg, config_file="../config.yaml" if m.run else ("config.json" if m.saved else None),
                    summary=m.summary, training=training,
                    results=merge_results(_old_results(old), run_results(m.run, m.cfg, m.summary, m.medium, m.folder)
                                          if m.run else [], new_results),
                    leakage=leakage, overlap=kept + overlap, notes=notes)
    if m.folder is None:
        return _write_detached(out, info, m.spec), info
    if m.kind == "clapkit" and out.resolve() == (m.folder / CARD).resolve():
        write_text_tower_card(m.folder, info)
    return write_card(m.folder, info, out), info


def _task_name(task: str) -> str:
    return task.replace("-", " ").capitalize()


def _write_detached(out: Path, info: CardInfo, spec: str) -> Path:
    """The card of a model that is no local folder (a hub name, a weights file): its
    fingerprint is the provenance's for that name or file."""
    from ..atomic import atomic_write_text
    from ..models.provenance import model_fingerprint

    info.fingerprint = model_fingerprint(spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, build_card(info))
    return out
