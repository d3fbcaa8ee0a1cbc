"""The table of ``clapkit bench``, rebuilt from every cell in ``OUT/cells``.

- ``results.csv`` / ``results.jsonl``: one row per model x task x metric
  (``model,task,metric,value,ci_low,ci_high,n``, ``skipped``: the items ``--skip-bad``
  left out, and a zero-shot or STS set's coverage: ``listed``, ``present``, ``missing``, ``unreadable``,
  ``malformed``) with its provenance (clapkit, torch and
  transformers versions, model and data fingerprints, prompts, class names, seed);
- ``pairs.csv``: for each task and each pair of models scored on the same items, the
  paired difference of the task's main metrics with a 95% paired-bootstrap interval and a
  test: McNemar's exact test for top-1 accuracy (a probe's too, with one seed), the paired
  bootstrap's two-sided p-value for mAP, R@k and a few-shot probe's mean over seeds;
- ``results.md``: both as tables; ``results.png``: each task's main metric by model;
  ``figures/MODEL__TASK.frequency.png``: a zero-shot cell's accuracy against caption
  frequency, for a model that names its training ``captions:``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

COLUMNS = ["model", "task", "metric", "value", "ci_low", "ci_high", "n", "skipped", "listed", "present", "missing",
           "unreadable", "malformed", "clapkit", "torch", "transformers",
           "model_fingerprint", "model_kind", "model_family", "model_training_data", "data_fingerprint", "prompts",
           "class_names", "seed"]
PAIR_COLUMNS = ["task", "model_a", "model_b", "metric", "difference", "ci_low", "ci_high", "p_value", "test", "n"]


def _cells(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def _main_metric(cell: dict) -> str | None:
    if cell.get("main_metric"):
        return cell["main_metric"]
    names = [r["metric"] for r in cell["metrics"]]
    for key in ("top1", "mAP", f"text_to_{cell['medium']}_R@1"):
        if key in names:
            return key
    return None


def table_rows(bench: dict, cells: list[dict]) -> list[dict]:
    order = {(m["name"], t["name"]): i for i, (m, t) in
             enumerate((m, t) for m in bench["models"] for t in bench["tasks"])}
    rows = []
    for cell in sorted(cells, key=lambda c: order.get((c["model"], c["task"]), len(order))):
        names = cell.get("class_names")
        for r in cell["metrics"]:
            r = {k: v for k, v in r.items() if k != "curve"}  # frequency_slope's curve: drawn, not tabled
            rows.append({**r, "model": cell["model"], "task": cell["task"],
                         **{k: cell.get(k) for k in ("skipped", "clapkit", "torch", "transformers", "model_fingerprint",
                                                     "model_kind", "model_family", "data_fingerprint", "seed")},
                         **{k: (cell.get("coverage") or {}).get(k) for k in ("listed", "present", "missing",
                                                                             "unreadable", "malformed")},
                         "model_training_data": json.dumps(cell.get("model_training_data")),
                         "prompts": json.dumps({"source": cell.get("prompts"), "templates": cell.get("templates")})
                         if cell["type"] == "zeroshot" else None,
                         "class_names": json.dumps(names) if names else None})
    return rows


def pair_rows(bench: dict, folder: Path, cells: list[dict]) -> list[dict]:
    from ..evaluation.metrics import weighted_average_precision
    from ..evaluation.uncertainty import mcnemar, paired_bootstrap
    from .bench_cells import cell_name

    cells = {(c["model"], c["task"]): c for c in cells if c["metrics"]}
    boot, seed = int(bench["bootstrap"]) or 1000, int(bench["seed"])
    loaded: dict[str, dict] = {}

    def arrays(model: str, task: str) -> dict:  # each cell's arrays read once, whatever the pairs it is in
        name = cell_name(model, task)
        if name not in loaded:
            loaded[name] = dict(np.load(folder / f"{name}.npz"))
        return loaded[name]

    def paired_means(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
        """A's mean minus B's of per-item 0/1 values, its interval and bootstrap p."""
        d = a.astype(float) - b.astype(float)
        lo, hi, p = paired_bootstrap(lambda w: float((w * d).sum() / w.sum()), len(d), boot, seed)
        return float(d.mean()), lo, hi, p

    out = []
    models = [m["name"] for m in bench["models"]]
    for task in bench["tasks"]:
        for i, a in enumerate(models):
            for b in models[i + 1:]:
                ca, cb = cells.get((a, task["name"])), cells.get((b, task["name"]))
                if ca is None or cb is None or ca.get("data_fingerprint") != cb.get("data_fingerprint"):
                    continue  # not both done, or not the same items
                xa, xb = arrays(a, task["name"]), arrays(b, task["name"])
                base = {"task": task["name"], "model_a": a, "model_b": b}
                if "correct1" in xa:
                    ya, yb = xa["correct1"], xb["correct1"]
                    difference, lo, hi, p = paired_means(ya, yb)
                    exact = ya.dtype == bool and yb.dtype == bool  # 0/1 per item: McNemar's exact test
                    # per item correctness: top-1 pooled over the items (a fold protocol's mean of folds is not
                    # what this pairs), or a probe's main metric
                    metric = "top1" if _main_metric(ca) in (None, "top1_fold_mean") else _main_metric(ca)
                    out.append({**base, "metric": metric, "difference": difference, "ci_low": lo,
                                "ci_high": hi, "p_value": mcnemar(ya, yb)["p_value"] if exact else p,
                                "test": "mcnemar_exact" if exact else "paired_bootstrap", "n": len(ya)})
                elif "scores" in xa:
                    sa, sb, y = xa["scores"].astype(np.float64), xb["scores"].astype(np.float64), xa["targets"]

                    def diff(w, sa=sa, sb=sb, y=y):
                        return float(np.nanmean(weighted_average_precision(sa, y, w))
                                     - np.nanmean(weighted_average_precision(sb, y, w)))

                    lo, hi, p = paired_bootstrap(diff, len(y), boot, seed)
                    out.append({**base, "metric": "mAP", "difference": diff(np.ones(len(y))), "ci_low": lo,
                                "ci_high": hi, "p_value": p, "test": "paired_bootstrap", "n": len(y)})
                elif "t2m_ranks" in xa:
                    difference, lo, hi, p = paired_means(xa["t2m_ranks"] == 1, xb["t2m_ranks"] == 1)
                    out.append({**base, "metric": f"text_to_{ca['medium']}_R@1", "difference": difference,
                                "ci_low": lo, "ci_high": hi, "p_value": p, "test": "paired_bootstrap",
                                "n": len(xa["t2m_ranks"])})
    return out


def _fmt(v) -> str:
    return "" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def write_report(bench: dict, out: Path) -> list[dict]:
    cells = _cells(out / "cells")
    rows, pairs = table_rows(bench, cells), pair_rows(bench, out / "cells", cells)
    for name, columns, data in (("results.csv", COLUMNS, rows), ("pairs.csv", PAIR_COLUMNS, pairs)):
        tmp = out / f".{name}.tmp"
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, columns)
            writer.writeheader()
            writer.writerows({k: r.get(k) for k in columns} for r in data)
        tmp.replace(out / name)
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    md = ["| model | task | metric | value | 95% CI | n |", "| --- | --- | --- | --- | --- | --- |"]
    md += [f"| {r['model']} | {r['task']} | {r['metric']} | {_fmt(r['value'])} | "
           + (f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]" if r["ci_low"] is not None else "") + f" | {_fmt(r['n'])} |"
           for r in rows]
    if pairs:
        md += ["", "| task | A | B | metric | A - B | 95% CI | p | test |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        md += [f"| {p['task']} | {p['model_a']} | {p['model_b']} | {p['metric']} | {_fmt(p['difference'])} | "
               f"[{_fmt(p['ci_low'])}, {_fmt(p['ci_high'])}] | {_fmt(p['p_value'])} | {p['test']} |" for p in pairs]
    (out / "results.md").write_text("\n".join(md) + "\n")
    _figure(rows, bench, cells, out / "results.png")
    _frequency_figures(cells, out / "figures")
    return rows


def _frequency_figures(cells: list[dict], folder: Path) -> None:
    """``MODEL__TASK.frequency.png``: accuracy against caption frequency of each cell
    whose model names its training captions (the curve its ``frequency_slope`` row carries)."""
    from ..audit.frequency import plot_frequency_curve
    from .bench_cells import cell_name

    for cell in cells:
        for r in cell["metrics"]:
            if r.get("curve"):
                name = cell_name(cell["model"], cell["task"])
                plot_frequency_curve(r["curve"]["paper"], folder / f"{name}.frequency.png",
                                     f"{cell['model']} on {cell['task']}: zero-shot {r['curve']['metric']} vs caption "
                                     "frequency (paper's rule)")


def _figure(rows: list[dict], bench: dict, cells: list[dict], path: Path) -> None:
    from ..plotting import pyplot

    main = {(c["model"], c["task"]): _main_metric(c) for c in cells}
    tasks = [t["name"] for t in bench["tasks"]]
    models = [m["name"] for m in bench["models"]]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(tasks) * max(1, len(models)) / 2 + 2), 3.5))
    width = 0.8 / max(1, len(models))
    for j, model in enumerate(models):
        vals, err = [], []
        for task in tasks:
            r = next((r for r in rows if r["model"] == model and r["task"] == task
                      and r["metric"] == main.get((model, task))), None)
            v = r["value"] if r and r["value"] is not None else np.nan
            vals.append(v)
            err.append([v - r["ci_low"], r["ci_high"] - v] if r and r["ci_low"] is not None else [0, 0])
        ax.bar(np.arange(len(tasks)) + j * width, vals, width, yerr=np.array(err).T, label=model, capsize=2)
    ax.set_xticks(np.arange(len(tasks)) + width * (len(models) - 1) / 2,
                  [f"{t}\n({next((main[(m, t)] for m in models if main.get((m, t))), '')})" for t in tasks], fontsize=7)
    ax.set_ylabel("score (95% CI)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
