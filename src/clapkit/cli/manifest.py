"""`clapkit manifest`: which files a copy of an evaluation set holds, with their SHA-256."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import ClapkitError
from .common import LABELLED_HELP, PAIRS_HELP, _labelled, _pairs, app


@app.command("manifest")
def manifest(
    spec: Annotated[str, typer.Argument(metavar="SPEC", help=f"The evaluation set: a labelled set ({LABELLED_HELP}) or caption "
                                             f"pairs ({PAIRS_HELP})")],
    out: Annotated[Path, typer.Option("--out", help="The manifest's JSON file")],
    medium: Annotated[str, typer.Option(help="audio or image")] = "audio",
    split: Annotated[str | None, typer.Option(help="The set's split, where it has them")] = None,
    audio_dir: Annotated[Path | None, typer.Option(help="Media folder, where the spec's kind takes one "
                                                        "(clotho:/audiocaps:/audioset:; coco:/karpathy:/flickr:)")] = None,
) -> None:
    """Write a manifest of an evaluation set: each file's path relative to the set's root
    folder, its SHA-256, size and label, so copies held by different labs can be compared
    (missing clips, re-encoded files). Missing or unreadable files are counted, not fatal."""
    from ..data.manifest import build_manifest, write_manifest
    from ..data.media import is_labelled_set

    if medium not in ("audio", "image"):
        raise ClapkitError(f"--medium {medium!r}: choose audio or image")
    if is_labelled_set(spec, medium):
        labelled = _labelled(spec, None, None, True, medium, split, audio_dir)
        items, skipped, names = labelled.clips, labelled.skipped, labelled.class_names
    else:
        items, skipped = _pairs(medium, spec, audio_dir, None, True, split=split)
        names = None
    if not items:
        raise ClapkitError(f"{spec}: no readable files ({skipped.count} missing or skipped)")
    m = build_manifest(items, spec, medium, class_names=names)
    m["skipped"] = {"count": skipped.count, "by_reason": dict(skipped.reasons)}
    write_manifest(m, out)
    typer.echo(f"manifest {spec}: {m['count']} files ({len(items)} items), {skipped.count} missing or skipped; "
               f"wrote {out}")
