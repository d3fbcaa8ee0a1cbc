"""`clapkit demo`, `clapkit experiment ...` and `clapkit config`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import ClapkitError
from .common import (
    Cache,
    Compile,
    ConfigOpt,
    Device,
    Precision,
    SetOpt,
    SkipBad,
    Workers,
    _config,
    _device,
    app,
    experiment_app,
)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder")] = Path("demo-out"),
    modality: Annotated[str, typer.Option(help="audio (a CLAP) or image (a CLIP)")] = "audio",
    set_: SetOpt = None,
) -> None:
    """The whole pipeline on the embedded synthetic set, offline (see clapkit.demo)."""
    from ..demo import run_demo

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



@experiment_app.command("leakage-matrix")
def leakage_matrix_cmd(
    out: Annotated[Path, typer.Option(help="Experiment folder")],
    config: Annotated[str, typer.Option(help="Preset (leakage-cpu, leakage-paper, leakage-towers) or YAML file")] = "leakage-cpu",
    set_: SetOpt = None,
) -> None:
    """Dirty/clean training x dirty/clean/none backbone pre-training: accuracy, silhouettes, S, t-SNE."""
    from ..experiments.leakage import TRAININGS, run_leakage_matrix

    r = run_leakage_matrix(_config(config, set_), out)
    for t in TRAININGS:
        row = ", ".join(f"{p} {r['cells'][f'{t}_{p}']['zeroshot_accuracy']:.3f}" for p in ("dirty", "clean", "none"))
        typer.echo(f"{t} training: {row}")
    typer.echo(f"chance {r['chance']:.3f}; ordering as in the paper: {r['ordering']['all']}; tables in {out / 'results.md'}")



@experiment_app.command("improvement")
def improvement_cmd(
    out: Annotated[Path, typer.Option(help="Experiment folder")],
    config: Annotated[str, typer.Option(help="Preset (improvement-cpu) or YAML file")] = "improvement-cpu",
    set_: SetOpt = None,
) -> None:
    """Teacher -> DU/DS curation -> hard/soft-label students -> zero-shot table."""
    from ..experiments.improvement import run_improvement

    r = run_improvement(_config(config, set_), out)
    for name, accs in r["zeroshot"].items():
        typer.echo(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in accs.items()))
    typer.echo(f"chance: {r['chance']}; table in {out / 'results.md'}")


@experiment_app.command("language-encoder")
def language_encoder_cmd(
    out: Annotated[Path, typer.Option(help="Experiment folder")],
    config: Annotated[str, typer.Option(help="Preset (language-encoder-image-cpu, language-encoder-audio-cpu, ...) "
                                             "or YAML file")] = "language-encoder-image-cpu",
    set_: SetOpt = None,
) -> None:
    """S0's study: the text tower as is, initialised from (un)supervised SimCSE, or trained jointly with it,
    over seeds: zero-shot, retrieval, STS, transfer, uniformity, alignment, modality gap, and S0's findings."""
    from ..experiments.language import run_language_encoder

    r = run_language_encoder(_config(config, set_), out)
    for v, row in r["table"].items():
        typer.echo(f"{v}: " + ", ".join(f"{m} {x['mean']:.3f}+-{x['std']:.3f}" for m, x in row.items()))
    for line in r["findings"]:
        typer.echo(line)
    typer.echo(f"table in {out / 'results.md'}")


@app.command("config")
def show_config(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Every section, not only those the preset's recipe reads")] = False,
) -> None:
    """Print the resolved config: the sections its recipe reads (every key of them, with the
    preset and overrides applied), or every section with --all or when no recipe is named."""
    import yaml

    from ..config import list_presets, load_config, recipe_view

    cfg = load_config(config, set_)
    typer.echo(yaml.safe_dump(cfg if all_ else recipe_view(cfg), sort_keys=False).rstrip())
    typer.echo(f"# presets: {', '.join(list_presets())}")


@app.command("formats")
def show_formats(
    markdown: Annotated[bool, typer.Option("--markdown", help="The README's tables (Markdown) instead of plain text")] = False,
    example: Annotated[Path | None, typer.Option(help="Write a minimal valid copy of every format's layout "
                                                      "into this folder (one sub-folder per kind)")] = None,
) -> None:
    """Every data spec kind clapkit reads (KIND:PATH), by medium and role: the registry
    of clapkit.data.specs that the loaders and this command line's help read."""
    from ..data import specs

    if example is not None:
        for k in specs.all_kinds():
            if k.example is not None:
                folder = example / f"{k.role}-{'-'.join(k.media)}-{k.kind}"
                folder.mkdir(parents=True, exist_ok=True)
                spec, _ = k.example(folder)
                typer.echo(spec)
        return
    for medium in specs.MEDIA:
        roles = tuple(r for r in specs.ROLES if specs.kinds(r, medium))
        if markdown:
            typer.echo(f"{medium.capitalize()}:\n\n{specs.markdown_table(medium, roles)}\n")
            continue
        typer.echo(f"{medium}:")
        for role in roles:
            for k in specs.kinds(role, medium):
                typer.echo(f"  {k.kind + (':' + k.arg if not k.bare else ''):22} {specs.ROLES[role]:16} {k.layout}")


