"""``clapkit experiment leakage-matrix``: the 2 x 3 leakage grid of the CLAP-pitfalls paper.

Training data dirty (as is) or clean (pairs whose caption names an evaluation class
removed, by :func:`clapkit.audit.leakage.audit_leakage`) x audio-backbone pre-training
dirty (all classes), clean (evaluation classes excluded) or none (random init). Each of
the six CLAPs is trained with the same recipe, evaluated zero-shot on the evaluation set
and audited (:func:`clapkit.audit.embeddings.audit_embeddings`). Written to ``out``::

    audit/                 the caption leakage report; train_clean.csv the clean pairs
    backbone_dirty/ backbone_clean/    pre-trained audio towers
    <train>_<pre>/         each CLAP run, with audit/ (silhouettes, S, t-SNE)
    results.json results.md tsne_matrix.png

With ``experiment.towers`` (name -> ``model.audio`` settings, e.g. an AST fine-tuned on
AudioSet, supervised, beside a self-supervised WavLM or HuBERT: ``hf:PATH`` towers) the
grid is replaced by the paper's question asked of those backbones: each tower's CLAP is
trained on the dirty and on the clean captions with the same recipe and scored zero-shot
with a bootstrap interval and the split into classes its training captions name and never
name (:func:`run_tower_comparison`, ``tower_<name>_<training>/``).

The three tables of the paper (zero-shot accuracy; silhouette of x_a and E_a;
topological similarities) and the Pearson correlations (silhouette vs accuracy;
S(E_a, E_t) vs log accuracy) are in ``results.json`` and ``results.md``. A finished
cell is not trained again when the command is rerun on the same ``out``.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr

from ..audit.embeddings import audit_embeddings, plot_tsne
from ..audit.leakage import audit_leakage, label_words, pretrain_overlap
from ..data.audio.labelled import load_labelled
from ..data.audio.synthetic import write_leakage_set
from ..data.text import load_label_names
from ..errors import ConfigError
from ..models.dual import DualEncoder
from ..training.backbone import train_audio_backbone
from ..training.clap import train_clap
from . import train_once

TRAININGS = ("dirty", "clean")
PRETRAININGS = ("dirty", "clean", "none")


def run_leakage_matrix(cfg: dict, out: str | Path) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    e = cfg["experiment"]
    if e["synthetic"]:
        meta = write_leakage_set(out / "data", seed=cfg["seed"], sr=cfg["audio"]["sample_rate"],
                                 seconds=cfg["audio"]["segment_seconds"])
        captions = [f"csv:{out / 'data' / 'train_dirty.csv'}"]
        eval_spec, pretrain_spec = f"folder:{out / 'data' / 'eval'}", f"folder:{out / 'data' / 'pretrain'}"
        exclude = meta["pretrain_classes_matching_eval"]
    else:
        captions, eval_spec, pretrain_spec = list(e["train_captions"]), e["eval"], e["pretrain"]
        if not (captions and eval_spec and (pretrain_spec or e["pretrain_dirty_checkpoint"] or e["towers"])):
            raise ConfigError("experiment: set train_captions, eval and pretrain (or experiment.synthetic=true)")
        exclude = list(e["pretrain_exclude"]) or (_overlapping_classes(eval_spec, pretrain_spec) if pretrain_spec else [])

    leak = audit_leakage(captions, eval_spec, out / "audit", write_clean=out / "train_clean.csv",
                         clean_by=e["clean_by"], audio_dir=cfg["data"]["audio_dir"])
    data = {"dirty": captions, "clean": [f"csv:{out / 'train_clean.csv'}"]}
    if e["towers"]:
        return run_tower_comparison(cfg, out, data, load_labelled(eval_spec), leak)

    backbones: dict[str, str | None] = {"none": None}
    for kind, excl in (("dirty", []), ("clean", exclude)):
        if kind == "dirty" and e["pretrain_dirty_checkpoint"]:
            backbones[kind] = e["pretrain_dirty_checkpoint"]
            continue
        bcfg = copy.deepcopy(cfg)
        bcfg["backbone"].update(data=pretrain_spec, exclude=excl)
        folder = out / f"backbone_{kind}"
        if not (folder / "summary.json").exists():
            train_audio_backbone(bcfg, folder)
        backbones[kind] = str(folder / "audio_tower.safetensors")

    evaluation = load_labelled(eval_spec)
    cells: dict[str, dict] = {}
    for train in TRAININGS:
        for pre in PRETRAININGS:
            name = f"{train}_{pre}"
            run = out / name
            rcfg = copy.deepcopy(cfg)
            rcfg["data"]["train"] = data[train]
            rcfg["model"]["audio"]["checkpoint"] = backbones[pre]
            train_once(train_clap, rcfg, run)
            model = DualEncoder.load(run / "checkpoint")
            report = audit_embeddings(model, evaluation, run / "audit", template=e["template"], seed=cfg["seed"])
            cells[name] = {k: report[k] for k in ("zeroshot_accuracy", "silhouette", "topological_similarity")}
            cells[name]["train_pairs"] = json.loads((run / "summary.json").read_text())["train_pairs"]

    results = {
        "cells": cells,
        "chance": 1.0 / len(evaluation.class_names),
        "caption_leakage": {"dirty_pairs": leak["total"]["dirty_pairs"], "pairs": leak["total"]["pairs"],
                            "clean_pairs": leak["clean"]["pairs"]},
        "pretrain_excluded": exclude,
        "correlations": _correlations(cells),
        "ordering": _ordering(cells),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(_markdown(results))
    _tsne_matrix(out, evaluation.class_names)
    return results


def run_tower_comparison(cfg: dict, out: Path, data: dict, evaluation, leak: dict) -> dict:
    """Each tower of ``experiment.towers`` x training captions (dirty, clean): one CLAP with
    the config's recipe, its zero-shot top-1 with a 95% bootstrap interval over the items,
    and top-1 on the classes its training captions name and never name."""
    from ..audit.leakage import zeroshot_leakage
    from ..evaluation.prompts import zeroshot_texts
    from ..evaluation.uncertainty import mean_interval
    from ..evaluation.zeroshot import zeroshot_scores

    e = cfg["experiment"]
    labels = np.array([c.label for c in evaluation.clips])
    texts = zeroshot_texts(evaluation.class_names, "audio", [e["template"]])
    rows: dict[str, dict] = {}
    for tower, settings in e["towers"].items():
        if not isinstance(settings, dict) or "name" not in settings:
            raise ConfigError(f"experiment.towers.{tower}: give the tower's model.audio settings, at least its name "
                              "(e.g. {name: hf:MIT/ast-finetuned-audioset-10-10-0.4593})")
        for train in TRAININGS:
            run = out / f"tower_{tower}_{train}"
            rcfg = copy.deepcopy(cfg)
            rcfg["model"]["audio"] = {**cfg["model"]["audio"], "checkpoint": None, **settings}
            rcfg["data"]["train"] = data[train]
            summary = train_once(train_clap, rcfg, run)
            model = DualEncoder.load(run / "checkpoint")
            correct = zeroshot_scores(model, evaluation, texts).argmax(1) == labels
            split = zeroshot_leakage(data[train], evaluation, correct)
            lo, hi = mean_interval(correct.astype(float), seed=cfg["seed"])
            rows[f"{tower}_{train}"] = {
                "tower": tower, "audio": settings["name"], "training": train, "train_pairs": summary["train_pairs"],
                "top1": float(correct.mean()), "top1_ci": [lo, hi], "n": int(len(correct)),
                "top1_named_classes": split["top1_named_classes"], "top1_unnamed_classes": split["top1_unnamed_classes"],
                "classes_named": split["classes_named"],
            }
    results = {"towers": rows, "chance": 1.0 / len(evaluation.class_names), "template": e["template"],
               "caption_leakage": {"dirty_pairs": leak["total"]["dirty_pairs"], "pairs": leak["total"]["pairs"],
                                   "clean_pairs": leak["clean"]["pairs"]}}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(_towers_markdown(results))
    return results


def _towers_markdown(r: dict) -> str:
    def cell(d: dict | None) -> str:
        return "-" if d is None or d["value"] is None else f"{d['value']:.3f} (n={d['n']})"

    lines = ["# Zero-shot accuracy by audio tower", "", f"Prompt `{r['template']}`; chance {r['chance']:.3f}; top-1 with "
             "its 95% bootstrap interval, and on the classes the training captions name / never name.", "",
             "| tower | training | top-1 [95% CI] | named classes | never-named classes |", "| --- | --- | --- | --- | --- |"]
    for row in r["towers"].values():
        lo, hi = row["top1_ci"]
        lines.append(f"| {row['tower']} (`{row['audio']}`) | {row['training']} ({row['train_pairs']} pairs) | "
                     f"{row['top1']:.3f} [{lo:.3f}, {hi:.3f}] | {cell(row['top1_named_classes'])} | "
                     f"{cell(row['top1_unnamed_classes'])} |")
    c = r["caption_leakage"]
    lines += ["", f"Caption leakage: {c['dirty_pairs']} of {c['pairs']} training pairs name an evaluation class; the clean "
              f"set keeps {c['clean_pairs']}."]
    return "\n".join(lines) + "\n"


def _overlapping_classes(eval_spec: str, pretrain_spec: str) -> list[str]:
    """Pre-training classes that share a content word with an evaluation class."""
    eval_words = {n: label_words(n) for n in load_label_names(eval_spec)}
    overlap = pretrain_overlap(eval_words, load_label_names(pretrain_spec))
    return sorted({p for names in overlap.values() for p in names})


def _correlations(cells: dict) -> dict:
    acc = np.array([c["zeroshot_accuracy"] for c in cells.values()])
    out = {}
    series = {
        "silhouette_E_a_vs_accuracy": ([c["silhouette"]["E_a"] for c in cells.values()], acc),
        "silhouette_x_a_vs_accuracy": ([c["silhouette"]["x_a"] for c in cells.values()], acc),
        "S_E_a_E_t_vs_log_accuracy": ([c["topological_similarity"]["E_a_vs_E_t"] for c in cells.values()],
                                      np.log(np.maximum(acc, 1e-6))),
    }
    for key, (x, y) in series.items():
        x = np.asarray(x, dtype=float)
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            out[key] = {"r": math.nan, "p": math.nan, "n": len(x)}
        else:
            r, p = pearsonr(x, y)
            out[key] = {"r": float(r), "p": float(p), "n": len(x)}
    return out


def _ordering(cells: dict) -> dict:
    """Does the grid show the paper's ordering? dirty training above clean for each
    pre-training, and pre-trained (dirty, clean) above none for each training."""
    acc = {k: v["zeroshot_accuracy"] for k, v in cells.items()}
    dirty_over_clean = {pre: acc[f"dirty_{pre}"] > acc[f"clean_{pre}"] for pre in PRETRAININGS}
    pre_over_none = {t: acc[f"{t}_dirty"] > acc[f"{t}_none"] and acc[f"{t}_clean"] > acc[f"{t}_none"] for t in TRAININGS}
    return {"dirty_training_above_clean": dirty_over_clean, "pretrained_above_none": pre_over_none,
            "all": all(dirty_over_clean.values()) and all(pre_over_none.values())}


def _table(cells: dict, value, fmt: str = "{:.3f}") -> list[str]:
    lines = ["| training \\ pre-training | dirty | clean | none |", "| --- | ---: | ---: | ---: |"]
    for t in TRAININGS:
        lines.append(f"| {t} | " + " | ".join(fmt.format(value(cells[f'{t}_{p}'])) for p in PRETRAININGS) + " |")
    return lines


def _markdown(r: dict) -> str:
    c = r["cells"]
    lines = ["# Leakage matrix", "", f"Zero-shot accuracy (chance {r['chance']:.3f}):", ""]
    lines += _table(c, lambda x: x["zeroshot_accuracy"])
    for key in ("x_a", "E_a"):
        lines += ["", f"Silhouette of {key} (cosine):", ""] + _table(c, lambda x, key=key: x["silhouette"][key])
    for key in ("x_a_vs_E_a", "x_t_vs_E_t", "E_a_vs_E_t"):
        lines += ["", f"Topological similarity S({key.replace('_vs_', ', ')}):", ""]
        lines += _table(c, lambda x, key=key: x["topological_similarity"][key])
    lines += ["", "Pearson correlations over the six models:", ""]
    for k, v in r["correlations"].items():
        lines.append(f"- {k}: r = {v['r']:.3f}, p = {v['p']:.3g} (n = {v['n']})")
    o = r["ordering"]
    lines += ["", f"Paper's ordering holds: {o['all']} (dirty above clean: {o['dirty_training_above_clean']}; "
              f"pre-trained above none: {o['pretrained_above_none']}).", "",
              f"Caption leakage: {r['caption_leakage']['dirty_pairs']} of {r['caption_leakage']['pairs']} training pairs "
              f"name an evaluation class; the clean set keeps {r['caption_leakage']['clean_pairs']}.", "",
              "![t-SNE of E_a](tsne_matrix.png)"]
    return "\n".join(lines) + "\n"


def _tsne_matrix(out: Path, class_names: list[str]) -> None:
    from ..plotting import pyplot

    plt = pyplot()

    fig, axes = plt.subplots(2, 3, figsize=(15, 10))
    for i, t in enumerate(TRAININGS):
        for j, p in enumerate(PRETRAININGS):
            z = np.load(out / f"{t}_{p}" / "audit" / "tsne.npz")
            plot_tsne(z["tsne_E_a"], z["labels"], class_names, None, f"{t} training, {p} pre-training", ax=axes[i, j])
    fig.tight_layout()
    fig.savefig(out / "tsne_matrix.png", dpi=110)
    plt.close(fig)
