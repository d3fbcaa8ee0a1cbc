"""The monitor that picks a run's best checkpoint.

``train.monitor`` picks one metric of the log row to select ``checkpoint/``, drive early
stopping and the plateau schedule; its direction follows its name (``*loss``: lower is
better, anything else: higher). ``auto`` is the recipe's own: the validation loss of the
training objective for CLAP/CLIP (the training loss when there is no validation set),
STS-B dev for ``train cse``, validation accuracy for the audio backbone. Besides the
recipe's own metrics, any evaluator's of ``train.eval`` (:mod:`.evaluators`) can be the
monitor; the monitor is computed every window, whatever ``eval_every`` says.
"""

from __future__ import annotations

from ..errors import ConfigError
from .evaluators import Evaluators, metric_source
from .loop import Monitor

__all__ = ["Evaluators", "clap_monitor", "pick_monitor"]


def pick_monitor(cfg: dict, known: list[str], auto: str, fallback: str | None, evaluators: Evaluators) -> Monitor:
    """``train.monitor`` among the metrics this run logs (``auto``: the recipe's own)."""
    name = cfg["train"].get("monitor", "auto")
    if name == "auto":
        name = auto
    metrics = [*known, *evaluators.names()]
    if name not in metrics:
        source = metric_source(name)
        hint = f"; it comes from train.eval.{source}" if source else ""
        raise ConfigError(f"train.monitor = {name!r}: this run logs {', '.join(metrics)}{hint}")
    return Monitor(name, Monitor.direction(name), fallback if name == auto else None)


def clap_monitor(cfg: dict, evaluators: Evaluators) -> Monitor:
    return pick_monitor(cfg, ["val_loss", "train_loss"], "val_loss", "train_loss", evaluators)