@app.command("bench")
def bench(
    config: Annotated[str, typer.Option("--config", help="A bench file (models and tasks as data) or a shipped preset")],
    out: Annotated[Path, typer.Option(help="Output folder: cells/, results.csv/.md/.jsonl, pairs.csv, results.png; "
                                           "rerun with the same --out to resume")],
    model: Annotated[list[str] | None, typer.Option("--model", help="NAME=MODEL or MODEL (repeat): replaces the "
                                                                    "file's models")] = None,
    data_root: Annotated[Path | None, typer.Option(help="What {data} means in the bench file")] = None,
    shard: Annotated[str | None, typer.Option(help="K/N: run every N-th pending cell, from the K-th")] = None,
    bootstrap: Annotated[int | None, typer.Option(help="Resamples for the intervals (default: the file's, else 1000)")] = None,
    prompt_sweep: Annotated[bool, typer.Option(help="Zero-shot tasks: also score every registered prompt set on the "
                                                    "same embeddings (rows top1[prompts=NAME], the spread)")] = False,
    manifest: Annotated[list[Path] | None, typer.Option(help="Another copy's `clapkit manifest` (repeat): zero-shot "
                                                             "cells record which items differ")] = None,
    intersect: Annotated[bool, typer.Option(help="Zero-shot tasks: score only the items every --manifest holds with "
                                                 "the same content")] = False,
    cache: Cache = None,
    precision: Precision = "fp32",
    compile_mode: Compile = "none",
    batch_size: int = 32,
    device: Device = "auto",
    workers: Workers = 0,
    skip_bad: SkipBad = False,
) -> None:
    """Every model on every task of a bench file, with 95% intervals, paired tests and the
    leakage columns, into one table (CSV, Markdown, JSON Lines) and a figure."""
    from ..experiments.bench import load_bench, run_bench

    spec = load_bench(config, data_root, model)
    if bootstrap is not None:
        if bootstrap < 0:
            raise ClapkitError(f"--bootstrap {bootstrap}: give 0 (no intervals) or a number of resamples")
        spec["bootstrap"] = bootstrap
    from ..inference.embed import inference_compile

    with inference_compile(compile_mode):
        result = run_bench(spec, out, shard, _device(device), batch_size, workers, skip_bad, cache=cache,
                           precision=precision, prompt_sweep=prompt_sweep, manifests=manifest or (), intersect=intersect)
    from ..distributed import is_main

    if not is_main():  # under torchrun the first process writes the table and prints it
        return
    typer.echo(f"bench {spec['source']}: ran {len(result['ran'])} cell(s), {result['skipped_done']} already done "
               f"(shard {result['shard']}); {result['rows']} rows in {out / 'results.csv'}")
    typer.echo((out / "results.md").read_text())


@app.command("reproduce")
def reproduce(
    card: Annotated[str | None, typer.Argument(help="A shipped card's name (--list shows them) or a card YAML file")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", help="NAME=MODEL or MODEL (repeat: two models get a "
                                                                    "paired difference, except on an STS card)")] = None,
    data_root: Annotated[Path | None, typer.Option(help="What {data} means in the card: the folder holding the "
                                                        "dataset in its owner's layout")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder: reproduction.json, the bench's cells and table")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the shipped cards with their published values")] = False,
    check: Annotated[bool, typer.Option("--check", help="Read the data, open every file and build the prompts as the "
                                                        "card says, without a model: what a run would score")] = False,
    bootstrap: Annotated[int | None, typer.Option(help="Resamples for the interval (default: the card's, else 1000)")] = None,
    cache: Cache = None,
    precision: Precision = "fp32",
    compile_mode: Compile = "none",
    batch_size: int = 32,
    device: Device = "auto",
    workers: Workers = 0,
) -> None:
    """Run a reproduction card (one published row: model, data, prompts, folds, metric and
    published value) and say whether the measured value agrees, with its 95% interval and
    every way the run departed from the card."""
    from ..experiments.reproduce import list_cards, load_card, summary
    from ..experiments.reproduce import reproduce as run

    if list_:
        for name in list_cards():
            c = load_card(name)
            p = c["published"]
            typer.echo(f"{name:34} {c['metric']:26} {p['value']:<8g} {c['title']}\n{'':34} {p['source']} ({p['where']})")
        return
    if card is not None and check:
        import json

        from ..experiments.reproduce import check_protocol

        typer.echo(json.dumps(check_protocol(load_card(card), data_root), indent=1))
        return
    if card is None or out is None:
        raise ClapkitError("give a CARD (or --list) and --out")
    if bootstrap is not None and bootstrap < 0:
        raise ClapkitError(f"--bootstrap {bootstrap}: give 0 (no interval) or a number of resamples")
    from ..inference.embed import inference_compile

    with inference_compile(compile_mode):
        record = run(load_card(card), list(model or []), out, data_root, _device(device), batch_size, workers,
                     precision, cache, bootstrap)
    typer.echo(summary(record))
    typer.echo(f"wrote {out / 'reproduction.json'}")
