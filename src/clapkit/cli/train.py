"""`clapkit train ...`: CLAP, CLIP, sentence encoders, audio backbones."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import ClapkitError
from .common import (
    PAIRS_HELP,
    AudioDir,
    CaptionColumn,
    ConfigOpt,
    ImageDir,
    SetOpt,
    SkipBad,
    _config,
    _pairs,
    app,
    train_app,
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
    from ..training.clap import train_clap

    s = train_clap(_config(config, set_, skip_bad), out, resume=resume)
    from ..training.common import is_main

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
    from ..training.clap import train_clap
    from ..training.common import is_main

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
    from ..training.common import is_main
    from ..training.cse import train_cse

    s = train_cse(_config(config, set_, skip_bad), out, resume=resume)
    if not is_main():
        return
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
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last epoch")] = False,
) -> None:
    """Supervised pre-training of the audio tower on a labelled set (include/exclude classes)."""
    from ..training.backbone import train_audio_backbone
    from ..training.common import is_main

    s = train_audio_backbone(_config(config, set_, skip_bad), out, resume=resume)
    if not is_main():
        return
    if "stopped" in s:
        typer.echo(f"stopped ({s['stopped']}) after {s['steps']} steps; continue with --resume")
        return
    name = s["monitor"]
    typer.echo(f"{len(s['classes'])} classes, {s['train_clips']} clips: best {name.replace('_', ' ')} "
               f"{s[f'best_{name}']:.3f} at epoch {s['best_epoch']} (chance {s['chance']:.3f}); weights in {s['weights']}")


@app.command()
def shards(
    data: Annotated[str, typer.Option(help=f"Any caption manifest clapkit reads ({PAIRS_HELP})")],
    out: Annotated[Path, typer.Option(help="Folder for the shards (shard-000000.tar, ...)")],
    shard_size: Annotated[int, typer.Option(help="Samples (media files) per shard")] = 1000,
    modality: Annotated[str, typer.Option(help="audio or image")] = "audio",
    audio_dir: AudioDir = None,
    image_dir: ImageDir = None,
    split: Annotated[str | None, typer.Option(help="karpathy: the split to write")] = None,
    media_column: Annotated[str | None, typer.Option(help="csv:/jsonl: column of the media path (default: audio / image)")] = None,
    caption_column: CaptionColumn = "caption",
    skip_bad: SkipBad = False,
) -> None:
    """Write a manifest as WebDataset tar shards ({key}.<ext> + {key}.json with its captions, + .txt when it has
    one), the format LAION-CLAP and open_clip train from; train on them with data.train=[wds:PATTERN]."""
    from ..data.files import TarMember
    from ..data.shards import shard_pattern, write_shards

    if modality not in ("audio", "image"):
        raise ClapkitError(f"--modality {modality!r}: choose audio or image")
    pairs, skipped = _pairs(modality, data, audio_dir if modality == "audio" else image_dir, None, skip_bad,
                            media_column, caption_column, split)
    if not pairs:
        raise ClapkitError(f"{data}: no pairs to write")

    def read(media) -> tuple[bytes, str]:
        if isinstance(media, TarMember):
            return media.read(), media.suffix.lstrip(".").lower()
        return Path(media).read_bytes(), Path(media).suffix.lstrip(".").lower()

    written = write_shards(pairs, out, shard_size, read)
    typer.echo(f"wrote {len(written)} shard(s) of up to {shard_size} samples ({len({p.media for p in pairs})} "
               f"{'clips' if modality == 'audio' else 'images'}, {len(pairs)} captions; skipped {skipped.count}): "
               f"{shard_pattern(written)}")
