"""`clapkit eval ...` and `clapkit embed`: metrics as JSON, embeddings as .npz."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..data import specs
from ..errors import ClapkitError
from ..models.provenance import describe
from .common import (
    LABELLED_HELP,
    PAIRS_HELP,
    STS_HELP,
    AudioColumn,
    AudioDir,
    Cache,
    CaptionColumn,
    Checkpoint,
    Compile,
    Device,
    Hop,
    ImageDir,
    MetricsJson,
    Pool,
    Precision,
    SkipBad,
    Window,
    Workers,
    _device,
    _fold_list,
    _labelled,
    _load_model,
    _pairs,
    _windows,
    _write_json,
    app,
    eval_app,
    is_main,
)


@eval_app.command("zeroshot")
def eval_zeroshot(
    model: Checkpoint,
    data: Annotated[str, typer.Option(help=LABELLED_HELP)],
    out: MetricsJson = None,
    folds: Annotated[str | None, typer.Option(help="Comma-separated folds, e.g. 1,2,3")] = None,
    classes: Annotated[str | None, typer.Option(help="Comma-separated class names to evaluate on")] = None,
    template: Annotated[list[str] | None, typer.Option(help="Prompt template with {label}; repeat to ensemble")] = None,
    ensemble: Annotated[bool, typer.Option(help="Average the built-in set of templates")] = False,
    prompts: Annotated[str | None, typer.Option(help="A prompt set: clip_benchmark:DATASET, open_clip:imagenet, "
                                                     "clapkit:default or clapkit:ensemble, or a .json/.yaml/.txt file of "
                                                     "templates or per-class prompts")] = None,
    classnames: Annotated[str | None, typer.Option(help="The names written into the prompts: clip_benchmark:DATASET, "
                                                        "open_clip:imagenet, audioset:class_labels_indices.csv or "
                                                        "ontology.json (sets with AudioSet mids), LAION-CLAP's "
                                                        "class_labels/*.json (matched by name), a .json/.yaml mapping or "
                                                        "list, or a .txt list")] = None,
    confusion: Annotated[Path | None, typer.Option(help="Confusion-matrix PNG (default: beside --out)")] = None,
    split: Annotated[str | None, typer.Option(help="The set's split, where it has them (fsd50k: eval, dev, train, val; "
                                                   "cifar: test, train)")] = None,
    bootstrap: Annotated[int, typer.Option(help="Resamples of the clips for 95% intervals (0: none)")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap")] = 0,
    window: Window = None,
    hop: Hop = None,
    pool: Pool = "mean",
    precision: Precision = "fp32",
    compile_mode: Compile = "none",
    cache: Cache = None,
    audio_dir: Annotated[Path | None, typer.Option(help="audioset: the downloaded clips (default: the CSV's folder)")] = None,
    captions: Annotated[list[Path] | None, typer.Option(help="The model's training captions (repeat): the dirty "
                                                             "fraction, and top-1 on the classes they name and on "
                                                             "those they never name")] = None,
    fold_protocol: Annotated[str | None, typer.Option(help="A named fold protocol: all-folds, fold-K (e.g. fold-1) or "
                                                           "per-fold-mean (instead of --folds)")] = None,
    prompt_sweep: Annotated[bool, typer.Option(help="Also score every registered prompt set on the same embeddings: "
                                                    "each with its interval, the spread, a paired test against the "
                                                    "default (--prompts, else clapkit:default)")] = False,
    manifest: Annotated[list[Path] | None, typer.Option(help="Another copy's `clapkit manifest` (repeat): report which "
                                                             "items differ from it")] = None,
    intersect: Annotated[bool, typer.Option(help="Score only the items every --manifest holds with the same "
                                                 "content")] = False,
    language_prompts: Annotated[Path | None, typer.Option(
        help="Zero-shot per language on the same embeddings: a YAML/JSON file keyed by language code, {en: {templates: "
             "[...]}, de: {templates: [...], classnames: {CLASS: NAME}}}; each language's number with its interval, "
             "the difference from en with McNemar's p, and the tokenizer's coverage of its prompts")] = None,
    batch_size: int = 32,
    device: Device = "auto",
    workers: Workers = 0,
    skip_bad: SkipBad = False,
) -> None:
    """Zero-shot classification: top-1/top-5, per-class accuracy, confusion matrix; a
    multi-label set (fsd50k:): mAP, mAUC, d-prime, LRAP and per-class AP. Every accuracy
    or mAP gets a 95% bootstrap interval over the clips; the result counts the items the
    set's metadata lists that are present, missing and unreadable (``coverage``)."""
    from ..evaluation.zeroshot import (
        plot_confusion,
        texts_record,
        zeroshot_metrics,
        zeroshot_scores,
    )

    dev = _device(device)
    net = _load_model(model, dev)
    if bootstrap < 0:
        raise ClapkitError(f"--bootstrap {bootstrap}: give 0 (no intervals) or a number of resamples")
    from ..evaluation.zeroshot import task_folds

    chosen, main = task_folds(_fold_list(folds), fold_protocol, "--fold-protocol: ")
    folds = ",".join(map(str, chosen)) if chosen else None
    labelled = _labelled(data, folds, classes, skip_bad, net.medium, split, audio_dir)
    from ..data.manifest import against_copies

    coverage = labelled.skipped.coverage(len(labelled.clips))  # this copy against the metadata, before --intersect
    copies = against_copies(labelled, manifest, intersect)
    if sum(map(bool, (prompts, template, ensemble))) > 1:
        raise ClapkitError("give one of --prompts, --template and --ensemble")
    from ..evaluation.prompts import zeroshot_texts

    texts = zeroshot_texts(labelled.class_names, net.medium,
                           prompts or list(template or []) or ("clapkit:ensemble" if ensemble else None),
                           classnames, labelled.class_ids)
    if language_prompts:
        from ..evaluation.zeroshot import load_language_prompts

        load_language_prompts(language_prompts, labelled.class_names)  # its errors before the media are embedded
    from ..inference.embed import inference_compile, inference_precision
    from ..inference.features import embed_items

    windows = _windows(window, hop, pool)
    with inference_precision(precision, dev), inference_compile(compile_mode):
        feats, made = embed_items(net, labelled.clips, ("E",), batch_size, dev, workers, cache, model, windows,
                                  pooled=windows is None or windows.pool == "mean", progress=True)
        owner = made.pop("owner", None)
        scores = zeroshot_scores(net, labelled, texts, batch_size, dev, media_emb=feats["E"], owner=owner)
    m = zeroshot_metrics(scores, labelled, bootstrap, seed, keep_ranks=bool(captions))
    ranks = m.pop("ranks", None)
    m.update(texts_record(texts), skipped=labelled.skipped.to_dict(), precision=precision, compile=compile_mode, **made,
             coverage=coverage, **copies)
    if main:
        if main not in m:
            raise ClapkitError(f"--fold-protocol {fold_protocol}: {data} has no official folds (or one)")
        m.update(fold_protocol=fold_protocol, main_metric=main)
    if prompt_sweep:
        from ..evaluation.zeroshot import prompt_sweep as sweep

        m["prompt_sweep"] = sweep(net, labelled, feats["E"], owner, prompts or
                                  (list(template) if template else "clapkit:ensemble" if ensemble else None),
                                  classnames, bootstrap, seed, dev)
    if language_prompts:
        from ..evaluation.zeroshot import language_sweep

        m["per_language"] = language_sweep(net, labelled, feats["E"], language_prompts, owner, bootstrap, seed, dev)
    if captions:
        from ..audit.leakage import zeroshot_leakage

        m["leakage"] = zeroshot_leakage(list(captions), labelled, None if ranks is None else ranks == 1, net.medium)
    m.update(model=str(model), model_provenance=describe(str(model), net), data=data, split=split,
             folds=sorted({c.fold for c in labelled.clips if c.fold is not None}) or None)
    _write_json(m, out)
    for lang, r in (m.get("per_language") or {}).get("languages", {}).items():
        key, vs, tok = m["per_language"]["metric"], r.get("vs_en"), r["tokenizer"]
        typer.echo(f"  {lang:8} {key} {r[key]:.3f}" + (f" [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]" if r["ci"] else "")
                   + (f"  {vs['difference']:+.3f} vs en, p = {vs['p_value']:.3g}" if vs else "")
                   + (f"; unk {tok['unk_share']:.1%}, {tok['tokens_per_word']:.2f} tokens/word" if tok["available"]
                      else ""))
    ci = m.get("ci", {})

    def shown(key: str) -> str:
        return f"{m[key]:.3f}" + (f" [{ci[key][0]:.3f}, {ci[key][1]:.3f}]" if key in ci else "")

    noun = "clips" if net.medium == "audio" else "images"
    if m["multilabel"]:
        typer.echo(f"zero-shot {data} (multi-label): {m['clips']} {noun}, {m['classes_in_mean']} of {m['classes']} "
                   f"classes with a positive: mAP {shown('mAP')}, mAUC {m['mAUC']:.3f}, d' {m['d_prime']:.3f}, "
                   f"LRAP {m['lrap']:.3f}; skipped {m['skipped']['count']}")
        _echo_sweep(m.get("prompt_sweep"))
        return
    png = confusion or (out.with_suffix(".confusion.png") if out else None)
    if png:
        plot_confusion(m["confusion"], labelled.class_names, png)
        typer.echo(f"wrote {png}")
    extra = f", top-5 {shown('top5')}" if "top5" in m else ""
    typer.echo(
        f"zero-shot {data}: {m['clips']} {noun}, {m['classes']} classes: top-1 {shown('top1')}{extra} "
        f"(chance {m['chance']:.3f}); skipped {m['skipped']['count']}"
    )
    _echo_sweep(m.get("prompt_sweep"))


