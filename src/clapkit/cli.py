"""The ``clapkit`` command line. Every metric command writes JSON and prints a summary."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from .errors import ClapkitError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
train_app = typer.Typer(no_args_is_help=True, help="Train models.")
eval_app = typer.Typer(no_args_is_help=True, help="Evaluate models; results as JSON.")
app.add_typer(train_app, name="train")
audit_app = typer.Typer(no_args_is_help=True, help="Audit zero-shot claims.")
experiment_app = typer.Typer(no_args_is_help=True, help="End-to-end experiments from one config.")
app.add_typer(experiment_app, name="experiment")
app.add_typer(eval_app, name="eval")
app.add_typer(audit_app, name="audit")

SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config key: --set train.batch_size=32")]
SkipBad = Annotated[bool, typer.Option("--skip-bad", help="Skip bad rows/files and count them in the output instead of failing")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")]
Checkpoint = Annotated[Path, typer.Option("--model", help="Checkpoint folder")]
MetricsJson = Annotated[Path | None, typer.Option("--out", help="JSON file for the metrics")]
ConfigOpt = Annotated[str | None, typer.Option("--config", help="Preset name (see `clapkit config`) or YAML file")]


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _device(name: str):
    from .training.common import pick_device

    return pick_device(name)


def _write_json(obj: dict, path: Path | None) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))
    typer.echo(f"wrote {path}")


def _config(config: str | None, overrides: list[str] | None, skip_bad: bool = False) -> dict:
    from .config import load_config

    return load_config(config, list(overrides or []) + (["data.skip_bad=true"] if skip_bad else []))


def _labelled(data: str, folds: str | None, classes: str | None, skip_bad: bool, medium: str = "audio"):
    """A labelled set of ``medium`` with its fold/class selection and its files checked."""
    from .data.media import check_media, load_labelled_media

    try:
        fold_list = [int(f) for f in folds.split(",")] if folds else None
    except ValueError as exc:
        raise ClapkitError(f"--folds {folds!r}: expected comma-separated integers, e.g. 1,2,3") from exc
    class_list = [c.strip() for c in classes.split(",")] if classes else None
    labelled = load_labelled_media(data, medium, fold_list, class_list, skip_bad)
    labelled.clips = check_media(medium, labelled.clips, skip_bad, labelled.skipped)
    return labelled


def _has_label_column(spec: str) -> bool:
    """Whether a csv: spec has a ``label`` column (a labelled image set, not captions)."""
    import csv

    from .data.files import parse_spec

    _, path = parse_spec(spec, ("csv",))
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return "label" in (next(csv.reader(fh), None) or [])
    except OSError:
        return False


def _load_model(path: Path, device):
    from .models.dual import DualEncoder

    return DualEncoder.load(path).to(device)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder")] = Path("demo-out"),
    modality: Annotated[str, typer.Option(help="audio (a CLAP) or image (a CLIP)")] = "audio",
    set_: SetOpt = None,
) -> None:
    """The whole pipeline on the embedded synthetic set, offline (see clapkit.demo)."""
    from .demo import run_demo

    m = run_demo(out, set_, modality)
    zs, r = m["zeroshot_unseen"], m["retrieval_heldout"]
    md = modality
    typer.echo(
        f"zero-shot on {len(zs['classes'])} never-seen classes: accuracy {zs['accuracy']:.3f} "
        f"(chance {zs['chance']:.3f}, x{zs['accuracy_over_chance']:.1f})\n"
        f"retrieval on {r['audio' if md == 'audio' else 'images']} held-out {'clips' if md == 'audio' else 'images'}: "
        f"text->{md} R@1 {r[f'text_to_{md}']['R@1']:.3f}, {md}->text R@1 {r[f'{md}_to_text']['R@1']:.3f}\n"
        f"{m['seconds']['total']:.0f} s; metrics in {out / 'metrics.json'}, model in {out / 'checkpoint'}"
    )


@train_app.command("clap")
def train_clap_cmd(
    out: Annotated[Path, typer.Option(help="Run folder (checkpoints, config, metrics)")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last epoch")] = False,
    skip_bad: SkipBad = False,
) -> None:
    """Train a CLAP (audio + text backbones, MLP projectors, CLIP loss). Works under torchrun."""
    from .training.clap import train_clap

    s = train_clap(_config(config, set_, skip_bad), out, resume=resume)
    from .training.common import is_main

    if is_main():
        typer.echo(
            f"{s['epochs_run']} epochs on {s['train_pairs']} pairs ({s['val_pairs']} validation); "
            f"best validation loss {s['best_val_loss']:.4f} at epoch {s['best_epoch']}; "
            f"skipped {s['skipped']['count']}; model in {out / 'checkpoint'}"
        )


@train_app.command("clip")
def train_clip_cmd(
    out: Annotated[Path, typer.Option(help="Run folder (checkpoints, config, metrics)")],
    config: Annotated[str, typer.Option("--config", help="Preset (clip-cpu, clip-paper, cyclip-paper) or YAML file")] = "clip-cpu",
    set_: SetOpt = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last epoch")] = False,
    skip_bad: SkipBad = False,
) -> None:
    """Train a CLIP (image + text backbones, MLP projectors, CLIP or CyCLIP loss): `train clap`
    with image defaults. Works under torchrun."""
    from .training.clap import train_clap
    from .training.common import is_main

    cfg = _config(config, list(set_ or []), skip_bad)
    if cfg["model"]["modality"] != "image":
        raise ClapkitError(f"--config {config}: model.modality is {cfg['model']['modality']!r}; `train clip` trains "
                           "image models (use `train clap` for audio, or --set model.modality=image)")
    s = train_clap(cfg, out, resume=resume)
    if is_main():
        typer.echo(
            f"{s['epochs_run']} epochs on {s['train_pairs']} pairs of {s['train_images']} images "
            f"({s['val_pairs']} validation); best validation loss {s['best_val_loss']:.4f} at epoch "
            f"{s['best_epoch']}; skipped {s['skipped']['count']}; model in {out / 'checkpoint'}"
        )


@train_app.command("cse")
def train_cse_cmd(
    out: Annotated[Path, typer.Option(help="Run folder (checkpoints, config, metrics)")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last evaluation")] = False,
    skip_bad: SkipBad = False,
) -> None:
    """Train the text tower as a sentence encoder: SimCSE (unsup, sup), VisualCSE, AudioCSE."""
    from .training.cse import train_cse

    s = train_cse(_config(config, set_, skip_bad), out, resume=resume)
    dev = f"best STS-B dev Spearman {s['best_stsb_dev']:.2f} at step {s['best_step']}" if s["best_stsb_dev"] is not None \
        else "no dev set (checkpoint = last model)"
    typer.echo(f"{s['mode']}: {s['steps']} steps on {s['text_examples']} text examples"
               + (f" and {s['other_examples']} {s['mode']} examples" if s["other_examples"] else "")
               + f"; {dev}; {s['truncated']} sentences truncated to {s['max_length']} tokens; "
               f"skipped {s['skipped']['count']}; model in {out / 'checkpoint'}")


@train_app.command("audio-backbone")
def train_backbone_cmd(
    out: Annotated[Path, typer.Option(help="Output folder (audio_tower.safetensors, metrics)")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    skip_bad: SkipBad = False,
) -> None:
    """Supervised pre-training of the audio tower on a labelled set (include/exclude classes)."""
    from .training.backbone import train_audio_backbone

    s = train_audio_backbone(_config(config, set_, skip_bad), out)
    typer.echo(f"{len(s['classes'])} classes, {s['train_clips']} clips: best validation accuracy "
               f"{s['best_val_accuracy']:.3f} (chance {s['chance']:.3f}); weights in {s['weights']}")


@eval_app.command("zeroshot")
def eval_zeroshot(
    model: Checkpoint,
    data: Annotated[str, typer.Option(help="audio: esc50:ROOT, folder:DIR, fsdd:DIR; images: folder:DIR, csv:FILE, mnist:DIR, cifar:DIR")],
    out: MetricsJson = None,
    folds: Annotated[str | None, typer.Option(help="Comma-separated folds, e.g. 1,2,3")] = None,
    classes: Annotated[str | None, typer.Option(help="Comma-separated class names to evaluate on")] = None,
    template: Annotated[list[str] | None, typer.Option(help="Prompt template with {label}; repeat to ensemble")] = None,
    ensemble: Annotated[bool, typer.Option(help="Average the built-in set of templates")] = False,
    confusion: Annotated[Path | None, typer.Option(help="Confusion-matrix PNG (default: beside --out)")] = None,
    batch_size: int = 32,
    device: Device = "auto",
    skip_bad: SkipBad = False,
) -> None:
    """Zero-shot classification: top-1/top-5, per-class accuracy, confusion matrix."""
    from .evaluation.zeroshot import default_templates, plot_confusion, zeroshot_eval

    dev = _device(device)
    net = _load_model(model, dev)
    labelled = _labelled(data, folds, classes, skip_bad, net.medium)
    templates = list(template or []) or default_templates(net.medium, ensemble)
    m = zeroshot_eval(net, labelled, templates, batch_size, dev, progress=True)
    m.update(model=str(model), data=data, folds=sorted({c.fold for c in labelled.clips if c.fold is not None}) or None)
    _write_json(m, out)
    png = confusion or (out.with_suffix(".confusion.png") if out else None)
    if png:
        plot_confusion(m["confusion"], labelled.class_names, png)
        typer.echo(f"wrote {png}")
    extra = f", top-5 {m['top5']:.3f}" if "top5" in m else ""
    typer.echo(
        f"zero-shot {data}: {m['clips']} {'clips' if net.medium == 'audio' else 'images'}, {m['classes']} classes: "
        f"top-1 {m['top1']:.3f}{extra} "
        f"(chance {m['chance']:.3f}); skipped {m['skipped']['count']}"
    )


AudioColumn = Annotated[str, typer.Option(help="csv:/jsonl: column or key of the audio path")]
CaptionColumn = Annotated[str, typer.Option(help="csv:/jsonl: column or key of the caption")]


@eval_app.command("sts")
def eval_sts(
    model: Annotated[str, typer.Option(help="clapkit checkpoint, Hugging Face or sentence-transformers folder, or 'minilm'")],
    data: Annotated[list[str], typer.Option(help="stsb:DIR, sick:DIR or senteval:DIR (repeat for several)")],
    out: Annotated[Path | None, typer.Option(help="JSON file for the results")] = None,
    split: Annotated[str, typer.Option(help="STS-B / SICK split")] = "test",
    pooling: Annotated[str, typer.Option(help="auto, cls, cls_before_pooler or mean")] = "auto",
    projected: Annotated[bool, typer.Option(help="clapkit checkpoints: use the projected E_t")] = False,
    max_length: Annotated[int | None, typer.Option(help="tokens; default: a sentence-transformers folder's own, else 128")] = None,
    batch_size: int = 64,
    device: Device = "auto",
) -> None:
    """STS Spearman x 100 (STS12-16 'all'/mean/wmean, STS-B, SICK-R), alignment and uniformity."""
    from .data.sts import load_sts
    from .evaluation.sts import SentenceEncoder, sts_eval

    sets = [s for spec in data for s in load_sts(spec, split)]
    enc = SentenceEncoder(model, pooling, max_length, projected, _device(device))
    r = sts_eval(enc, sets, batch_size)
    r.update(model=model, data=list(data), pooling=enc.pooling)
    _write_json(r, out)
    for name, task in r["tasks"].items():
        extra = f" (mean {task['mean']:.2f}, wmean {task['wmean']:.2f})" if "mean" in task else ""
        au = f"; alignment {task['alignment']:.3f}, uniformity {task['uniformity']:.3f}" if "alignment" in task else ""
        typer.echo(f"{name}: Spearman {task['spearman']:.2f} on {task['pairs']} pairs{extra}{au}")
    if "avg" in r:
        typer.echo(f"7-task average: {r['avg']:.2f}")


@eval_app.command("transfer")
def eval_transfer(
    model: Annotated[str, typer.Option(help="clapkit checkpoint, Hugging Face or sentence-transformers folder, or 'minilm'")],
    data: Annotated[list[str], typer.Option(help="CSV of texts and labels (repeat for several tasks)")],
    out: Annotated[Path | None, typer.Option(help="JSON file for the results")] = None,
    text_column: Annotated[str, typer.Option(help="Column of the text")] = "text",
    label_column: Annotated[str, typer.Option(help="Column of the label")] = "label",
    folds: Annotated[int, typer.Option(help="Stratified cross-validation folds")] = 10,
    c: Annotated[float, typer.Option("--c", help="Inverse L2 strength of the logistic regression")] = 1.0,
    seed: int = 0,
    pooling: Annotated[str, typer.Option(help="auto, cls, cls_before_pooler or mean")] = "auto",
    max_length: Annotated[int | None, typer.Option(help="tokens; default: a sentence-transformers folder's own, else 128")] = None,
    batch_size: int = 64,
    device: Device = "auto",
    skip_bad: SkipBad = False,
) -> None:
    """Linear probe (logistic regression, k-fold) on frozen sentence embeddings, SentEval-style."""
    import numpy as np

    from .data.files import Skipped
    from .data.text import load_text_classification
    from .evaluation.sts import SentenceEncoder
    from .evaluation.transfer import linear_probe

    enc = SentenceEncoder(model, pooling, max_length, False, _device(device))
    tasks, skipped = {}, Skipped()
    for path in data:
        t = load_text_classification(path, text_column, label_column, skip_bad, skipped)
        try:
            r = linear_probe(enc.encode(t.texts, batch_size), np.array(t.labels), folds, seed, c)
        except ValueError as exc:
            raise ClapkitError(f"{path}: {exc}") from exc
        tasks[t.name] = r | {"class_names": t.class_names}
        typer.echo(f"{t.name}: accuracy {r['accuracy']:.2f} +- {r['std']:.2f} ({folds} folds, {r['n']} texts, "
                   f"{r['classes']} classes, majority {r['majority']:.2f})")
    result = {"model": model, "pooling": enc.pooling, "folds": folds, "seed": seed, "tasks": tasks,
              "skipped": skipped.to_dict()}
    if len(tasks) > 1:
        result["avg"] = float(np.mean([r["accuracy"] for r in tasks.values()]))
        typer.echo(f"average: {result['avg']:.2f}")
    _write_json(result, out)


def _pairs(medium: str, data: str, media_dir: Path | None, audiocaps_pattern: str | None, skip_bad: bool,
           media_column: str | None = None, caption_column: str = "caption", split: str | None = None):
    """Caption pairs of ``medium`` with their files checked, and the skipped record."""
    from .config import DEFAULTS
    from .data.files import Skipped
    from .data.media import check_media, load_media_pairs

    cfg = {"model": {"modality": medium}, "data": {
        **DEFAULTS["data"], "audio_dir": media_dir, "image_dir": media_dir, "audiocaps_pattern": audiocaps_pattern,
        "skip_bad": skip_bad, "caption_column": caption_column, "split": split,
        "audio_column": media_column or "audio", "image_column": media_column or "image"}}
    skipped = Skipped()
    pairs = load_media_pairs(cfg, data, skipped)
    return check_media(medium, pairs, skip_bad, skipped), skipped


@eval_app.command("retrieval")
def eval_retrieval(
    model: Checkpoint,
    data: Annotated[str, typer.Option(help="audio: csv:, jsonl:, clotho:, audiocaps:, esc50:/folder: (templated); "
                                       "images: coco:JSON, karpathy:JSON, flickr:TOKENFILE, csv:, jsonl:, wds:PATTERN")],
    out: MetricsJson = None,
    audio_dir: Annotated[Path | None, typer.Option(help="Audio folder (clotho:/audiocaps:)")] = None,
    image_dir: Annotated[Path | None, typer.Option(help="Image folder (coco:/karpathy:/flickr:)")] = None,
    split: Annotated[str | None, typer.Option(help="karpathy: the split to evaluate (test, val, train)")] = None,
    audiocaps_pattern: Annotated[str | None, typer.Option(help="AudioCaps file name, e.g. 'Y{youtube_id}.wav'")] = None,
    audio_column: AudioColumn = "audio",
    image_column: Annotated[str, typer.Option(help="csv:/jsonl: column or key of the image path")] = "image",
    caption_column: CaptionColumn = "caption",
    batch_size: int = 32,
    device: Device = "auto",
    skip_bad: SkipBad = False,
) -> None:
    """Text-to-media and media-to-text retrieval: R@1/5/10, mAP@10, median rank."""
    from .evaluation.retrieval import retrieval_eval

    dev = _device(device)
    net = _load_model(model, dev)
    image = net.medium == "image"
    pairs, skipped = _pairs(net.medium, data, image_dir if image else audio_dir, audiocaps_pattern, skip_bad,
                            image_column if image else audio_column, caption_column, split)
    if not pairs:
        raise ClapkitError(f"{data}: no pairs left to evaluate")
    m = retrieval_eval(net, pairs, batch_size, dev, progress=True)
    m.update(model=str(model), data=data, split=split, skipped=skipped.to_dict())
    _write_json(m, out)
    md = net.medium
    t2m, m2t = m[f"text_to_{md}"], m[f"{md}_to_text"]
    typer.echo(
        f"retrieval {data}: {m['images' if image else 'audio']} {md}, {m['captions']} captions; "
        f"text->{md} R@1 {t2m['R@1']:.3f} R@10 {t2m['R@10']:.3f} mAP@10 {t2m['mAP@10']:.3f}; "
        f"{md}->text R@1 {m2t['R@1']:.3f} R@10 {m2t['R@10']:.3f} mAP@10 {m2t['mAP@10']:.3f}; "
        f"skipped {skipped.count}"
    )


@app.command()
def embed(
    model: Checkpoint,
    out: Annotated[Path, typer.Option(help=".npz file with arrays 'embeddings' and 'ids'")],
    audio: Annotated[str | None, typer.Option(help="Audio to embed: esc50:, folder:, csv:, jsonl:, clotho:, audiocaps:")] = None,
    image: Annotated[str | None, typer.Option(help="Images to embed: folder:, csv: (image,label), mnist:, cifar:, or a caption "
                                              "spec (coco:, karpathy:, flickr:, jsonl:, wds:)")] = None,
    text: Annotated[Path | None, typer.Option(help="Text file, one text a line")] = None,
    audio_dir: Annotated[Path | None, typer.Option(help="Audio folder (clotho:/audiocaps:)")] = None,
    image_dir: Annotated[Path | None, typer.Option(help="Image folder (coco:/karpathy:/flickr:)")] = None,
    backbone: Annotated[bool, typer.Option(help="Backbone outputs x (not the projected, normalised E)")] = False,
    batch_size: int = 32,
    device: Device = "auto",
    skip_bad: SkipBad = False,
) -> None:
    """Write audio, image or text embeddings of a checkpoint."""
    import numpy as np

    from .data.files import Skipped
    from .data.manifests import unique_clips
    from .inference.embed import embed_media, embed_text

    if sum(x is not None for x in (audio, image, text)) != 1:
        raise ClapkitError("give exactly one of --audio SPEC, --image SPEC or --text FILE")
    dev = _device(device)
    net = _load_model(model, dev)
    skipped = Skipped()
    media = audio if audio is not None else image
    if media is not None:
        medium = "audio" if audio is not None else "image"
        if medium != net.medium:
            raise ClapkitError(f"--{medium}: {model} is a{'n' if net.medium == 'image' else ''} {net.medium} model; "
                               f"use --{net.medium}")
        kind = media.split(":", 1)[0]
        labelled_kinds = ("esc50", "folder", "fsdd") if medium == "audio" else ("folder", "mnist", "cifar")
        if kind in labelled_kinds or (medium == "image" and kind == "csv" and _has_label_column(media)):
            labelled = _labelled(media, None, None, skip_bad, medium)
            items, skipped = labelled.clips, labelled.skipped
        else:
            pairs, skipped = _pairs(medium, media, audio_dir if medium == "audio" else image_dir, None, skip_bad)
            items = unique_clips(pairs)
        emb = embed_media(net, items, batch_size, projected=not backbone, device=dev, progress=True)
        ids = [str(i.media) for i in items]
    else:
        from .data.text import read_lines

        ids = read_lines(text)
        emb = embed_text(net, ids, projected=not backbone, device=dev)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, embeddings=emb, ids=np.array(ids))
    typer.echo(f"wrote {out}: {emb.shape[0]} x {emb.shape[1]} ({'backbone' if backbone else 'projected'}); skipped {skipped.count}")


@audit_app.command("leakage")
def audit_leakage_cmd(
    captions: Annotated[list[str], typer.Option(help="Training caption files (Clotho, AudioCaps, csv, jsonl; or KIND:PATH)")],
    labels: Annotated[str, typer.Option(help="Evaluation labels: esc50:ROOT, folder:DIR or txt:FILE")],
    out: Annotated[Path, typer.Option(help="Report folder")],
    words: Annotated[Path | None, typer.Option(help="Edited word list (words.txt of an earlier run)")] = None,
    pretrain_labels: Annotated[Path | None, typer.Option(help="Pre-training label vocabulary (CSV with display_name, or text)")] = None,
    write_clean: Annotated[Path | None, typer.Option(help="Write the training pairs that name no class to this CSV")] = None,
    clean_by: Annotated[str, typer.Option(help="pair: drop dirty pairs; audio: drop every pair of a clip with a dirty caption")] = "pair",
    audio_dir: Annotated[Path | None, typer.Option(help="Audio folder, for the paths of the clean manifest")] = None,
    more_captions: Annotated[list[str] | None, typer.Argument(help="More caption files: --captions A B C works")] = None,
) -> None:
    """Find training captions that name evaluation classes (the paper's dirty/clean split)."""
    from .audit.leakage import audit_leakage

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
    data: Annotated[str, typer.Option(help="A labelled set: esc50:ROOT, folder:DIR (audio); folder:, csv:, mnist:, cifar: (images)")],
    out: Annotated[Path, typer.Option(help="Report folder")],
    folds: Annotated[str | None, typer.Option(help="Comma-separated folds")] = None,
    template: Annotated[str | None, typer.Option(help="Prompt template for the label texts (default: the medium's)")] = None,
    k_max: Annotated[int, typer.Option(help="Largest k of the topological similarity")] = 10,
    include_self: Annotated[bool, typer.Option(help="Count a point among its own neighbours (the paper's literal text)")] = False,
    seed: Annotated[int, typer.Option(help="t-SNE seed")] = 0,
    batch_size: int = 32,
    device: Device = "auto",
    skip_bad: SkipBad = False,
) -> None:
    """Silhouette scores, topological similarities and t-SNE maps of a model's embeddings."""
    from .audit.embeddings import audit_embeddings
    from .evaluation.zeroshot import default_templates

    dev = _device(device)
    net = _load_model(model, dev)
    labelled = _labelled(data, folds, None, skip_bad, net.medium)
    template = template or default_templates(net.medium)[0]
    r = audit_embeddings(net, labelled, out, template, k_max, include_self, seed, batch_size, dev)
    t = r["topological_similarity"]
    typer.echo(
        f"{r['clips']} {'clips' if net.medium == 'audio' else 'images'}, {r['classes']} classes: zero-shot "
        f"{r['zeroshot_accuracy']:.3f}; silhouette x_a {r['silhouette']['x_a']:.3f}, E_a {r['silhouette']['E_a']:.3f}; "
        f"S(x_a,E_a) {t['x_a_vs_E_a']:.3f}, S(x_t,E_t) {t['x_t_vs_E_t']:.3f}, S(E_a,E_t) {t['E_a_vs_E_t']:.3f}; "
        f"report in {out / 'report.md'}"
    )


