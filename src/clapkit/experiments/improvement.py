"""``clapkit experiment improvement``: improve a CLAP with unpaired audio and text.

teacher (trained on ``data.fraction`` of its paired data) -> curation of an unpaired
audio pool against a caption pool, DU and DS -> four students (DU/DS x hard/soft
labels) -> a zero-shot table of the teacher and every student on each evaluation set.
Written to ``out``: ``teacher/``, ``curated_{du,ds}.csv`` (+ stats, histograms),
``student_{du,ds}_{clip,soft_clip}/``, ``results.json`` and ``results.md``. Finished
steps are not run again on the same ``out``.

DS curation picks captions *by their similarity to the evaluation class names*, so a
gain on those classes may be leakage rather than learning. Every training set (the
teacher's and each curated manifest) is therefore audited against every evaluation
set (``audit leakage``; reports in ``leakage/``), and its dirty fraction (training pairs
whose caption names an evaluation class) is written beside the accuracy table.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from ..audit.leakage import audit_leakage
from ..curation import curate
from ..data.audio.labelled import load_labelled
from ..data.audio.synthetic import write_synthetic, write_unpaired_pool
from ..errors import ConfigError
from ..evaluation.zeroshot import zeroshot_eval
from ..models.dual import DualEncoder
from ..training.clap import train_clap
from . import train_once

STRATEGIES = ("du", "ds")
LOSSES = ("clip", "soft_clip")


def run_improvement(cfg: dict, out: str | Path) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    imp = cfg["improvement"]
    a = cfg["audio"]
    if imp["synthetic"]:
        write_synthetic(out / "data", seed=cfg["seed"], sr=a["sample_rate"], seconds=a["segment_seconds"])
        write_unpaired_pool(out / "data" / "pool", seed=cfg["seed"] + 100, sr=a["sample_rate"], seconds=a["segment_seconds"])
        teacher_train = [f"csv:{out / 'data' / 'train.csv'}"]
        pool, captions = out / "data" / "pool", str(out / "data" / "train.csv")
        labels = f"folder:{out / 'data' / 'unseen'}"
        evals = {"unseen": f"folder:{out / 'data' / 'unseen'}", "seen": f"folder:{out / 'data' / 'seen'}"}
    else:
        teacher_train, pool, labels = imp["teacher_train"], imp["audio_pool"], imp["labels"]
        if not (teacher_train and pool and imp["eval"]):
            raise ConfigError("improvement: set teacher_train, audio_pool and eval (or improvement.synthetic=true)")
        captions = imp["captions"] or teacher_train[0]
        evals = {spec.split(":", 1)[-1].rstrip("/").split("/")[-1] or spec: spec for spec in imp["eval"]}

    tcfg = copy.deepcopy(cfg)
    tcfg["data"]["train"] = teacher_train
    teacher = out / "teacher"
    train_once(train_clap, tcfg, teacher)

    cache = out / ".clapkit-cache"
    curated = {}
    for strategy in STRATEGIES:
        if strategy == "ds" and not labels:
            continue
        manifest = out / f"curated_{strategy}.csv"
        stats_file = out / f"curated_{strategy}.stats.json"
        if not stats_file.exists():
            curate(teacher / "checkpoint", pool, captions, manifest, strategy, imp["sigma"], imp["top_k"], labels,
                   imp["label_threshold"], cache=cache)
        curated[strategy] = json.loads(stats_file.read_text())

    models = {"teacher": teacher / "checkpoint"}
    for strategy, stats in curated.items():
        if stats["pairs"] < 2:
            continue  # nothing to learn from; reported in results
        for loss in LOSSES:
            run = out / f"student_{strategy}_{loss}"
            scfg = copy.deepcopy(cfg)
            scfg["data"].update(train=[f"csv:{out / f'curated_{strategy}.csv'}"], fraction=1.0)
            scfg["train"]["epochs"] = imp["student_epochs"]
            scfg["train"]["loss"] = loss
            scfg["train"]["soft"].update(teacher=str(teacher / "checkpoint"), cache=str(cache))
            scfg["model"]["init_from"] = str(teacher / "checkpoint") if imp["student_init"] == "teacher" else None
            train_once(train_clap, scfg, run)
            models[run.name] = run / "checkpoint"

    trained_on = {"teacher": teacher_train} | {s: [f"csv:{out / f'curated_{s}.csv'}"] for s in curated}
    leakage = {}
    for name, specs in trained_on.items():
        leakage[name] = {}
        for ev, spec in evals.items():
            r = audit_leakage(specs, spec, out / "leakage" / f"{name}_vs_{ev}")
            leakage[name][ev] = {"dirty_fraction": r["total"]["dirty_fraction"], "dirty_pairs": r["total"]["dirty_pairs"],
                                 "pairs": r["total"]["pairs"]}

    sets = {name: load_labelled(spec) for name, spec in evals.items()}
    table = {}
    for name, path in models.items():
        model = DualEncoder.load(path)
        table[name] = {k: zeroshot_eval(model, ds)["accuracy"] for k, ds in sets.items()}
    results = {"zeroshot": table, "chance": {k: 1 / len(ds.class_names) for k, ds in sets.items()},
               "curation": {k: {x: v[x] for x in ("pairs", "audio_matched", "audio_pool", "caption_pool") if x in v}
                            | ({"captions_in_domain": v["captions_in_domain"]} if "captions_in_domain" in v else {})
                            for k, v in curated.items()},
               "leakage": leakage}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(_markdown(results))
    return results


def _markdown(r: dict) -> str:
    sets = list(r["chance"])
    lines = ["# Improvement with unpaired audio and text", "", "Zero-shot accuracy:", "",
             "| model | " + " | ".join(sets) + " |", "| --- |" + " ---: |" * len(sets)]
    for name, accs in r["zeroshot"].items():
        lines.append(f"| {name} | " + " | ".join(f"{accs[s]:.3f}" for s in sets) + " |")
    lines.append("| chance | " + " | ".join(f"{r['chance'][s]:.3f}" for s in sets) + " |")
    lines += ["", "Leakage of the training data: the fraction of pairs whose caption names an evaluation class "
              "(`audit leakage`; DS selects captions by similarity to these names, so part of a DS gain may be "
              "leakage; students also start from the teacher):", "",
              "| training data | " + " | ".join(sets) + " |", "| --- |" + " ---: |" * len(sets)]
    for name, per in r["leakage"].items():
        label = "teacher's pairs" if name == "teacher" else f"curated {name.upper()}"
        lines.append(f"| {label} | " + " | ".join(
            f"{per[s]['dirty_fraction']:.3f} ({per[s]['dirty_pairs']}/{per[s]['pairs']})" for s in sets) + " |")
    lines += ["", "Curation:", ""] + [f"- {k.upper()}: {v}" for k, v in r["curation"].items()]
    return "\n".join(lines) + "\n"