def _echo_sweep(sweep: dict | None) -> None:
    """The prompt sweep's lines: each set's number and interval, its paired test, the spread."""
    if not sweep:
        return
    metric = sweep["metric"]
    for r in sweep["sets"]:
        ci = f" [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]" if r["ci"] else ""
        vs = r.get("vs_default")
        typer.echo(f"  {r['name']:30} {metric} {r[metric]:.3f}{ci}"
                   + (f"  {vs['difference']:+.3f} vs default, p = {vs['p_value']:.3g}" if vs else "  (default)"))
    typer.echo(f"  prompt spread {sweep['spread']:.3f} ({sweep['best']} - {sweep['worst']}); not applicable: "
               f"{', '.join(sweep['not_applicable']) or 'none'}")





@eval_app.command("sts")
def eval_sts(
    model: Annotated[str, typer.Option(help="clapkit checkpoint or train cse folder, a public CLAP/CLIP/SigLIP (its text "
                                            "tower), a Hugging Face or sentence-transformers folder, or 'minilm'")],
    data: Annotated[list[str], typer.Option(help=f"{STS_HELP} (repeat for several)")],
    out: Annotated[Path | None, typer.Option(help="JSON file for the results")] = None,
    split: Annotated[str, typer.Option(help="STS-B / SICK split")] = "test",
    pooling: Annotated[str, typer.Option(help="auto, cls, cls_before_pooler or mean")] = "auto",
    projected: Annotated[bool, typer.Option(help="dual encoders: use the projected E_t")] = False,
    max_length: Annotated[int | None, typer.Option(help="tokens; default: a sentence-transformers folder's own, else 128")] = None,
    batch_size: int = 64,
    device: Device = "auto",
) -> None:
    """STS Spearman x 100 (STS12-16 'all'/mean/wmean, STS-B, SICK-R), alignment and uniformity."""
    from ..data.text.sts import load_sts
    from ..evaluation.sts import SentenceEncoder, sts_eval

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
    model: Annotated[str, typer.Option(help="clapkit checkpoint or train cse folder, a public CLAP/CLIP/SigLIP (its text "
                                            "tower), a Hugging Face or sentence-transformers folder, or 'minilm'")],
    data: Annotated[list[str], typer.Option(help="senteval:DIR (SentEval's data/downstream: MR, CR, SUBJ, MPQA, SST2, "
                                                 "TREC, MRPC by SentEval's protocol), or a file of texts and labels: CSV, "
                                                 "JSON Lines or a JSON array (repeat for several)")],
    out: Annotated[Path | None, typer.Option(help="JSON file for the results")] = None,
    text_column: Annotated[str, typer.Option(help="Column (or JSON key) of the text")] = "text",
    label_column: Annotated[str, typer.Option(help="Column (or JSON key) of the label")] = "label",
    folds: Annotated[int, typer.Option(help="Stratified cross-validation folds")] = 10,
    c: Annotated[float, typer.Option("--c", help="file tasks: inverse L2 strength of the logistic regression")] = 1.0,
    protocol: Annotated[str | None, typer.Option(help="sklearn: SentEval's scikit-learn logistic regression "
                                                      "(usepytorch=False); simcse: SentEval's PyTorch one with SimCSE's "
                                                      "settings (its published tables). Default: sklearn for senteval:, "
                                                      "the fixed---c probe for files; given, files use SentEval's inner "
                                                      "k-fold too")] = None,
    seed: Annotated[int | None, typer.Option(help="Fold and classifier seed (default: 1111, SentEval's, for "
                                                  "senteval:; 0 for task files)")] = None,
    pooling: Annotated[str, typer.Option(help="auto, cls, cls_before_pooler or mean")] = "auto",
    projected: Annotated[bool, typer.Option(help="dual encoders: use the projected E_t")] = False,
    max_length: Annotated[int | None, typer.Option(help="tokens; default: a sentence-transformers folder's own, else 128")] = None,
    batch_size: int = 64,
    device: Device = "auto",
    skip_bad: SkipBad = False,
) -> None:
    """Linear probes on frozen sentence embeddings: SentEval's transfer tasks by its protocol
    (senteval:DIR; raw embeddings, C chosen as SentEval chooses it, comparable with published
    SentEval numbers), or a task file (standardised features, stratified k-fold, fixed --c)."""
    from ..data.files import Skipped
    from ..evaluation.sts import SentenceEncoder
    from ..evaluation.transfer import check_protocol, load_transfer_tasks, transfer_eval

    check_protocol(protocol)
    skipped = Skipped()
    tasks = load_transfer_tasks(data, folds, text_column, label_column, skip_bad, skipped)  # before the model loads
    enc = SentenceEncoder(model, pooling, max_length, projected, _device(device))
    r = transfer_eval(lambda texts: enc.encode(texts, batch_size, normalize=False), tasks, seed, c, protocol)
    for name, task in r["tasks"].items():
        if task["protocol"].startswith("SentEval"):
            f1 = f", F1 {task['f1']:.2f}" if "f1" in task else ""
            typer.echo(f"{name}: accuracy {task['accuracy']:.2f}{f1} (dev {task['dev']:.2f}; {task['n']} examples, "
                       f"{task['protocol']} protocol)")
        else:
            typer.echo(f"{name}: accuracy {task['accuracy']:.2f} +- {task['std']:.2f} ({folds} folds, {task['n']} texts, "
                       f"{task['classes']} classes, majority {task['majority']:.2f})")
    result = {"model": model, "pooling": enc.pooling, "projected": projected, "folds": folds, "seed": seed, **r,
              "skipped": skipped.to_dict()}
    if len(r["tasks"]) > 1:
        typer.echo(f"average: {r['avg']:.2f}")
    if r["unconverged_fits"]:  # one line instead of one ConvergenceWarning per fit
        worst = max(r["tasks"], key=lambda k: r["tasks"][k].get("unconverged_fits", 0))
        typer.echo(f"scikit-learn: {r['unconverged_fits']} of {r['fits']} logistic-regression fits stopped at their "
                   f"iteration limit before converging (most in {worst}: {r['tasks'][worst]['unconverged_fits']}); "
                   "SentEval's scikit-learn path runs the same fits", err=True)
    _write_json(result, out)



