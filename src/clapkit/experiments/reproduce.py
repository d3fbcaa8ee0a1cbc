"""``clapkit reproduce``: run the whole protocol of one published row and say whether the
user's number agrees with it.

A *reproduction card* (``clapkit/cards/NAME.yaml``, or any YAML file in the same schema)
states one published row::

    title: all-MiniLM-L6-v2, STS Benchmark test, cosine Spearman x 100
    model: {name: sentence-transformers/all-MiniLM-L6-v2, family: bert}
    task: {type: sts, data: "stsb:{data}/stsbenchmark", split: test}   # a bench task, without its name
    input: {sample_rate: 48000, clip_seconds: 10, fusion: true}       # audio rows: what the model was fed
    metric: spearman_STSB-test                                         # a metric row of the bench cell
    items: 1379                                                        # the items the row was computed on
    published:
      value: 82.03                                                     # on clapkit's scale for the metric
      as_printed: "0.8203"                                             # as the source prints it
      source: https://...                                              # where it is published: a URL
      where: "file.json line 12"                                       # file and line, or paper table

The task is a bench task (:mod:`clapkit.experiments.bench`: prompts, class names, folds or
``fold_protocol``, split, windows), so a card runs through the bench's cells: its result
has the bench's interval, and with two ``--model`` the paired difference and test of
``pairs.csv`` (zero-shot, retrieval and probe cards; an STS card gives each model's
interval, no paired test). Items the metadata lists but the copy lacks are counted, not fatal (the
bench runs with ``--skip-bad``). The result, ``OUT/reproduction.json``, gives for each
model the measured value with its 95% interval, the published value, whether the
published value lies inside the interval, and every way the run departed from the card:
another model (family or fingerprint), missing or unreadable items, another item count,
another sample rate, clip length or fusion, another precision.

Published values are facts cited with their source; which model a card describes is the
card's ``model``, and a run on another model says so among its departures.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import yaml

from ..errors import ConfigError

# every field a card must have, with what it holds (the error for a missing one says so)
REQUIRED = {
    "title": "one line naming the published row (model, dataset, metric)",
    "model": "the model the row was measured with: {name: ..., family: ...}",
    "model.name": "the published model's name (checkpoint file or hub name)",
    "task": "the protocol, as a bench task without its name: {type: zeroshot, data: esc50:{data}/ESC-50-master, ...}",
    "task.type": "zeroshot, retrieval, probe or sts",
    "task.data": "the data spec, with {data} for --data-root",
    "metric": "the bench metric the row reports (top1, top1_fold_mean, mAP, text_to_audio_R@1, spearman_STSB-test, "
              "avg, ...)",
    "published": "the published value and its source: {value: ..., source: URL, where: file and line}",
    "published.value": "the number, on clapkit's scale for the metric (accuracies 0-1, Spearman x 100)",
    "published.source": "where it is published: a URL (a repository at a commit, a model card, a paper)",
    "published.where": "the file and line, or the paper's table",
}
# the metric rows each task type's bench cell writes (a card's metric must be one of them)
METRICS = {
    "zeroshot": r"top1|top5|mean_class_accuracy|top1_fold_mean|mAP|mAP_clip_benchmark|mAUC|d_prime|d_prime_hear|lrap",
    "retrieval": r"(text_to_(audio|image)|(audio|image)_to_text)_(R@\d+|mAP@\d+|mAP@10_laion|nDCG@\d+|hit@\d+)",
    "sts": r"spearman_.+|avg",
    "probe": r"(linear|knn)_(top1|top5|mean_class_accuracy|top1_fold_mean)_(x|E)",
}
OPTIONAL = {"input", "items", "notes", "bootstrap", "model.family", "model.fingerprint", "model.kind",
            "published.as_printed", "input.sample_rate", "input.clip_seconds", "input.fusion"}


def _cards_folder() -> Path:
    return Path(str(resources.files("clapkit") / "cards"))


def list_cards() -> list[str]:
    return sorted(p.stem for p in _cards_folder().glob("*.yaml"))


def _get(card: dict, dotted: str):
    value = card
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def load_card(source: str | Path) -> dict:
    """A card by shipped name or YAML path, checked: a named error for each missing or
    unknown field, and for a published value that is not a number."""
    text = str(source)
    path = Path(text) if text.endswith((".yaml", ".yml")) else _cards_folder() / f"{text}.yaml"
    if not path.is_file():
        raise ConfigError(f"card {text!r}: neither a shipped card ({', '.join(list_cards())}) nor a YAML file")
    try:
        card = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    return check_card(card, path)


def check_card(card, path: str | Path) -> dict:
    if not isinstance(card, dict):
        raise ConfigError(f"{path}: a card is a mapping of {', '.join(k for k in REQUIRED if '.' not in k)}")
    for key, meaning in REQUIRED.items():
        if _get(card, key) in (None, ""):
            raise ConfigError(f"{path}: missing field {key} ({meaning})")
    known = {k.split(".")[0] for k in REQUIRED} | {k for k in OPTIONAL if "." not in k}
    unknown = sorted(set(card) - known)
    for parent in ("model", "published", "input"):
        if isinstance(card.get(parent), dict):
            allowed = {k.split(".", 1)[1] for k in (*REQUIRED, *OPTIONAL) if k.startswith(parent + ".")}
            unknown += [f"{parent}.{k}" for k in sorted(set(card[parent]) - allowed)]
        elif parent in card and card[parent] is not None:
            raise ConfigError(f"{path}: {parent} must be a mapping")
    if unknown:
        raise ConfigError(f"{path}: unknown field(s) {', '.join(unknown)}; a card has "
                          f"{', '.join(sorted({*REQUIRED, *OPTIONAL}))}")
    value = card["published"]["value"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{path}: published.value {value!r} is not a number (write it on clapkit's scale; "
                          "keep the source's spelling in published.as_printed)")
    if "name" in card["task"]:
        raise ConfigError(f"{path}: task.name: a card's task is named after the card; leave it out")
    kind, metric = card["task"]["type"], str(card["metric"])
    if kind in METRICS and not re.fullmatch(METRICS[kind], metric):
        raise ConfigError(f"{path}: metric {metric!r} is not one a {kind} task reports (they match {METRICS[kind]})")
    items = card.get("items")
    if items is not None and (isinstance(items, bool) or not isinstance(items, int) or items < 1):
        raise ConfigError(f"{path}: items {items!r}: the number of items the published row was computed on")
    card = dict(card, name=Path(path).stem, path=str(path))
    return card


def card_bench(card: dict, models: list[str], data_root: str | Path | None, bootstrap: int | None = None) -> dict:
    """The one-task bench a card runs (checked as a bench file is)."""
    from .bench import check_bench

    task = {"name": card["name"], **card["task"]}
    bench = {"tasks": [task], "bootstrap": int(bootstrap if bootstrap is not None else card.get("bootstrap", 1000)),
             "seed": 0}
    return check_bench(bench, card["path"], data_root, models)


def check_protocol(card: dict, data_root: str | Path | None) -> dict:
    """Everything of a card's protocol but the model, on the data under ``data_root``: the
    readers read the set as the task names it (folds, split, classes), every listed file is
    opened (missing and unreadable ones counted), and a zero-shot task's prompts are built
    from its prompt set and class names. ``clapkit reproduce CARD --check`` prints it; a
    card whose prompts, class names or reader do not resolve fails here, before any model
    is loaded."""
    from ..data.files import Skipped

    task = card_bench(card, ["check"], data_root)["tasks"][0]
    out: dict = {"card": card["name"], "type": task["type"], "data": task["data"]}
    if task["type"] == "sts":
        from ..data.text.sts import load_sts

        specs = task["data"] if isinstance(task["data"], list) else [task["data"]]
        sets = [s for spec in specs for s in load_sts(spec, task.get("split") or "test")]
        out.update(sets={s.name: len(s.scores) for s in sets}, items=sum(len(s.scores) for s in sets))
        return out
    medium = task.get("medium") or ("image" if _is_image(task) else "audio")
    media_dir = task.get("image_dir" if medium == "image" else "audio_dir")
    if task["type"] == "retrieval":
        from ..data.media import check_media
        from ..data.specs import ReadOptions, read_pairs

        skipped = Skipped()
        opts = ReadOptions(medium, Path(media_dir) if media_dir else None, split=task.get("split"), skip_bad=True)
        pairs = check_media(medium, read_pairs(task["data"], opts, skipped), True, skipped)
        out.update(items=len({p.media for p in pairs}), captions=len(pairs), coverage=skipped.coverage(len(pairs)))
        return out
    from ..data.media import load_labelled_media
    from ..evaluation.prompts import zeroshot_texts
    from ..evaluation.zeroshot import task_folds

    folds = task_folds(task.get("folds"), task.get("fold_protocol"), f"{card['path']}: ")[0]
    data = load_labelled_media(task["data"], medium, folds, task.get("classes"), skip_bad=True, checked=True,
                               split=task.get("split"), media_dir=media_dir)
    texts = zeroshot_texts(data.class_names, medium, task.get("prompts"), task.get("classnames"), data.class_ids)
    out.update(items=len(data.clips), classes=len(data.class_names), coverage=data.skipped.coverage(len(data.clips)),
               prompts=texts.source, first_prompts=texts.texts[0], class_names_used=texts.names)
    return out


def _is_image(task: dict) -> bool:
    from .bench_cells import task_medium

    return task_medium(task, "audio") == "image"


def departures(card: dict, cell: dict) -> list[str]:
    """Every way a bench cell's run departed from the card."""
    out = []
    want = card["model"]
    if want.get("family") and cell.get("model_family") != want["family"]:
        out.append(f"model: the card's row is {want['name']} ({want['family']}); this run scored "
                   f"{cell['model_spec']} ({cell.get('model_family')})")
    if want.get("fingerprint") and cell.get("model_fingerprint") != want["fingerprint"]:
        out.append(f"model fingerprint {cell.get('model_fingerprint')} is not the card's {want['fingerprint']} "
                   "(another copy or version of the files)")
    if want.get("kind") and cell.get("model_kind") != want["kind"]:
        out.append(f"model kind {cell.get('model_kind')} is not the card's {want['kind']}")
    cov = cell.get("coverage") or {}
    for key in ("missing", "unreadable", "malformed"):
        if cov.get(key):
            out.append(f"{cov[key]} of the {cov['listed']} items the metadata lists are {key}")
    if not cov and cell.get("skipped"):  # a retrieval cell: rows or files left out, counted by the readers
        out.append(f"{cell['skipped']} rows or files of the data were left out (missing or unreadable media)")
    if card.get("items") and cov.get("present") is not None and cov["present"] != card["items"]:
        out.append(f"scored {cov['present']} items; the published row was computed on {card['items']}")
    fed = cell.get("audio_input") or {}
    for key, unit in (("sample_rate", " Hz"), ("clip_seconds", " s"), ("fusion", "")):
        stated = (card.get("input") or {}).get(key)
        if stated is not None and fed.get(key) is not None and fed[key] != stated:
            out.append(f"{key}: the model is fed {fed[key]}{unit}; the card states {stated}{unit}")
    if cell.get("precision", "fp32") != "fp32":
        out.append(f"precision {cell['precision']} (published rows are fp32 unless the card says otherwise)")
    if cell.get("compile", "none") != "none":
        out.append(f"--compile {cell['compile']} (equal to eager within rounding)")
    if cell.get("not_applicable"):
        out.append(f"not scored: {cell['not_applicable']}")
    return out


