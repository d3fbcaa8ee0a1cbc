"""``clapkit audit embeddings``: how separable are the classes, and where does it come from?

For a model and a labelled set this computes, as in the CLAP-pitfalls paper:

- zero-shot accuracy (the number being audited);
- silhouette scores (cosine, full dimension) of the audio backbone output x_a and the
  projected E_a: class separability before and after the projector;
- topological similarity S between (x_a, E_a), (x_t, E_t) and (E_a, E_t), comparing
  audio through class-mean vectors so that the points match the label texts;
- t-SNE maps of E_a and x_a (coloured by class, labelled at class centres) and of the
  label texts E_t.

Outputs in one folder: ``report.json``, ``report.md`` and the PNGs it shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..data.records import LabelledSet
from ..errors import DataError
from ..evaluation.geometry import class_means, silhouette, topological_similarity, tsne_2d
from ..evaluation.metrics import classification_metrics
from ..evaluation.zeroshot import DEFAULT_TEMPLATE
from ..inference.embed import embed_media, embed_text
from ..models.dual import DualEncoder


def audit_embeddings(
    model: DualEncoder, data: LabelledSet, out: str | Path, template: str = DEFAULT_TEMPLATE,
    k_max: int = 10, include_self: bool = False, seed: int = 0, batch_size: int = 32, device="cpu",
    num_workers: int = 0,
) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = np.array([c.label for c in data.clips])
    names = data.class_names
    present = np.unique(labels)
    if not 2 <= len(present) < len(labels):
        raise DataError(f"{len(labels)} items in {len(present)} classes: the audit needs at least two classes "
                        "and several items per class")
    x_a = embed_media(model, data.clips, batch_size, projected=False, device=device, num_workers=num_workers)
    with torch.no_grad():
        e_a = model.project_media(torch.from_numpy(x_a).to(device)).cpu().numpy()
    texts = [template.format(label=t) for t in data.label_texts()]
    x_t = embed_text(model, texts, projected=False, device=device)
    e_t = embed_text(model, texts, projected=True, device=device)

    zs = classification_metrics(e_a @ e_t.T, labels, names)
    mx_a, me_a = class_means(x_a, labels, len(names))[present], class_means(e_a, labels, len(names))[present]
    topo = {
        "x_a_vs_E_a": topological_similarity(mx_a, me_a, k_max, include_self),
        "x_t_vs_E_t": topological_similarity(x_t[present], e_t[present], k_max, include_self),
        "E_a_vs_E_t": topological_similarity(me_a, e_t[present], k_max, include_self),
    }
    report = {
        "clips": int(len(labels)), "classes": int(len(present)), "template": template,
        "zeroshot_accuracy": zs["accuracy"], "chance": 1.0 / len(names),
        "silhouette": {"x_a": silhouette(x_a, labels), "E_a": silhouette(e_a, labels)},
        "topological_similarity": {k: v["S"] for k, v in topo.items()},
        "topological_detail": topo,
        "dims": {"x_a": int(x_a.shape[1]), "E_a": int(e_a.shape[1]), "x_t": int(x_t.shape[1])},
        "tsne_seed": seed,
        "skipped": data.skipped.to_dict(),
    }
    figures = {
        "tsne_E_a.png": (e_a, labels, "audio embeddings E_a (t-SNE)"),
        "tsne_x_a.png": (x_a, labels, "audio backbone output x_a (t-SNE)"),
        "tsne_E_t.png": (e_t[present], present, "label texts E_t (t-SNE)"),
    }
    coords = {}
    for fname, (x, y, title) in figures.items():
        coords[fname[:-4]] = tsne_2d(x, seed)
        plot_tsne(coords[fname[:-4]], y, names, out / fname, title)
    np.savez(out / "tsne.npz", labels=labels, **coords)
    report["figures"] = list(figures)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(_markdown(report))
    return report


def plot_tsne(xy: np.ndarray, labels: np.ndarray, names: list[str], path: Path | None, title: str, ax=None) -> None:
    """Scatter of a 2-D map coloured by class, class names at the class centres; to
    ``path``, or onto ``ax`` when given (for grids of maps)."""
    from ..plotting import pyplot

    plt = pyplot()

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 7))
    cmap = plt.get_cmap("tab20", max(20, len(names)))
    ax.scatter(xy[:, 0], xy[:, 1], c=[cmap(int(y) % cmap.N) for y in labels], s=12, alpha=0.8)
    for c in np.unique(labels):
        cx, cy = xy[labels == c].mean(axis=0)
        ax.annotate(names[c].replace("_", " "), (cx, cy), fontsize=6, ha="center")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    if fig is not None:
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def _markdown(r: dict) -> str:
    t = r["topological_similarity"]
    lines = [
        "# Embedding audit", "",
        f"{r['clips']} clips, {r['classes']} classes; zero-shot accuracy {r['zeroshot_accuracy']:.3f} "
        f"(chance {r['chance']:.3f}) with `{r['template']}`.", "",
        "| measure | value |", "| --- | ---: |",
        f"| silhouette x_a (backbone) | {r['silhouette']['x_a']:.3f} |",
        f"| silhouette E_a (projected) | {r['silhouette']['E_a']:.3f} |",
        f"| S(x_a, E_a) | {t['x_a_vs_E_a']:.3f} |",
        f"| S(x_t, E_t) | {t['x_t_vs_E_t']:.3f} |",
        f"| S(E_a, E_t) | {t['E_a_vs_E_t']:.3f} |", "",
        "Silhouette: cosine distance, full dimension. S: best k of the neighbourhood agreement "
        "of class-mean audio vectors and label texts (see report.json for every S_k and its chance level).", "",
    ]
    lines += [f"![{f}]({f})" for f in r["figures"]]
    return "\n".join(lines) + "\n"
