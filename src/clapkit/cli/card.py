"""`clapkit card`: write or refresh a model's card (README.md) with its contamination audit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import LABELLED_HELP, NAMES_HELP, PAIRS_HELP, SkipBad, app


@app.command("card")
def card_cmd(
    model: Annotated[str, typer.Argument(help="A clapkit checkpoint or train cse folder, or any model --model takes "
                                              "(a transformers, sentence-transformers or open_clip folder, a "
                                              "LAION-CLAP or msclap weights file, a hub name)")],
    train_data: Annotated[list[str] | None, typer.Option(help=f"The model's training data to audit (repeat): "
                                                              f"{PAIRS_HELP}; a sentence corpus for a text "
                                                              "encoder. Default: what the model records "
                                                              "(data.train), where it is readable here")] = None,
    eval_: Annotated[list[str] | None, typer.Option("--eval", help=f"Evaluation sets (repeat; {LABELLED_HELP}, or "
                                                                   "caption pairs): which of their recordings the "
                                                                   "training data holds, by source id and decoded "
                                                                   "content (perceptual hash too, for images)")] = None,
    results: Annotated[list[Path] | None, typer.Option(help="Result JSON files (repeat): clapkit eval zeroshot / "
                                                            "retrieval / sts, a bench cell, a run's metrics.json")] = None,
    labels: Annotated[list[str] | None, typer.Option(help=f"More class names to scan the captions for (repeat; "
                                                          f"{NAMES_HELP}); ESC-50 and UrbanSound8K (CIFAR-10 for "
                                                          "image models, all three for a text encoder) are "
                                                          "always scanned")] = None,
    out: Annotated[Path | None, typer.Option(help="The card file (default: MODEL/README.md for a folder)")] = None,
    media_dir: Annotated[Path | None, typer.Option(help="Media folder of the training caption sets (clotho:, "
                                                        "audiocaps:, ...)")] = None,
    eval_dir: Annotated[Path | None, typer.Option(help="Media folder of the evaluation sets")] = None,
    fresh: Annotated[bool, typer.Option(help="Start over: read the training data again and drop the results and "
                                             "overlap evidence of the card it replaces")] = False,
    skip_bad: SkipBad = False,
) -> None:
    """Write or refresh a model card (README.md, Hugging Face layout): the recipe, the
    training data with counts and fingerprints, the results with their intervals, and the
    contamination audit: the evaluation classes the training captions name (by the
    paper's rule and by all rules) and, with --eval, the evaluation recordings the
    training data holds."""
    from ..audit.card import refresh_card

    path, info = refresh_card(model, list(train_data or []), list(eval_ or []), list(results or []), out,
                              list(labels or []), media_dir, eval_dir, skip_bad, fresh)
    typer.echo(f"wrote {path}: {len(info.results)} result(s), datasets {', '.join(info.datasets or []) or 'unknown'}")
    for s in (info.leakage or {}).values():
        typer.echo(f"  {s['name']}: {len(s['named_paper'])} of {s['classes']} classes named by the paper's rule, "
                   f"{len(s['named_all'])} by all rules ({s['dirty_texts']} of {s['texts']} captions)")
    if info.leakage is None:
        typer.echo("  class names: not scanned (no readable training data; give --train-data)")
    for o in info.overlap:
        typer.echo(f"  {o['eval']}: {o['eval_items_matched']} of {o['eval_items']} evaluation items are in the "
                   "training data")