def reproduce(card: dict, models: list[str], out: str | Path, data_root: str | Path | None = None, device="cpu",
              batch_size: int = 32, num_workers: int = 0, precision: str = "fp32", cache=None,
              bootstrap: int | None = None) -> dict:
    """Run ``card`` on each of ``models`` (``name=path`` or a path) into ``out`` (the bench's
    cells, table and pairs, and ``reproduction.json``); returns the reproduction record."""
    from ..atomic import atomic_write_text
    from .bench import run_bench
    from .bench_cells import cell_name

    if not models:
        raise ConfigError(f"card {card['name']}: give the model to run with --model (the card's row is "
                          f"{card['model']['name']})")
    bench = card_bench(card, models, data_root, bootstrap)
    out = Path(out)
    run_bench(bench, out, device=device, batch_size=batch_size, num_workers=num_workers, skip_bad=True,
              progress=True, cache=cache, precision=precision)
    published = float(card["published"]["value"])
    results = []
    for model in bench["models"]:
        cell = json.loads((out / "cells" / f"{cell_name(model['name'], card['name'])}.json").read_text())
        row = next((r for r in cell["metrics"] if r["metric"] == card["metric"]), None)
        entry = {"name": model["name"], "model": model["model"], "departures": departures(card, cell),
                 "coverage": cell.get("coverage"), "model_fingerprint": cell.get("model_fingerprint"),
                 "model_family": cell.get("model_family")}
        if cell.get("not_applicable"):  # e.g. an audio model on an image card: nothing to compare
            entry.update(value=None, ci=None, n=None, difference=None, published_inside_interval=None,
                         verdict=f"not scored: {cell['not_applicable']}")
            results.append(entry)
            continue
        if row is None:
            listed = ", ".join(r["metric"] for r in cell["metrics"])
            raise ConfigError(f"{card['path']}: metric {card['metric']!r} is not among the cell's ({listed or 'none'})")
        lo, hi = row["ci_low"], row["ci_high"]
        inside = None if lo is None else bool(lo <= published <= hi)
        entry.update(value=row["value"], ci=None if lo is None else [lo, hi], n=row["n"],
                     difference=row["value"] - published, published_inside_interval=inside,
                     verdict="no interval (bootstrap 0)" if inside is None else "agrees" if inside else
                     ("above the published value" if row["value"] > published else "below the published value"))
        results.append(entry)
    record = {"card": card["name"], "title": card["title"], "metric": card["metric"], "published": card["published"],
              "card_model": card["model"], "items": card.get("items"), "input": card.get("input"),
              "task": bench["tasks"][0], "bootstrap": {"resamples": bench["bootstrap"], "seed": bench["seed"],
                                                       "level": 0.95},
              "results": results, "paired": _paired(out, card["name"])}
    atomic_write_text(out / "reproduction.json", json.dumps(record, indent=1))
    return record


