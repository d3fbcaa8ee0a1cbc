"""The command line's shared pieces: the Typer apps, option types, and the helpers that
turn options into configs, data and models."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..data import specs
from ..errors import ClapkitError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="The clapkit command line. Every metric command writes JSON and prints a summary.")
train_app = typer.Typer(no_args_is_help=True, help="Train models.")
eval_app = typer.Typer(no_args_is_help=True, help="Evaluate models; results as JSON.")
app.add_typer(train_app, name="train")
audit_app = typer.Typer(no_args_is_help=True, help="Audit zero-shot claims.")
experiment_app = typer.Typer(no_args_is_help=True, help="End-to-end experiments from one config.")
app.add_typer(experiment_app, name="experiment")
app.add_typer(eval_app, name="eval")
app.add_typer(audit_app, name="audit")

# the spec kinds each option takes, from the registry (clapkit.data.specs; `clapkit formats`)
LABELLED_HELP = specs.help_for(specs.LABELLED, "audio", "image")
PAIRS_HELP = (specs.help_for(specs.PAIRS, "audio", "image")
              + "; a labelled set gives one pair per item and label template")
NAMES_HELP = specs.help_for(specs.NAMES, "text")
STS_HELP = specs.help_for(specs.STS, "text")

SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config key: --set train.batch_size=32")]
SkipBad = Annotated[bool, typer.Option("--skip-bad", help="Skip bad rows/files and count them in the output instead of failing")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")]
Checkpoint = Annotated[Path, typer.Option("--model", help="clapkit checkpoint folder; a Hugging Face ClapModel, CLIPModel, "
                                          "SiglipModel or PeAudioModel folder or hub name (or a sentence-transformers "
                                          "folder holding one); a LAION-CLAP .pt; msclap's CLAP_weights_2022/2023.pth; "
                                          "open_clip:NAME@PRETRAINED (clapkit[open_clip])")]
Workers = Annotated[int, typer.Option("--workers", help="DataLoader processes that decode the media (results do not depend on it)")]
MetricsJson = Annotated[Path | None, typer.Option("--out", help="JSON file for the metrics")]
Window = Annotated[float | None, typer.Option("--window", help="Long clips: window seconds (sliding windows instead "
                                                                "of the centre segment)")]
Hop = Annotated[float | None, typer.Option("--hop", help="Long clips: seconds between window starts (default: the window)")]
Pool = Annotated[str, typer.Option("--pool", help="Long clips: mean (of the windows' normalised embeddings) or max "
                                                  "(of the windows' scores; zero-shot)")]
Cache = Annotated[Path | None, typer.Option("--cache", help="Embedding cache folder: media embeddings reused across "
                                                            "commands and runs (eval, embed, probe, bench, curate)")]
Precision = Annotated[str, typer.Option("--precision", help="fp32, or bf16 (autocast on CPU or CUDA)")]
Compile = Annotated[str, typer.Option("--compile", help="none (eager), default or reduce-overhead: torch.compile of "
                                                        "the towers (reduce-overhead: CUDA graphs on CUDA, as default "
                                                        "on CPU); a model that cannot compile runs eager, with a warning")]
ConfigOpt = Annotated[str | None, typer.Option("--config", help="Preset name (see `clapkit config`) or YAML file")]


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _device(name: str):
    """The device, after joining the process group under ``torchrun`` (evaluation then
    splits its batches over the processes; only the first writes and prints)."""
    from ..distributed import init_distributed
    from ..training.common import pick_device

    _, world = init_distributed()
    if world > 1 and not is_main():
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    return pick_device(name)


def is_main() -> bool:
    from ..distributed import is_main as main

    return main()


def _write_json(obj: dict, path: Path | None) -> None:
    from ..distributed import rank_world

    if path is None or not is_main():
        return
    obj.setdefault("world_size", rank_world()[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))
    typer.echo(f"wrote {path}")


def _config(config: str | None, overrides: list[str] | None, skip_bad: bool = False) -> dict:
    from ..config import load_config

    return load_config(config, list(overrides or []) + (["runtime.skip_bad=true"] if skip_bad else []))


def _labelled(data: str, folds: str | None, classes: str | None, skip_bad: bool, medium: str = "audio",
              split: str | None = None, media_dir: Path | None = None):
    """A labelled set of ``medium`` with its fold/class selection and its files checked."""
    from ..data.media import load_labelled_media

    return load_labelled_media(data, medium, _fold_list(folds), _class_list(classes), skip_bad, checked=True,
                               split=split, media_dir=media_dir)


def _fold_list(folds: str | None) -> list[int] | None:
    try:
        return [int(f) for f in folds.split(",")] if folds else None
    except ValueError as exc:
        raise ClapkitError(f"--folds {folds!r}: expected comma-separated integers, e.g. 1,2,3") from exc


def _class_list(classes: str | None) -> list[str] | None:
    return [c.strip() for c in classes.split(",")] if classes else None


def _windows(window: float | None, hop: float | None, pool: str = "mean"):
    """The sliding windows the options ask for (None: the centre segment)."""
    if window is None:
        if hop is not None or pool != "mean":
            raise ClapkitError("--hop and --pool need --window SECONDS")
        return None
    from ..inference.windows import Windows

    return Windows(window, hop, pool)


def _load_model(path: Path, device):
    """Any dual encoder the loader reads (:func:`clapkit.models.public.loader.load_model`)."""
    from ..models.public.loader import load_model

    return load_model(path, device)

AudioColumn = Annotated[str, typer.Option(help="csv:/jsonl: column or key of the audio path")]
CaptionColumn = Annotated[str, typer.Option(help="csv:/jsonl: column or key of the caption")]
AudioDir = Annotated[Path | None, typer.Option(help="Audio folder (clotho:/audiocaps:)")]
ImageDir = Annotated[Path | None, typer.Option(help="Image folder (coco:/karpathy:/flickr:)")]


def _pairs(medium: str, data: str, media_dir: Path | None, audiocaps_pattern: str | None, skip_bad: bool,
           media_column: str | None = None, caption_column: str = "caption", split: str | None = None):
    """Caption pairs of ``medium`` with their files checked, and the skipped record."""
    from ..config import DEFAULTS
    from ..data.files import Skipped
    from ..data.media import load_media_pairs

    cfg = {"model": {"modality": medium}, "runtime": {**DEFAULTS["runtime"], "skip_bad": skip_bad}, "data": {
        **DEFAULTS["data"], "audio_dir": media_dir, "image_dir": media_dir, "audiocaps_pattern": audiocaps_pattern,
        "caption_column": caption_column, "split": split,
        "audio_column": media_column or "audio", "image_column": media_column or "image"}}
    skipped = Skipped()
    return load_media_pairs(cfg, data, skipped, checked=True), skipped


def plain_text(help_text: str) -> str:
    """A help text as the renderer should take it: each paragraph's lines joined (the
    renderer wraps to the terminal; Rich keeps a docstring's own line breaks) and Rich's
    markup escaped, so "[wds:PATTERN]" is shown as written."""
    import inspect

    from rich.markup import escape

    paragraphs = inspect.cleandoc(help_text).split("\n\n")
    return escape("\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs))


def command():
    """The click command tree of :data:`app` with every help text made :func:`plain_text`."""
    group = typer.main.get_command(app)

    def walk(cmd) -> None:
        if cmd.help:
            cmd.help = plain_text(cmd.help)
        for param in cmd.params:
            if getattr(param, "help", None):
                param.help = plain_text(param.help)
        for sub in getattr(cmd, "commands", {}).values():
            walk(sub)

    walk(group)
    return group


def main() -> None:
    _quiet_libraries()
    try:
        command()(prog_name="clapkit")
    except ClapkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)

