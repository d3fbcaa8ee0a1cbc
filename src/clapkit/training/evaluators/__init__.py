"""Evaluators a run logs beside its losses (``train.eval``), by name, one file each.

``train.eval`` maps an evaluator's name to its data; every ``train.eval_every`` windows
(and at the last) each named evaluator adds its metrics to the log row, and any of them
can be ``train.monitor``. An evaluator's file in this package registers it::

    @register_evaluator("zeroshot", ("zeroshot_top1", "zeroshot_top5"), needs="media")
    class ZeroShot:
        def __init__(self, spec, cfg, medium): ...  # read the data now: a bad spec fails before step 1
        def __call__(self, model, batch_size, device) -> dict: ...  # its metrics

and :class:`Evaluators` imports every file here on its first use, so a new evaluator is
one new file. ``needs`` says what the model must have: ``media`` (a dual encoder's
media tower: zero-shot, retrieval) or ``text`` (a text tower: STS-B dev). Registered:

- ``zeroshot: SPEC`` (a labelled set): ``zeroshot_top1``, ``zeroshot_top5``
  (fractions), with the medium's default prompt, as ``clapkit eval zeroshot`` scores it;
- ``retrieval: SPEC`` (caption pairs): ``retrieval_r1`` / ``_r5`` / ``_r10``, the mean
  of text-to-media and media-to-text R@k (fractions), as ``clapkit eval retrieval``;
- ``sts_dev: stsb:DIR``: ``stsb_dev``, STS-B dev Spearman x 100 of the cosine of the
  text tower's backbone output (the sentence embedding S0 studies).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...discovery import import_package
from ...errors import ConfigError


@dataclass(frozen=True)
class Registered:
    name: str
    metrics: tuple[str, ...]
    needs: str
    make: type
    module: str


_EVALUATORS: dict[str, Registered] = {}


def register_evaluator(name: str, metrics: tuple[str, ...], needs: str = "media"):
    """Register the decorated class as ``train.eval.<name>`` logging ``metrics``."""
    if needs not in ("media", "text"):
        raise ValueError(f"evaluator {name!r}: needs {needs!r}; choose media or text")

    def register(cls: type) -> type:
        known = _EVALUATORS.get(name)
        if known is not None and known.module != cls.__module__:
            raise ValueError(f"evaluator {name!r} is registered by {known.module} already")
        _EVALUATORS[name] = Registered(name, tuple(metrics), needs, cls, cls.__module__)
        return cls

    return register


def registered() -> dict[str, Registered]:
    import_package(__name__)
    return dict(_EVALUATORS)


def metric_source(metric: str) -> str | None:
    """The evaluator that logs ``metric``, if one does."""
    return next((r.name for r in registered().values() if metric in r.metrics), None)


class Evaluators:
    """The evaluators of ``train.eval`` for one run; their data is read once, at the
    start. ``allowed``: the evaluator names this recipe can score (None: every one its
    model can: those needing media when ``medium`` is given, and those needing text)."""

    def __init__(self, cfg: dict, medium: str | None, device: torch.device, allowed: tuple[str, ...] | None = None):
        t = cfg["train"]
        self.cfg, self.medium, self.device = cfg, medium, device
        self.every = int(t.get("eval_every", 1))
        if self.every < 1:
            raise ConfigError(f"train.eval_every = {self.every}: give 1 or more (windows between evaluations)")
        known = registered()
        given = {k: v for k, v in (t.get("eval") or {}).items() if v}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ConfigError(f"train.eval.{unknown[0]}: no such evaluator; registered: {', '.join(known)}")
        if allowed is None:
            allowed = tuple(n for n, r in known.items() if r.needs == "text" or medium is not None)
        refused = sorted(set(given) - set(allowed))
        if refused:
            raise ConfigError(f"train.eval.{refused[0]}: this recipe has no {'text tower' if medium is None else medium} "
                              f"to score it with; it takes {', '.join(allowed) or 'none'}")
        self.active = {name: (known[name], known[name].make(spec, cfg, medium)) for name, spec in given.items()}

    def names(self) -> list[str]:
        return [m for reg, _ in self.active.values() for m in reg.metrics]

    @torch.no_grad()
    def __call__(self, model, window: int, last: bool, monitor: str) -> dict:
        """The metrics of window ``window`` (1-based): every evaluator on an evaluation
        window or the last, only the monitor's on the others (NaN for the rest)."""
        bs = self.cfg["runtime"]["eval_batch_size"]
        due = last or window % self.every == 0
        out = {}
        for reg, evaluate in self.active.values():
            if not due and monitor not in reg.metrics:
                out.update({n: math.nan for n in reg.metrics})
                continue
            out.update(evaluate(model, bs, self.device))
        return out