def _paired(out: Path, task: str) -> list[dict]:
    """The bench's paired differences on the card's task (two or more models)."""
    import csv

    path = out / "pairs.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["task"] == task]
    return [{k: (float(v) if k in ("difference", "ci_low", "ci_high", "p_value") and v else v) for k, v in r.items()}
            for r in rows]


def summary(record: dict) -> str:
    """The human summary ``clapkit reproduce`` prints."""
    p = record["published"]
    lines = [f"{record['card']}: {record['title']}",
             f"  published {p['value']:g} ({p.get('as_printed', p['value'])}; {p['source']}, {p['where']})"]
    for r in record["results"]:
        if r["value"] is None:
            lines.append(f"  {r['name']}: {r['verdict']}")
            continue
        ci = f" [{r['ci'][0]:.4g}, {r['ci'][1]:.4g}]" if r["ci"] else ""
        lines.append(f"  {r['name']}: {record['metric']} {r['value']:.4g}{ci} on {r['n']} items: {r['verdict']} "
                     f"(measured - published {r['difference']:+.4g})")
        lines += [f"    departs from the card: {d}" for d in r["departures"]]
    for p in record["paired"]:
        lines.append(f"  {p['model_a']} - {p['model_b']}: {p['metric']} {p['difference']:+.4g} "
                     f"[{p['ci_low']:.4g}, {p['ci_high']:.4g}], p = {p['p_value']:.3g} ({p['test']})")
    return "\n".join(lines)
