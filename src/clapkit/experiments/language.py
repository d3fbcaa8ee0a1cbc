"""``clapkit experiment language-encoder``: S0's study of sentence-embedding (SE) training
of the language encoder inside a contrastive cross-modal model.

For one medium (``model.modality``) and one cross-modal loss (CLIP, or CyCLIP with
``train.cyclip.*``), over ``language.seeds``, the variants:

- ``base``         the text tower as it is;
- ``init_unsup``   initialised from unsupervised SimCSE (``train cse`` on ``language.corpus``);
- ``init_sup``     initialised from supervised SimCSE (``train cse`` on ``language.nli``);
- ``joint_unsup``  ``train.se``: + lambda x unsupervised SimCSE (the captions, or the corpus);
- ``joint_sup``    ``train.se``: + lambda x supervised SimCSE on the NLI triplets.

Each trained model is evaluated on zero-shot top-1, retrieval (mean R@10 of both
directions), the STS mean on x_t, the transfer mean on x_t, and the geometry of the
evaluation pairs (text uniformity of E_t, cross-modal alignment, modality gap). Written
to ``out``: a folder per seed and variant (``cse_*`` for the SimCSE runs), per-run
``metrics.json``, ``results.json`` and ``results.md`` (mean +- std over seeds), and
``uniformity_alignment.png``; finished runs are not run again. ``results.md`` ends with
a line per S0 finding saying whether it holds in this run and by how much.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from . import train_once

VARIANTS = ("base", "init_unsup", "init_sup", "joint_unsup", "joint_sup")
METRICS = ("zeroshot", "retrieval", "sts", "transfer", "uniformity", "alignment", "modality_gap")


def _data(cfg: dict, out: Path) -> tuple[list[str], str, str]:
    lang, medium = cfg["language"], cfg["model"]["modality"]
    if lang["synthetic"]:
        folder = out / "data"
        if not (folder / "train.csv").exists():
            if medium == "image":
                from ..data.image.synthetic import write_synthetic_images

                write_synthetic_images(folder, seed=0)
            else:
                from ..data.audio.synthetic import write_synthetic

                write_synthetic(folder, seed=0, sr=cfg["audio"]["sample_rate"], seconds=cfg["audio"]["segment_seconds"])
        return [f"csv:{folder / 'train.csv'}"], f"folder:{folder / 'unseen'}", f"csv:{folder / 'test.csv'}"
    return list(lang["train"]), lang["zeroshot"], lang["retrieval"]


def _cse(cfg: dict, seed: int, kind: str, out: Path) -> Path:
    """The SimCSE run a variant starts from (``train cse`` on the text tower), run once."""
    from ..training.cse import train_cse

    lang = cfg["language"]
    c = copy.deepcopy(cfg)
    c["seed"] = seed
    c["cse"].update(mode=kind, corpus=lang["corpus"], nli=lang["nli"], steps=lang["cse_steps"], sts_dev=None)
    text = cfg["model"]["text"]
    # the SE run pools the token states as the text tower does, and names its head explicitly:
    # under a pretrained pooler it trains through SimCSE's fresh MLP head (training only), which
    # the variant then drops for the tower's own pooler (study_pooling); else no head at all
    pool, head = study_pooling(cfg)
    c["cse"]["model"].update(name=text["name"], max_length=text["max_length"], pool=pool,
                             head="mlp" if head == "pooler" else "none", head_at_eval=None, pooling=None,
                             mlp_only_train=None)
    if kind == "sup":  # supervised SimCSE's own recipe where it differs (SimCSE: batch 512, lr 5e-5, the MLP kept)
        own = copy.deepcopy(lang["cse_sup"] or {})
        c["cse"]["model"].update(own.pop("model", {}))
        c["cse"].update(own)
    c["cse"]["eval_steps"] = c["cse"]["steps"]
    train_once(train_cse, c, out)
    return out / "checkpoint"


def study_pooling(cfg: dict) -> tuple[str, str]:
    """The one (pool, head) every variant embeds text with: ``model.text``'s (``auto``:
    the text model's own). A head ``pooler`` is the backbone's pretrained pooler (BERT's
    tanh(W h_[CLS])), which ``train cse`` keeps frozen and saves, so the init variants
    reload their SimCSE-trained backbone with that same pooler, never with SimCSE's MLP
    head or the raw first token (which would confound the pooling with SE training). An
    ``mlp`` head is refused: a fresh head per variant would be another confound."""
    from ..models.text import text_source
    from ..pooling import LEGACY_POOLING, resolve_text_head

    text = cfg["model"]["text"]
    pool, head, _ = resolve_text_head("model.text", text)
    if head == "mlp":
        raise ConfigError("model.text.head = mlp in the language-encoder study: each variant would start a fresh "
                          "head; choose head none or pooler")
    if pool != "auto":
        return pool, head
    _, pooling, dense = text_source(text["name"])
    if dense is not None:
        raise ConfigError(f"model.text.name = {text['name']}: its own pooling is cls with a Dense head, which a "
                          "train cse run does not carry over; give the study's pool and head explicitly "
                          "(--set model.text.pool=first|mean --set model.text.head=none|pooler)")
    return LEGACY_POOLING["model.text"][pooling]


def variant_config(cfg: dict, variant: str, seed: int, train: list[str], out: Path) -> dict:
    lang = cfg["language"]
    v = copy.deepcopy(cfg)
    v["seed"], v["data"]["train"] = seed, train
    pool, head = study_pooling(cfg)
    v["model"]["text"].update(pool=pool, head=head, pooling=None)
    if variant in ("init_unsup", "init_sup"):
        kind = variant.removeprefix("init_")
        v["model"]["text"]["name"] = str(_cse(cfg, seed, kind, out / f"seed{seed}" / f"cse_{kind}"))
    elif variant == "joint_unsup":
        v["train"]["se"].update(weight=lang["se_weight"], loss=lang["joint_unsup_loss"], corpus=lang["corpus"])
    elif variant == "joint_sup":
        v["train"]["se"].update(weight=lang["se_weight"], loss="nli", nli=lang["nli"])
    return v


def evaluation_sets(cfg: dict, zeroshot: str, retrieval: str) -> dict:
    """The study's evaluation data, read and checked once, before any training: the labelled
    zero-shot set, the caption pairs (in ``language.retrieval_dir`` / ``retrieval_split``
    where given), the STS sets and the transfer tasks."""
    from ..data.files import Skipped
    from ..data.media import load_labelled_media, load_media_pairs
    from ..data.text.sts import load_sts
    from ..evaluation.transfer import load_transfer_tasks

    lang, medium = cfg["language"], cfg["model"]["modality"]
    c = copy.deepcopy(cfg)
    c["data"].update({k: v for k, v in ((f"{medium}_dir", lang["retrieval_dir"]), ("split", lang["retrieval_split"]))
                      if v is not None})
    return {"medium": medium, "zeroshot": load_labelled_media(zeroshot, medium),
            "pairs": load_media_pairs(c, retrieval, Skipped()),
            "sts": [s for spec in lang["sts"] for s in load_sts(spec)],
            "transfer": load_transfer_tasks(lang["transfer"])}


def evaluate(checkpoint: Path, sets: dict) -> dict:
    """The study's metrics of one trained model on :func:`evaluation_sets` (language-encoder
    quality on x_t)."""
    from ..evaluation.language import pair_geometry
    from ..evaluation.retrieval import retrieval_eval
    from ..evaluation.sts import SentenceEncoder, sts_eval
    from ..evaluation.transfer import transfer_eval
    from ..evaluation.zeroshot import zeroshot_eval
    from ..models.public.loader import load_model

    model, medium, pairs = load_model(checkpoint), sets["medium"], sets["pairs"]
    out = {"zeroshot": zeroshot_eval(model, sets["zeroshot"])["top1"]}
    r = retrieval_eval(model, pairs)
    out["retrieval"] = float(np.mean([r[f"text_to_{medium}"]["R@10"], r[f"{medium}_to_text"]["R@10"]]))
    g = pair_geometry(model, pairs)
    out.update(uniformity=g["uniformity_E_t"], alignment=g["alignment"], modality_gap=g["modality_gap"])
    enc = SentenceEncoder.of_model(model)
    if sets["sts"]:
        out["sts"] = float(np.mean(list(sts_eval(enc, sets["sts"])["table"].values())))
    if sets["transfer"]:
        out["transfer"] = transfer_eval(lambda t: enc.encode(t, normalize=False), sets["transfer"])["avg"]
    return out


def findings(runs: dict, medium: str) -> list[str]:
    """A line per S0 finding: whether it holds here. The effect is paired by seed (each seed's
    SE variants' mean minus that seed's base, the same data order and initialisation), and
    reported as its mean +- std over seeds; it "holds" when it points S0's way in every seed,
    "holds on average only" when in some, and "does not hold" when its mean does not."""
    se = [v for v in runs if v != "base"]
    if "base" not in runs or not se:
        return ["the findings compare the SE variants with base: run both"]

    def line(claim, metric, better_if_positive, what):
        seeds = [s for s in runs["base"] if metric in runs["base"][s] and all(metric in runs[v].get(s, {}) for v in se)]
        if not seeds:
            return f"- {claim}: not measured here ({metric} not evaluated)"
        sign = 1 if better_if_positive else -1
        d = np.array([np.mean([runs[v][s][metric] for v in se]) - runs["base"][s][metric] for s in seeds])
        agree = int((sign * d > 0).sum())
        verdict = ("does not hold" if sign * d.mean() <= 0 else "holds" if agree == len(seeds)
                   else f"holds on average only ({agree} of {len(seeds)} seeds)")
        return f"- {claim}: {verdict} ({what} {d.mean():+.4f} +- {d.std():.4f} over {len(seeds)} seeds, SE variants' mean - base)"

    media = "image-text" if medium == "image" else "audio-text"
    return [
        line("SE training improves the language encoder", "sts", True, "STS mean"),
        line("SE training improves the language encoder (transfer)", "transfer", True, "transfer mean"),
        line(f"SE training improves {media} models (zero-shot)", "zeroshot", True, "zero-shot top-1"),
        line(f"SE training improves {media} models (retrieval)", "retrieval", True, "retrieval R@10"),
        line("SE training raises text-space uniformity (lower is more uniform)", "uniformity", False, "uniformity"),
        line("SE training lowers cross-modal alignment (higher value: less aligned)", "alignment", True, "alignment"),
    ]


def run_language_encoder(cfg: dict, out: str | Path) -> dict:
    from ..training.clap import train_clap

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lang, medium = cfg["language"], cfg["model"]["modality"]
    unknown = [v for v in lang["variants"] if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"language.variants: {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    needs = {"init_unsup": "corpus", "init_sup": "nli", "joint_sup": "nli"}
    missing = sorted({needs[v] for v in lang["variants"] if v in needs and not lang[needs[v]]})
    if lang["joint_unsup_loss"] == "corpus" and "joint_unsup" in lang["variants"] and not lang["corpus"]:
        missing = sorted(set(missing) | {"corpus"})
    sup = lang["cse_sup"] or {}
    unknown = sorted(set(sup) - set(cfg["cse"]) | {f"model.{k}" for k in set(sup.get("model") or {}) - set(cfg["cse"]["model"])})
    if unknown:
        raise ConfigError(f"language.cse_sup: {', '.join(unknown)} are not cse.* options")
    if not lang["synthetic"]:
        missing = [k for k in ("train", "zeroshot", "retrieval") if not lang[k]] + missing
    if missing:
        raise ConfigError(f"language: set {', '.join('language.' + k for k in missing)} (the variants "
                          f"{', '.join(lang['variants'])} need them; or language.synthetic: true for the embedded set)")
    train, zeroshot, retrieval = _data(cfg, out)
    sets = evaluation_sets(cfg, zeroshot, retrieval)  # a bad evaluation file fails now, not after training
    runs: dict = {v: {} for v in lang["variants"]}
    for seed in lang["seeds"]:
        for variant in lang["variants"]:
            run = out / f"seed{seed}" / variant
            path = run / "metrics.json"
            if not path.exists():
                train_once(train_clap, variant_config(cfg, variant, seed, train, out), run)
                path.write_text(json.dumps(evaluate(run / "checkpoint", sets), indent=2))
            runs[variant][seed] = json.loads(path.read_text())
    table = {v: {m: {"mean": float(np.mean([r[m] for r in per.values()])), "std": float(np.std([r[m] for r in per.values()]))}
                 for m in METRICS if all(m in r for r in per.values())}
             for v, per in runs.items()}
    result = {"medium": medium, "cross_loss": "cyclip" if any(cfg["train"]["cyclip"].values()) else "clip",
              "seeds": lang["seeds"], "table": table, "runs": runs, "findings": findings(runs, medium)}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    _plot(table, out / "uniformity_alignment.png")
    _markdown(result, out / "results.md")
    return result


def _plot(table: dict, path: Path) -> None:
    from ..plotting import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for v, row in table.items():
        if "alignment" in row and "uniformity" in row:
            ax.errorbar(row["alignment"]["mean"], row["uniformity"]["mean"], xerr=row["alignment"]["std"],
                        yerr=row["uniformity"]["std"], fmt="o", capsize=3, label=v)
    ax.set_xlabel("cross-modal alignment (lower: more aligned)")
    ax.set_ylabel("text uniformity of E_t (lower: more uniform)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _markdown(result: dict, path: Path) -> None:
    cols = [m for m in METRICS if any(m in row for row in result["table"].values())]
    lines = [f"# Language-encoder study: {result['medium']}, {result['cross_loss']}, seeds {result['seeds']}", "",
             "| variant | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for v, row in result["table"].items():
        lines.append(f"| {v} | " + " | ".join(f"{row[m]['mean']:.4f} ± {row[m]['std']:.4f}" if m in row else "n/a"
                                              for m in cols) + " |")
    lines += ["", "Uniformity and alignment: Wang and Isola's, lower is better; modality gap: distance of the "
              "centroids of E_m and E_t.", "", "![uniformity vs alignment](uniformity_alignment.png)", "",
              "## S0's findings in this run", "", *result["findings"], ""]
    path.write_text("\n".join(lines))
