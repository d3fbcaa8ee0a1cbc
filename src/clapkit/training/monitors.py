"""Evaluators a run logs beside its losses, and the monitor that picks its best checkpoint.

``train.eval`` names evaluation data; every ``train.eval_every`` windows (and at the
last) each named evaluator adds its metrics to the log row:

- ``zeroshot: SPEC`` (a labelled set: ``esc50:``, ``folder:``, ``mnist:``, ...):
  ``zeroshot_top1``, ``zeroshot_top5`` (x 100 is not applied: fractions), with the
  medium's default prompt, as ``clapkit eval zeroshot`` scores it;
- ``retrieval: SPEC`` (caption pairs): ``retrieval_r1`` / ``_r5`` / ``_r10``, the mean
  of text-to-media and media-to-text R@k (fractions), as ``clapkit eval retrieval``;
- ``sts_dev: stsb:DIR``: ``stsb_dev``, STS-B dev Spearman x 100 of the cosine of the
  text tower's backbone output (the sentence embedding S0 studies).

``train.monitor`` picks one metric of the row to select ``checkpoint/``, drive early
stopping and the plateau schedule; its direction follows its name (``*loss``: lower is
better, anything else: higher). ``auto`` is the recipe's own: the validation loss of the
training objective for CLAP/CLIP (the training loss when there is no validation set),
STS-B dev for ``train cse``, validation accuracy for the audio backbone. The monitor is
computed every window, whatever ``eval_every`` says.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from .loop import Monitor

METRICS = {"zeroshot": ("zeroshot_top1", "zeroshot_top5"),
           "retrieval": ("retrieval_r1", "retrieval_r5", "retrieval_r10"),
           "sts_dev": ("stsb_dev",)}


class Evaluators:
    """The evaluators of ``train.eval`` for one run; data is read once, at the start,
    so a bad spec fails before the first step."""

    def __init__(self, cfg: dict, medium: str | None, device: torch.device, allowed=("zeroshot", "retrieval", "sts_dev")):
        t = cfg["train"]
        self.cfg, self.medium, self.device = cfg, medium, device
        self.every = int(t.get("eval_every", 1))
        if self.every < 1:
            raise ConfigError(f"train.eval_every = {self.every}: give 1 or more (windows between evaluations)")
        given = {k: v for k, v in (t.get("eval") or {}).items() if v}
        refused = sorted(set(given) - set(allowed))
        if refused:
            raise ConfigError(f"train.eval.{refused[0]}: this recipe has no {'text tower' if medium is None else medium} "
                              f"to score it with; it takes {', '.join(allowed) or 'none'}")
        self.data = {}
        skip = cfg["runtime"]["skip_bad"]
        if "zeroshot" in given:
            from ..data.media import load_labelled_media

            self.data["zeroshot"] = load_labelled_media(given["zeroshot"], medium, skip_bad=skip, checked=True)
        if "retrieval" in given:
            from ..data.files import Skipped
            from ..data.media import load_media_pairs

            self.data["retrieval"] = load_media_pairs(cfg, given["retrieval"], Skipped(), checked=True)
        if "sts_dev" in given:
            from ..data.text.sts import load_sts

            self.data["sts_dev"] = load_sts(given["sts_dev"], "dev")[0]

    def names(self) -> list[str]:
        return [m for k in self.data for m in METRICS[k]]

    @torch.no_grad()
    def __call__(self, model, window: int, last: bool, monitor: str) -> dict:
        """The metrics of window ``window`` (1-based): every evaluator on an evaluation
        window or the last, only the monitor's on the others (NaN for the rest)."""
        bs = self.cfg["runtime"]["eval_batch_size"]
        due = last or window % self.every == 0
        out = {}
        for kind, data in self.data.items():
            names = METRICS[kind]
            if not due and monitor not in names:
                out.update({n: math.nan for n in names})
                continue
            if kind == "zeroshot":
                from ..evaluation.zeroshot import zeroshot_eval

                r = zeroshot_eval(model, data, batch_size=bs, device=self.device)
                out.update(zeroshot_top1=r["top1"], zeroshot_top5=r.get("top5", math.nan))
            elif kind == "retrieval":
                from ..evaluation.retrieval import retrieval_eval

                r = retrieval_eval(model, data, batch_size=bs, device=self.device)
                m = model.medium
                for k in (1, 5, 10):
                    out[f"retrieval_r{k}"] = 0.5 * (r[f"text_to_{m}"][f"R@{k}"] + r[f"{m}_to_text"][f"R@{k}"])
            else:
                from ..evaluation.sts import SentenceEncoder, evaluate_set

                out["stsb_dev"] = evaluate_set(SentenceEncoder.of_model(model, device=self.device), data, bs)["spearman"]
        return out


def pick_monitor(cfg: dict, known: list[str], auto: str, fallback: str | None, evaluators: Evaluators) -> Monitor:
    """``train.monitor`` among the metrics this run logs (``auto``: the recipe's own)."""
    name = cfg["train"].get("monitor", "auto")
    if name == "auto":
        name = auto
    metrics = [*known, *evaluators.names()]
    if name not in metrics:
        hint = next((f"; it comes from train.eval.{k}" for k, ms in METRICS.items() if name in ms), "")
        raise ConfigError(f"train.monitor = {name!r}: this run logs {', '.join(metrics)}{hint}")
    return Monitor(name, Monitor.direction(name), fallback if name == auto else None)


def clap_monitor(cfg: dict, evaluators: Evaluators) -> Monitor:
    return pick_monitor(cfg, ["val_loss", "train_loss"], "val_loss", "train_loss", evaluators)
