"""``clapkit audit model``: where does a model's zero-shot score come from? One command.

For any model :func:`clapkit.models.public.loader.load_model` loads (a clapkit checkpoint, or
a public ClapModel / CLIPModel / SiglipModel) and a labelled evaluation set:

- zero-shot accuracy, overall and per class, with the confusion matrix;
- the embedding diagnostics of :mod:`clapkit.audit.embeddings` (silhouette of x and E,
  topological similarity, t-SNE maps), in ``embeddings/``;
- given the model's training data (``--train-data``), the clip-level overlap of
  :mod:`clapkit.audit.overlap` (source ids and decoded content) and the accuracy on the
  evaluation items the training data holds and on the others;
- given caption files of the model's training data, the leakage scan of
  :mod:`clapkit.audit.leakage` against the evaluation classes (in ``leakage/``) and the
  accuracy split into the classes the captions name and those they never name, each
  with its class and item counts: a model that is much better on the named classes
  owes part of its "zero-shot" score to having seen them; and the concept-frequency
  curve of :mod:`clapkit.audit.frequency` (accuracy per class against
  log10(captions naming it + 1), the fitted slope with its interval, r^2, outliers), in
  the ``frequency`` section and ``frequency.png``.

``report.json`` holds every number; ``report.md`` is the page a reviewer reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data.records import LabelledSet
from ..evaluation.zeroshot import plot_confusion, zeroshot_eval
from .embeddings import audit_embeddings


def _group(per_class: dict, classes: list[str]) -> dict:
    """Item-weighted accuracy over ``classes`` (those with items), with the counts."""
    rows = [per_class[c] for c in classes if c in per_class]
    items = sum(r["clips"] for r in rows)
    acc = sum(r["accuracy"] * r["clips"] for r in rows) / items if items else None
    return {"classes": len(rows), "items": items, "accuracy": acc}


def audit_model(model, data: LabelledSet, out: str | Path, captions: list[str] | None = None,
                template: str | None = None, k_max: int = 10, seed: int = 0, batch_size: int = 32, device="cpu",
                source: str = "", num_workers: int = 0, train_data: list[str] | None = None) -> dict:
    from ..evaluation.zeroshot import default_templates

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    template = template or default_templates(model.medium)[0]
    zs = zeroshot_eval(model, data, [template], batch_size, device, num_workers=num_workers,
                       keep_ranks=bool(train_data or captions))
    plot_confusion(zs["confusion"], data.class_names, out / "confusion.png")
    emb = audit_embeddings(model, data, out / "embeddings", template, k_max, False, seed, batch_size, device,
                           num_workers)
    report = {
        "model": source, "medium": model.medium, "template": template,
        "zeroshot": {k: zs[k] for k in ("top1", "top5", "mean_class_accuracy", "chance", "clips", "classes", "per_class")
                     if k in zs},
        "embeddings": {"silhouette": emb["silhouette"], "topological_similarity": emb["topological_similarity"]},
        "skipped": data.skipped.to_dict(),
    }
    if captions:
        from .leakage import audit_leakage

        labels = out / "labels.txt"
        labels.write_text("\n".join(data.class_names) + "\n", encoding="utf-8")
        leak = audit_leakage(list(captions), f"txt:{labels}", out / "leakage")
        pc = leak["per_class"]

        def split(count: str) -> dict:
            named = [c for c in data.class_names if pc[c][count] > 0]
            unnamed = [c for c in data.class_names if pc[c][count] == 0]
            return {"named": _group(zs["per_class"], named) | {"names": named},
                    "not_named": _group(zs["per_class"], unnamed) | {"names": unnamed}}

        extended = split("captions")
        report["leakage"] = {
            "caption_files": [f["file"] for f in leak["files"]],
            # the headline: S2's rule, a caption containing a word of the class set (stem or lemma)
            "rule": "paper (stem, lemma)", **split("paper_captions"),
            # beside it: every rule of the scan (derivation and compound too, which over-report by design)
            "extended": {"rule": "stem, lemma, derivation, compound", **extended},
            "captions_naming_a_class": {c: pc[c]["captions"] for c in extended["named"]["names"]},
            # per named class: the caption words that named it and the rule that matched each
            "why": {c: {w: pc[c]["rules"][w] for w in pc[c]["matched_words"]} for c in extended["named"]["names"]},
        }
        report["frequency"] = _frequency(zs, data, leak, out, source, seed)
    if train_data:
        from .overlap import overlap_split

        report["overlap"] = overlap_split(train_data, data, model.medium, zs["ranks"] == 1)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(_markdown(report))
    return report


def _frequency(zs: dict, data: LabelledSet, leak: dict, out: Path, source: str, seed: int) -> dict:
    """Accuracy against concept frequency: the leakage scan's caption counts per class
    (the same rules, so no second pass over the captions), each class's accuracy with its
    bootstrap interval over its items; the curve by the paper's rule drawn to ``frequency.png``."""
    from .frequency import (
        ConceptCounts,
        accuracy_intervals,
        frequency_section,
        plot_frequency_curve,
    )

    pc = leak["per_class"]
    counts = ConceptCounts(leak["total"]["pairs"], {c: pc[c]["paper_captions"] for c in pc},
                           {c: pc[c]["captions"] for c in pc}, files={f["file"]: f["pairs"] for f in leak["files"]})
    per = zs["per_class"]
    intervals = (accuracy_intervals(zs["ranks"] == 1, np.array([c.label for c in data.clips]), data.class_names,
                                    seed=seed) if "ranks" in zs else None)
    section = frequency_section(counts, {c: v["accuracy"] for c, v in per.items()}, intervals,
                                {c: v["clips"] for c, v in per.items()})
    plot_frequency_curve(section["paper"], out / "frequency.png",
                         f"{Path(source).name or 'model'}: zero-shot accuracy vs caption frequency (paper's rule)")
    return section | {"figure": "frequency.png"}


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"