@eval_app.command("language")
def eval_language(
    model: Checkpoint,
    data: Annotated[str | None, typer.Option(help="Caption pairs for uniformity, alignment and the modality gap (any "
                                                  "spec eval retrieval takes)")] = None,
    sts: Annotated[list[str] | None, typer.Option(help=f"STS sets ({STS_HELP}; repeat): the table "
                                                        "on x_t and on E_t")] = None,
    transfer: Annotated[list[str] | None, typer.Option(help="transfer tasks on x_t, as eval transfer takes them: "
                                                            "senteval:DIR, or a file of texts and labels (repeat)")] = None,
    out: MetricsJson = None,
    audio_dir: AudioDir = None,
    image_dir: ImageDir = None,
    split: Annotated[str | None, typer.Option(help="karpathy: the split")] = None,
    folds: Annotated[int, typer.Option(help="transfer: cross-validation folds")] = 10,
    batch_size: int = 32,
    device: Device = "auto",
    workers: Workers = 0,
    skip_bad: SkipBad = False,
) -> None:
    """The language encoder inside a dual encoder, as S0 measures it: STS on x_t and E_t,
    SentEval transfer on x_t, text uniformity, cross-modal alignment and the modality gap."""
    from ..evaluation.language import pair_geometry
    from ..evaluation.sts import SentenceEncoder, sts_eval

    if not (data or sts or transfer):
        raise ClapkitError("give --data (caption pairs), --sts and/or --transfer: nothing to measure")
    dev = _device(device)
    result: dict = {"model": str(model)}
    net = _load_model(model, dev)  # once, for the pairs, STS and transfer alike
    if data:
        pairs, skipped = _pairs(net.medium, data, image_dir if net.medium == "image" else audio_dir, None, skip_bad,
                                split=split)
        if len(pairs) < 2:
            raise ClapkitError(f"{data}: {len(pairs)} pair(s); the geometry needs at least 2")
        g = pair_geometry(net, pairs, batch_size, dev, workers)
        result["geometry"] = g | {"data": data, "skipped": skipped.to_dict()}
        typer.echo(f"{data}: {g['pairs']} pairs ({g['media']} {net.medium}, {g['captions']} captions): uniformity E_t "
                   f"{g['uniformity_E_t']:.3f} (x_t {g['uniformity_x_t']:.3f}), alignment {g['alignment']:.3f}, "
                   f"modality gap {g['modality_gap']:.3f}")
    if sts:
        from ..data.text.sts import load_sts

        sets = [x for spec in sts for x in load_sts(spec)]
        result["sts"] = {}
        for name, projected in (("x_t", False), ("E_t", True)):
            r = sts_eval(SentenceEncoder.of_model(net, projected, dev), sets, batch_size)
            result["sts"][name] = {"table": r["table"], "avg": r.get("avg")}
            avg = f"; 7-task average {r['avg']:.2f}" if "avg" in r else ""
            typer.echo(f"STS on {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in r["table"].items()) + avg)
    if transfer:
        from ..data.files import Skipped
        from ..evaluation.transfer import load_transfer_tasks, transfer_eval

        skipped = Skipped()
        tasks = load_transfer_tasks(transfer, folds, skip_bad=skip_bad, skipped=skipped)
        enc = SentenceEncoder.of_model(net, device=dev)
        r = transfer_eval(lambda texts: enc.encode(texts, batch_size, normalize=False), tasks)
        result["transfer"] = r | {"skipped": skipped.to_dict()}
        typer.echo("transfer on x_t: " + ", ".join(f"{k} {v['accuracy']:.2f}" for k, v in r["tasks"].items())
                   + f"; average {r['avg']:.2f}")
    _write_json(result, out)


@eval_app.command("retrieval")
def eval_retrieval(
    model: Checkpoint,
    data: Annotated[str, typer.Option(help=PAIRS_HELP)],
    out: MetricsJson = None,
    audio_dir: AudioDir = None,
    image_dir: ImageDir = None,
    split: Annotated[str | None, typer.Option(help="karpathy: the split to evaluate (test, val, train)")] = None,
    audiocaps_pattern: Annotated[str | None, typer.Option(help="AudioCaps file name, e.g. 'Y{youtube_id}.wav'")] = None,
    audio_column: AudioColumn = "audio",
    image_column: Annotated[str, typer.Option(help="csv:/jsonl: column or key of the image path")] = "image",
    caption_column: CaptionColumn = "caption",
    bootstrap: Annotated[int, typer.Option(help="Resamples of the queries for 95% intervals of R@k (0: none)")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap")] = 0,
    window: Window = None,
    hop: Hop = None,
    precision: Precision = "fp32",
    compile_mode: Compile = "none",
    cache: Cache = None,
    batch_size: int = 32,
    device: Device = "auto",
    workers: Workers = 0,
    skip_bad: SkipBad = False,
    relevance: Annotated[Path | None, typer.Option(
        help="Several relevant clips per caption: a relevance file (DCASE 2025 task 6's query,audio_filenames CSV, "
             "a BEIR/MTEB qrels TSV query-id/corpus-id/score, or TREC qrels). Text->media then scores the file's "
             "captions against all clips: mAP@16, mAP@10, nDCG@10, R@1/5/10 over all relevant clips")] = None,
) -> None:
    """Text-to-media and media-to-text retrieval: R@1/5/10 (with 95% bootstrap intervals),
    mAP@10, median rank; with --relevance, text-to-media with graded relevance (mAP@16,
    nDCG@10, R@k over all relevant clips)."""
    from ..evaluation.retrieval import retrieval_eval

    dev = _device(device)
    net = _load_model(model, dev)
    image = net.medium == "image"
    pairs, skipped = _pairs(net.medium, data, image_dir if image else audio_dir, audiocaps_pattern, skip_bad,
                            image_column if image else audio_column, caption_column, split)
    if not pairs:
        raise ClapkitError(f"{data}: no pairs left to evaluate")
    if bootstrap < 0:
        raise ClapkitError(f"--bootstrap {bootstrap}: give 0 (no intervals) or a number of resamples")
    from ..inference.embed import inference_compile, inference_precision

    with inference_precision(precision, dev), inference_compile(compile_mode):
        m = retrieval_eval(net, pairs, batch_size, dev, progress=True, num_workers=workers, bootstrap=bootstrap,
                           seed=seed, windows=_windows(window, hop), cache=cache, model_spec=model,
                           relevance=relevance, skip_bad=skip_bad)
    m.update(model=str(model), model_provenance=describe(str(model), net), data=data, split=split,
             skipped=skipped.to_dict(), precision=precision, compile=compile_mode)
    _write_json(m, out)
    md = net.medium
    t2m, m2t = m[f"text_to_{md}"], m[f"{md}_to_text"]
    def r(d: dict, k: str) -> str:
        return f"{d[k]:.3f}" + (f" [{d['ci'][k][0]:.3f}, {d['ci'][k][1]:.3f}]" if "ci" in d else "")

    graded = (f" ({t2m['queries']} judged captions, mAP@16 {r(t2m, 'mAP@16')} nDCG@10 {t2m['nDCG@10']:.3f}, "
              f"relevance rows skipped {m['relevance']['skipped']['count']})") if relevance else ""
    typer.echo(
        f"retrieval {data}: {m['images'] if image else m['audio']} {'images' if image else 'audio'}, {m['captions']} captions; "
        f"text->{md}{graded} R@1 {r(t2m, 'R@1')} R@10 {r(t2m, 'R@10')} mAP@10 {t2m['mAP@10']:.3f}; "
        f"{md}->text R@1 {r(m2t, 'R@1')} R@10 {r(m2t, 'R@10')} mAP@10 {m2t['mAP@10']:.3f}; "
        f"skipped {skipped.count}"
    )
    for lang, d in m.get("per_language", {}).items():  # one line per caption language
        t, a, vs, tok = d[f"text_to_{md}"], d[f"{md}_to_text"], d.get("vs_en"), d["tokenizer"]
        line = f"  {lang:8} {d['captions']} captions: text->{md} R@1 {r(t, 'R@1')} R@10 {r(t, 'R@10')}; {md}->text " \
               f"R@1 {r(a, 'R@1')}"
        if vs:
            paired = vs[f"{md}_to_text"]
            line += f"; R@1 vs en: text->{md} {vs[f'text_to_{md}']['difference']:+.3f} (unpaired)"
            if paired["difference"] is not None:
                line += f", {md}->text {paired['difference']:+.3f} (paired, p = {paired['p_value']:.3g})"
        if tok["available"]:
            line += f"; unk {tok['unk_share']:.1%}, {tok['tokens_per_word']:.2f} tokens/word"
        typer.echo(line)


@app.command()
def embed(
    model: Checkpoint,
    out: Annotated[Path, typer.Option(help=".npz file with arrays 'embeddings' and 'ids'")],
    audio: Annotated[str | None, typer.Option(help="Audio to embed: a labelled set or caption pairs ("
                                              + specs.help_for(specs.LABELLED, "audio") + "; "
                                              + specs.help_for(specs.PAIRS, "audio") + ")")] = None,
    image: Annotated[str | None, typer.Option(help="Images to embed: a labelled set or caption pairs ("
                                              + specs.help_for(specs.LABELLED, "image") + "; "
                                              + specs.help_for(specs.PAIRS, "image") + ")")] = None,
    text: Annotated[Path | None, typer.Option(help="Text file, one text a line")] = None,
    audio_dir: AudioDir = None,
    image_dir: ImageDir = None,
    backbone: Annotated[bool, typer.Option(help="Backbone outputs x (not the projected, normalised E)")] = False,
    window: Window = None,
    hop: Hop = None,
    precision: Precision = "fp32",
    compile_mode: Compile = "none",
    cache: Cache = None,
    batch_size: int = 32,
    device: Device = "auto",
    workers: Workers = 0,
    skip_bad: SkipBad = False,
) -> None:
    """Write audio, image or text embeddings of a checkpoint (with --window, each clip's
    mean over sliding windows; the window record is stored as 'windows')."""
    import json

    import numpy as np

    from ..data.files import Skipped
    from ..data.records import unique_clips
    from ..inference.embed import embed_text, inference_compile, inference_precision
    from ..inference.features import embed_items

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
        from ..data.media import is_labelled_set

        if is_labelled_set(media, medium):
            labelled = _labelled(media, None, None, skip_bad, medium)
            items, skipped = labelled.clips, labelled.skipped
        else:
            pairs, skipped = _pairs(medium, media, audio_dir if medium == "audio" else image_dir, None, skip_bad)
            items = unique_clips(pairs)
        kind = "x" if backbone else "E"
        with inference_precision(precision, dev), inference_compile(compile_mode):
            feats, made = embed_items(net, items, (kind,), batch_size, dev, workers, cache, model,
                                      _windows(window, hop), progress=True)
        emb = feats[kind]
        ids = [str(i.media) for i in items]
    else:
        from ..data.files import read_lines

        ids = read_lines(text)
        with inference_precision(precision, dev), inference_compile(compile_mode):
            emb = embed_text(net, ids, projected=not backbone, device=dev)
    out.parent.mkdir(parents=True, exist_ok=True)
    extra = {"windows": np.array(json.dumps(made["windows"]))} if media is not None and "windows" in made else {}
    if is_main():
        np.savez(out, embeddings=emb, ids=np.array(ids), **extra)
    typer.echo(f"wrote {out}: {emb.shape[0]} x {emb.shape[1]} ({'backbone' if backbone else 'projected'}"
               + (f", mean of {made['windows'].get('windows')} windows" if extra else "") + f"); skipped {skipped.count}")
