"""`clapkit audit ...` and `clapkit curate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import (
    LABELLED_HELP,
    NAMES_HELP,
    Cache,
    Checkpoint,
    Device,
    SkipBad,
    Workers,
    _device,
    _labelled,
    _load_model,
    app,
    audit_app,
    is_main,
)


@audit_app.command("leakage")
def audit_leakage_cmd(
    captions: Annotated[list[str], typer.Option(help="Training caption files (Clotho, AudioCaps, csv, jsonl; or KIND:PATH)")],
    out: Annotated[Path, typer.Option(help="Report folder")],
    labels: Annotated[str | None, typer.Option(help=f"Evaluation labels: {NAMES_HELP}")] = None,
    eval_: Annotated[str | None, typer.Option("--eval", help=f"An evaluation set ({NAMES_HELP}, or any labelled set): "
                                                             "each class's caption count by the paper's rule and by "
                                                             "all rules, streamed (frequency.json)")] = None,
    words: Annotated[Path | None, typer.Option(help="Edited word list (words.txt of an earlier run)")] = None,
    pretrain_labels: Annotated[Path | None, typer.Option(help="Pre-training label vocabulary (CSV with display_name, or text)")] = None,
    write_clean: Annotated[Path | None, typer.Option(help="Write the training pairs that name no class to this CSV")] = None,
    clean_by: Annotated[str, typer.Option(help="pair: drop dirty pairs; audio: drop every pair of a clip with a dirty caption")] = "pair",
    audio_dir: Annotated[Path | None, typer.Option(help="Audio folder, for the paths of the clean manifest")] = None,
    more_captions: Annotated[list[str] | None, typer.Argument(help="More caption files: --captions A B C works")] = None,
) -> None:
    """Find training captions that name evaluation classes (the paper's dirty/clean split); with
    --eval, count how many captions name each class (concept frequency), streamed."""
    from ..audit.leakage import audit_leakage
    from ..errors import ConfigError

    if not labels and not eval_:
        raise ConfigError("audit leakage: give --labels (the leakage scan), --eval (concept frequency) or both")
    if eval_:
        from ..audit.frequency import audit_frequency

        f = audit_frequency(list(captions) + list(more_captions or []), eval_, out, words)
        top = sorted(f["per_class"].items(), key=lambda kv: -kv[1]["paper"])
        typer.echo(f"concept frequency in {f['captions']} captions, paper's rule / all rules: "
                   + ", ".join(f"{k} {v['paper']}/{v['all_rules']}" for k, v in top[:5])
                   + f"; {f['classes'] - f['classes_named']['paper']} of {f['classes']} classes never named "
                   f"(paper's rule), {f['classes'] - f['classes_named']['all_rules']} (all rules)")
        if not labels:
            typer.echo(f"report in {out} (frequency.json, frequency.md)")
            return
    r = audit_leakage(list(captions) + list(more_captions or []), labels, out, words, pretrain_labels, write_clean, clean_by, audio_dir)
    for f in r["files"]:
        typer.echo(f"{f['file']}: {f['dirty_pairs']} of {f['pairs']} captions ({f['dirty_fraction']:.1%}) name a class; "
                   f"{f['dirty_audio']} of {f['audio']} clips")
    top = sorted(r["per_class"].items(), key=lambda kv: -kv[1]["captions"])[:5]
    typer.echo("most named: " + ", ".join(f"{k} ({v['captions']})" for k, v in top))
    if "pretrain_overlap" in r:
        p = r["pretrain_overlap"]
        typer.echo(f"pre-training vocabulary: {p['classes_overlapping']} of {r['classes']} classes overlap")
    typer.echo(f"report in {out} (leakage.json, summary.md, words.txt)")


@audit_app.command("embeddings")
def audit_embeddings_cmd(
    model: Checkpoint,
    data: Annotated[str, typer.Option(help=f"A labelled set ({LABELLED_HELP})")],
    out: Annotated[Path, typer.Option(help="Report folder")],
    folds: Annotated[str | None, typer.Option(help="Comma-separated folds")] = None,
    template: Annotated[str | None, typer.Option(help="Prompt template for the label texts (default: the medium's)")] = None,
    k_max: Annotated[int, typer.Option(help="Largest k of the topological similarity")] = 10,
    include_self: Annotated[bool, typer.Option(help="Count a point among its own neighbours (the paper's literal text)")] = False,
    seed: Annotated[int, typer.Option(help="t-SNE seed")] = 0,
    batch_size: int = 32,
    device: Device = "auto",
    workers: Workers = 0,
    skip_bad: SkipBad = False,
) -> None:
    """Silhouette scores, topological similarities and t-SNE maps of a model's embeddings."""
    from ..audit.embeddings import audit_embeddings
    from ..evaluation.zeroshot import default_templates

    dev = _device(device)
    net = _load_model(model, dev)
    labelled = _labelled(data, folds, None, skip_bad, net.medium)
    template = template or default_templates(net.medium)[0]
    r = audit_embeddings(net, labelled, out, template, k_max, include_self, seed, batch_size, dev, workers)
    t = r["topological_similarity"]
    typer.echo(
        f"{r['clips']} {'clips' if net.medium == 'audio' else 'images'}, {r['classes']} classes: zero-shot "
        f"{r['zeroshot_accuracy']:.3f}; silhouette x_a {r['silhouette']['x_a']:.3f}, E_a {r['silhouette']['E_a']:.3f}; "
        f"S(x_a,E_a) {t['x_a_vs_E_a']:.3f}, S(x_t,E_t) {t['x_t_vs_E_t']:.3f}, S(E_a,E_t) {t['E_a_vs_E_t']:.3f}; "
        f"report in {out / 'report.md'}"
    )



@app.command()
def curate(
    teacher: Annotated[Path, typer.Option(help="Teacher: a clapkit checkpoint or any public model --model takes")],
    audio: Annotated[Path, typer.Option(help="Unpaired audio (images, for an image teacher): a folder or a CSV with an 'audio' ('image') column")],
    captions: Annotated[str, typer.Option(help="Caption pool: any manifest (Clotho, AudioCaps, csv, jsonl)")],
    out: Annotated[Path, typer.Option(help="Curated manifest CSV (stats and histogram beside it)")],
    strategy: Annotated[str, typer.Option(help="du (domain-unspecific) or ds (domain-specific)")] = "du",
    sigma: Annotated[float, typer.Option(help="Minimum audio-caption similarity")] = 0.7,
    top_k: Annotated[int, typer.Option(help="Captions kept per audio")] = 1,
    labels: Annotated[str | None, typer.Option(help=f"DS: in-domain labels ({NAMES_HELP})")] = None,
    label_threshold: Annotated[float, typer.Option(help="DS: minimum caption-label similarity")] = 0.65,
    label_template: Annotated[str, typer.Option(help="DS: how a label is written before embedding")] = "{label}",
    index: Annotated[str, typer.Option(help="exact or hnsw (approximate, for millions)")] = "exact",
    cache: Annotated[Path | None, typer.Option(help="Embedding cache folder (default: beside --out)")] = None,
    batch_size: int = 32,
    device: Device = "auto",
    workers: Workers = 0,
    skip_bad: SkipBad = False,
) -> None:
    """Pair unpaired audio (or images) with captions through a teacher CLAP (or CLIP): DU / DS strategies."""
    from ..curation import curate as run

    s = run(teacher, audio, captions, out, strategy, sigma, top_k, labels, label_threshold, label_template,
            index, cache, batch_size, _device(device), skip_bad, num_workers=workers)
    extra = f", {s['captions_in_domain']} captions in domain" if strategy == "ds" else ""
    typer.echo(f"{s['pairs']} pairs for {s['audio_matched']} of {s['audio_pool']} clips from {s['caption_pool']} "
               f"captions{extra}; cache reused {s['cache']['audio_reused']} audio, {s['cache']['text_reused']} texts; "
               f"wrote {out}")


@audit_app.command("model")
def audit_model_cmd(
    model: Checkpoint,
    data: Annotated[str, typer.Option(help=f"Labelled evaluation set ({LABELLED_HELP})")],
    out: Annotated[Path, typer.Option(help="Report folder (report.md, report.json, figures)")],
    captions: Annotated[list[str] | None, typer.Option(help="Caption files of the model's training data (repeat)")] = None,
    train_data: Annotated[list[str] | None, typer.Option(help="The model's training data (repeat; any spec): the "
                                                              "clip-level overlap with the evaluation set")] = None,
    folds: Annotated[str | None, typer.Option(help="Comma-separated folds")] = None,
    template: Annotated[str | None, typer.Option(help="Prompt template (default: the medium's)")] = None,
    k_max: Annotated[int, typer.Option(help="Largest k of the topological similarity")] = 10,
    seed: Annotated[int, typer.Option(help="t-SNE seed")] = 0,
    batch_size: int = 32,
    device: Device = "auto",
    workers: Workers = 0,
    skip_bad: SkipBad = False,
) -> None:
    """Zero-shot per class, embedding diagnostics and, with --captions, accuracy on classes the
    training captions name vs never name: any clapkit, CLAP, CLIP or SigLIP model."""
    from ..audit.model import audit_model

    dev = _device(device)
    net = _load_model(model, dev)
    labelled = _labelled(data, folds, None, skip_bad, net.medium)
    r = audit_model(net, labelled, out, list(captions or []), template, k_max, seed, batch_size, dev, str(model), workers,
                    list(train_data or []))
    z = r["zeroshot"]
    typer.echo(f"zero-shot {z['top1']:.3f} on {z['clips']} items of {z['classes']} classes (chance {z['chance']:.3f})")
    if "overlap" in r:
        o = r["overlap"]
        typer.echo(f"in the training data: {o['eval_items_matched']} of {o['eval_items']} evaluation items "
                   f"(accuracy {_acc(o['top1_overlapping'])}; the others {_acc(o['top1_not_overlapping'])})")
    if "leakage" in r:
        lk = r["leakage"]
        acc = {k: "n/a" if lk[k]["accuracy"] is None else f"{lk[k]['accuracy']:.3f}" for k in ("named", "not_named")}
        typer.echo(f"classes named in the captions: {lk['named']['classes']} ({lk['named']['items']} items), accuracy "
                   f"{acc['named']}; never named: {lk['not_named']['classes']} ({lk['not_named']['items']} items), "
                   f"accuracy {acc['not_named']}")
    if "frequency" in r:
        from ..audit.frequency import interval_text

        c = r["frequency"]["paper"]
        r2 = "n/a" if c["r2"] is None else f"{c['r2']:.3f}"
        typer.echo("accuracy vs log10(captions + 1), paper's rule: " + (
            f"slope {c['slope']:.3f}{interval_text(c['slope_ci'])} per tenfold, r^2 {r2}, "
            f"{c['n']} classes, outliers: {', '.join(c['outliers']) or 'none'}" if c["slope"] is not None
            else f"undefined ({c['undefined']})") + f" ({out / 'frequency.png'})")
    typer.echo(f"report in {out / 'report.md'}")


@audit_app.command("overlap")
def audit_overlap_cmd(
    train: Annotated[list[str], typer.Option(help="Training data (repeat): a labelled set or caption pairs, any spec")],
    eval_: Annotated[str, typer.Option("--eval", help=f"The evaluation set ({LABELLED_HELP}; or caption pairs)")],
    out: Annotated[Path, typer.Option(help="Report folder: overlap.json, summary.md")],
    model: Annotated[Path | None, typer.Option(help="A model for the embedding rule (anything --model takes)")] = None,
    rules: Annotated[str | None, typer.Option(help="Comma-separated rules: id, content, perceptual (images), embedding. "
                                                   "Default: id,content (+perceptual for images, +embedding with "
                                                   "--model)")] = None,
    threshold: Annotated[float, typer.Option(help="embedding rule: cosine at or above which two items match")] = 0.95,
    features: Annotated[str, typer.Option(help="embedding rule: E (projected) or x (backbone output)")] = "E",
    max_hamming: Annotated[int, typer.Option(help="perceptual rule: most differing bits of 64")] = 4,
    train_folds: Annotated[str | None, typer.Option(help="Comma-separated folds of a labelled training set")] = None,
    eval_folds: Annotated[str | None, typer.Option(help="Comma-separated folds of the evaluation set")] = None,
    medium: Annotated[str | None, typer.Option(help="audio or image (default: the model's, else audio)")] = None,
    train_dir: Annotated[Path | None, typer.Option(help="Media folder of the training caption sets (clotho:, ...)")] = None,
    eval_dir: Annotated[Path | None, typer.Option(help="Media folder of the evaluation set")] = None,
    write_clean: Annotated[Path | None, typer.Option(help="Write the training pairs whose items match nothing to this "
                                                          "CSV (medium,caption)")] = None,
    cache: Cache = None,
    batch_size: int = 32,
    device: Device = "auto",
    workers: Workers = 0,
    skip_bad: SkipBad = False,
) -> None:
    """The same recording (or picture) in training and evaluation data: by source id, by
    decoded content, by perceptual hash (images) and by embedding similarity, per
    evaluation class; --write-clean drops the overlapping training items."""
    from ..audit import overlap as ov
    from ..errors import ClapkitError
    from .common import _fold_list

    dev = _device(device)
    net = _load_model(model, dev) if model else None
    medium = medium or (net.medium if net else "audio")
    if medium not in ("audio", "image") or (net and net.medium != medium):
        raise ClapkitError(f"--medium {medium}: give audio or image (the model's is {net.medium if net else '-'})")
    chosen = [r.strip() for r in rules.split(",") if r.strip()] if rules else (
        ["id", "content"] + (["perceptual"] if medium == "image" else []) + (["embedding"] if net else []))
    if features not in ("E", "x"):
        raise ClapkitError(f"--features {features!r}: give E or x")
    tr = ov.load_side(train, medium, _fold_list(train_folds), train_dir, skip_bad)
    ev = ov.load_side([eval_], medium, _fold_list(eval_folds), eval_dir, skip_bad)
    feats = None
    if "embedding" in chosen and net is not None:
        from ..inference.features import embed_items

        feats = tuple(embed_items(net, side.items, [features], batch_size, dev, workers, cache, model,
                                  progress=True)[0][features] for side in (tr, ev))
    matched = ov.find_overlap(tr, ev, medium, chosen, feats, threshold, max_hamming)
    settings = {"model": str(model) if model else None, "threshold": threshold if feats is not None else None,
                "features": features if feats is not None else None, "max_hamming": max_hamming,
                "train_folds": train_folds, "eval_folds": eval_folds}
    report = ov.overlap_report(tr, ev, medium, chosen, matched, settings)
    if is_main():
        if write_clean:
            report["clean"] = ov.write_clean(tr, matched["found"], write_clean, medium)
        ov.write_overlap(report, out)
    typer.echo(f"overlap: {report['eval_items_matched']} of {report['eval_items']} evaluation items match "
               f"{report['train_items_matched']} of {report['train_items']} training items; "
               + ", ".join(f"{r} {c['pairs']}" for r, c in report["per_rule"].items()))
    if "clean" in report:
        c = report["clean"]
        typer.echo(f"wrote {c['file']}: {c['pairs_kept']} pairs kept, {c['pairs_dropped']} dropped")
    typer.echo(f"report in {out} (overlap.json, summary.md)")


def _acc(group: dict) -> str:
    return "n/a" if group["value"] is None else f"{group['value']:.3f}, {group['n']} items"