def _markdown(r: dict) -> str:
    z, e = r["zeroshot"], r["embeddings"]
    lines = [
        f"# Model audit: {r['model'] or 'model'}", "",
        f"Zero-shot on {z['clips']} {'clips' if r['medium'] == 'audio' else 'images'} of {z['classes']} classes with "
        f"`{r['template']}`: top-1 **{_fmt(z['top1'])}** (chance {_fmt(z['chance'])}), mean per class "
        f"{_fmt(z['mean_class_accuracy'])}.", "",
    ]
    if "leakage" in r:
        lk = r["leakage"]
        lines += [
            "## Are the evaluation classes named in the training captions?", "",
            f"Caption files: {', '.join(f'`{f}`' for f in lk['caption_files'])}.", "",
            "| classes | rule | count | items | zero-shot accuracy |", "| --- | --- | ---: | ---: | ---: |",
        ]
        for rule, s in (("paper (stem, lemma)", lk), ("all four rules", lk["extended"])):
            lines += [f"| named in the captions | {rule} | {s['named']['classes']} | {s['named']['items']} | "
                      f"{_fmt(s['named']['accuracy'])} |",
                      f"| never named | {rule} | {s['not_named']['classes']} | {s['not_named']['items']} | "
                      f"{_fmt(s['not_named']['accuracy'])} |"]
        lines += [
            "",
            "The headline is the paper's rule (a caption containing a word of the class set, by stem or lemma); "
            "the derivation and compound rules of the scan flag more, by design. A gap between the named and "
            "never-named rows is the part of the score that depends on having seen the class named in training; "
            "only the never-named rows are zero-shot in the strict sense. The scan (word list, matched captions) "
            "is in `leakage/`.", "",
        ]
        if lk["why"]:
            lines += ["| named class | caption words (rule) |", "| --- | --- |"]
            lines += [f"| {c} | {', '.join(f'{w} ({r})' for w, r in ws.items())} |" for c, ws in lk["why"].items()]
            lines += [""]
    if "frequency" in r:
        lines += _frequency_markdown(r["frequency"])
    if "overlap" in r:
        o = r["overlap"]
        lines += ["## Are evaluation recordings in the training data?", "",
                  f"Training data: {', '.join(f'`{s}`' for s in o['train_data'])} ({o['train_items']} items), matched "
                  f"by {' and '.join(o['rules'])}: {o['eval_items_matched']} of {o['eval_items']} evaluation items "
                  f"({o['eval_fraction_matched']:.1%}).", ""]
        if "top1_overlapping" in o:
            lines += ["| evaluation items | items | zero-shot accuracy |", "| --- | ---: | ---: |",
                      f"| in the training data | {o['top1_overlapping']['n']} | {_fmt(o['top1_overlapping']['value'])} |",
                      f"| not in it | {o['top1_not_overlapping']['n']} | {_fmt(o['top1_not_overlapping']['value'])} |",
                      ""]
    t = e["topological_similarity"]
    lines += [
        "## Embedding diagnostics", "",
        "| measure | value |", "| --- | ---: |",
        f"| silhouette x (backbone) | {_fmt(e['silhouette']['x_a'])} |",
        f"| silhouette E (projected) | {_fmt(e['silhouette']['E_a'])} |",
        f"| S(x, E) | {_fmt(t['x_a_vs_E_a'])} |",
        f"| S(x_t, E_t) | {_fmt(t['x_t_vs_E_t'])} |",
        f"| S(E, E_t) | {_fmt(t['E_a_vs_E_t'])} |", "",
        "![confusion](confusion.png)", "", "![t-SNE of E](embeddings/tsne_E_a.png)", "",
    ]
    return "\n".join(lines)


def _frequency_markdown(f: dict) -> list[str]:
    lines = ["## Does accuracy follow how often the captions name a class?", "",
             f"Each class's zero-shot accuracy against {f['x']} over {f['captions']} training captions, fitted by "
             "least squares (Udandarao et al. 2024 find accuracy log-linear in concept frequency). The slope is the "
             "accuracy gained per tenfold more captions; its interval is t-based (n - 2 degrees of freedom).", "",
             "| rule | classes | slope (95% CI) | intercept | r² (95% CI) | outliers (\\|z\\| > 2) |",
             "| --- | ---: | --- | ---: | --- | --- |"]
    for rule, c in (("paper (stem, lemma)", f["paper"]), ("all four rules", f["all_rules"])):
        if c["slope"] is None:
            lines.append(f"| {rule} | {c['n']} | n/a ({c['undefined']}) | | | |")
            continue
        r2 = f" [{_fmt(c['r2_ci'][0])}, {_fmt(c['r2_ci'][1])}]" if c["r2_ci"] else ""
        ci = f" [{_fmt(c['slope_ci'][0])}, {_fmt(c['slope_ci'][1])}]" if c["slope_ci"] else ""
        lines.append(f"| {rule} | {c['n']} | {_fmt(c['slope'])}{ci} | "
                     f"{_fmt(c['intercept'])} | {_fmt(c['r2'])}{r2} | {', '.join(c['outliers']) or 'none'} |")
    return lines + ["", f"![accuracy against caption frequency]({f['figure']})", ""]

