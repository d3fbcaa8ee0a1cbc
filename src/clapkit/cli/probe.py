"""`clapkit eval probe`: the media tower on its own (linear probe, few-shot, kNN)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..models.provenance import describe
from .common import (
    LABELLED_HELP,
    Cache,
    Checkpoint,
    Compile,
    Device,
    Hop,
    MetricsJson,
    Precision,
    SkipBad,
    Window,
    Workers,
    _class_list,
    _device,
    _fold_list,
    _load_model,
    _windows,
    _write_json,
    eval_app,
)


@eval_app.command("probe")
def eval_probe(
    model: Checkpoint,
    data: Annotated[str, typer.Option(help=LABELLED_HELP)],
    out: MetricsJson = None,
    folds: Annotated[str | None, typer.Option(help="Comma-separated folds that take part in leave-one-fold-out")] = None,
    classes: Annotated[str | None, typer.Option(help="Comma-separated class names to probe on")] = None,
    split: Annotated[str | None, typer.Option(help="The evaluated (test) split, where the set has them")] = None,
    train_split: Annotated[str | None, typer.Option(help="Train on this split (e.g. train) and test on --split, "
                                                         "instead of folds / cross-validation")] = None,
    cv: Annotated[int, typer.Option(help="Stratified folds for a set with neither folds nor --train-split")] = 5,
    shots: Annotated[int | None, typer.Option(help="Few-shot: training items per class (default: all)")] = None,
    seeds: Annotated[int | None, typer.Option(help="Seeds (few-shot draws); default 3 with --shots, else 1")] = None,
    features: Annotated[str, typer.Option(help="x (backbone output), E (projected), or x,E")] = "x,E",
    protocol: Annotated[str, typer.Option(help="clip_benchmark: CLIP_benchmark's torch probe (AdamW, weight decay "
                                               "searched on validation); sklearn: L-BFGS logistic regression with "
                                               "λ searched on validation (the CLIP paper)")] = "clip_benchmark",
    knn_k: Annotated[int, typer.Option(help="Neighbours that vote in the kNN classifier")] = 20,
    val_proportion: Annotated[float, typer.Option(help="Share of each training part held out to choose the "
                                                       "regularisation (0: none)")] = 0.2,
    lr: Annotated[float, typer.Option(help="clip_benchmark protocol: learning rate")] = 0.1,
    epochs: Annotated[int, typer.Option(help="clip_benchmark protocol: epochs")] = 10,
    probe_batch_size: Annotated[int, typer.Option(help="clip_benchmark protocol: batch size")] = 64,
    normalize: Annotated[bool, typer.Option(help="L2-normalise the features (CLIP_benchmark's default)")] = True,
    cache: Cache = None,
    window: Window = None,
    hop: Hop = None,
    precision: Precision = "fp32",
    compile_mode: Compile = "none",
    audio_dir: Annotated[Path | None, typer.Option(help="audioset:/vggsound: the downloaded clips")] = None,
    bootstrap: Annotated[int, typer.Option(help="Resamples of the items for 95% intervals (0: none)")] = 1000,
    seed: Annotated[int, typer.Option(help="First seed (splits, probes, few-shot draws, bootstrap)")] = 0,
    batch_size: int = 32,
    device: Device = "auto",
    workers: Workers = 0,
    skip_bad: SkipBad = False,
) -> None:
    """Linear probe, few-shot probe and kNN on the frozen media features x and E:
    leave-one-fold-out over the set's own folds (ESC-50, UrbanSound8K), else its train/test
    split (--train-split), else stratified --cv folds. Top-1 with a 95% bootstrap interval."""
    from ..errors import ClapkitError
    from ..evaluation.probe import (
        ProbeOptions,
        load_probe_data,
        probe_eval,
        probe_splits,
    )
    from ..inference.embed import FEATURES, inference_compile, inference_precision
    from ..inference.features import embed_items

    kinds = [k.strip() for k in features.split(",") if k.strip()]
    if not kinds or set(kinds) - set(FEATURES) or len(set(kinds)) != len(kinds):
        raise ClapkitError(f"--features {features!r}: give x, E or x,E")
    opts = ProbeOptions(protocol, shots, seeds or (3 if shots else 1), seed, knn_k, val_proportion, lr, epochs,
                        probe_batch_size, normalize, bootstrap)
    opts.check()
    dev = _device(device)
    net = _load_model(model, dev)
    pd = load_probe_data(data, net.medium, _fold_list(folds), _class_list(classes), split, train_split, skip_bad,
                         audio_dir)
    splits, rule = probe_splits(pd.y, pd.folds, cv, seed, pd.train_mask)
    with inference_precision(precision, dev), inference_compile(compile_mode):
        feats, made = embed_items(net, pd.items, kinds, batch_size, dev, workers, cache, model, _windows(window, hop),
                                  progress=True)
    r, _ = probe_eval(feats, pd.y, pd.class_names, splits, opts, where=data)
    r.update(model=str(model), model_provenance=describe(str(model), net), data=data, split=split, train_split=train_split, splits=rule, skipped=pd.skipped,
             precision=precision, compile=compile_mode, **made)
    _write_json(r, out)
    typer.echo(f"probe {data}: {len(pd.items)} items, {len(pd.class_names)} classes, {rule['rule']}"
               + (f", {shots}-shot x {opts.seeds} seeds" if shots else "") + f" ({protocol}; chance {r['chance']:.3f})")
    for kind, f in r["features"].items():
        def shown(m: dict) -> str:
            ci = m.get("ci", {}).get("top1")
            return f"{m['top1']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

        typer.echo(f"  {kind} (dim {f['dim']}): linear top-1 {shown(f['linear'])}, kNN (k={knn_k}) top-1 {shown(f['knn'])}")