@experiment_app.command("leakage-matrix")
def leakage_matrix_cmd(
    out: Annotated[Path, typer.Option(help="Experiment folder")],
    config: Annotated[str, typer.Option(help="Preset (leakage-cpu, leakage-paper) or YAML file")] = "leakage-cpu",
    set_: SetOpt = None,
) -> None:
    """Dirty/clean training x dirty/clean/none backbone pre-training: accuracy, silhouettes, S, t-SNE."""
    from .experiments.leakage import TRAININGS, run_leakage_matrix

    r = run_leakage_matrix(_config(config, set_), out)
    for t in TRAININGS:
        row = ", ".join(f"{p} {r['cells'][f'{t}_{p}']['zeroshot_accuracy']:.3f}" for p in ("dirty", "clean", "none"))
        typer.echo(f"{t} training: {row}")
    typer.echo(f"chance {r['chance']:.3f}; ordering as in the paper: {r['ordering']['all']}; tables in {out / 'results.md'}")


@app.command()
def curate(
    teacher: Annotated[Path, typer.Option(help="Teacher checkpoint folder")],
    audio: Annotated[Path, typer.Option(help="Unpaired audio: a folder or a CSV with an 'audio' column")],
    captions: Annotated[str, typer.Option(help="Caption pool: any manifest (Clotho, AudioCaps, csv, jsonl)")],
    out: Annotated[Path, typer.Option(help="Curated manifest CSV (stats and histogram beside it)")],
    strategy: Annotated[str, typer.Option(help="du (domain-unspecific) or ds (domain-specific)")] = "du",
    sigma: Annotated[float, typer.Option(help="Minimum audio-caption similarity")] = 0.7,
    top_k: Annotated[int, typer.Option(help="Captions kept per audio")] = 1,
    labels: Annotated[str | None, typer.Option(help="DS: in-domain labels (esc50:ROOT, folder:DIR, txt:FILE)")] = None,
    label_threshold: Annotated[float, typer.Option(help="DS: minimum caption-label similarity")] = 0.65,
    label_template: Annotated[str, typer.Option(help="DS: how a label is written before embedding")] = "{label}",
    index: Annotated[str, typer.Option(help="exact or hnsw (approximate, for millions)")] = "exact",
    cache: Annotated[Path | None, typer.Option(help="Embedding cache folder (default: beside --out)")] = None,
    batch_size: int = 32,
    device: Device = "auto",
    skip_bad: SkipBad = False,
) -> None:
    """Pair unpaired audio with captions through a teacher CLAP (DU / DS strategies)."""
    from .curation import curate as run

    s = run(teacher, audio, captions, out, strategy, sigma, top_k, labels, label_threshold, label_template,
            index, cache, batch_size, _device(device), skip_bad)
    extra = f", {s['captions_in_domain']} captions in domain" if strategy == "ds" else ""
    typer.echo(f"{s['pairs']} pairs for {s['audio_matched']} of {s['audio_pool']} clips from {s['caption_pool']} "
               f"captions{extra}; cache reused {s['cache']['audio_reused']} audio, {s['cache']['text_reused']} texts; "
               f"wrote {out}")


@experiment_app.command("improvement")
def improvement_cmd(
    out: Annotated[Path, typer.Option(help="Experiment folder")],
    config: Annotated[str, typer.Option(help="Preset (improvement-cpu) or YAML file")] = "improvement-cpu",
    set_: SetOpt = None,
) -> None:
    """Teacher -> DU/DS curation -> hard/soft-label students -> zero-shot table."""
    from .experiments.improvement import run_improvement

    r = run_improvement(_config(config, set_), out)
    for name, accs in r["zeroshot"].items():
        typer.echo(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in accs.items()))
    typer.echo(f"chance: {r['chance']}; table in {out / 'results.md'}")


@app.command("config")
def show_config(
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Print the resolved config (every key, with the preset and overrides applied)."""
    import yaml

    from .config import list_presets, load_config

    typer.echo(yaml.safe_dump(load_config(config, set_), sort_keys=False).rstrip())
    typer.echo(f"# presets: {', '.join(list_presets())}")


def main() -> None:
    _quiet_libraries()
    try:
        app()
    except ClapkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
