"""The one training loop: every recipe (CLAP/CLIP, ``train cse``, the audio backbone) runs on it.

A recipe supplies small parts; the loop owns everything a run needs around them:

- **windows** of steps: an epoch (CLAP, the backbone) or ``cse.eval_steps`` steps
  (``train cse``). After each window the loop evaluates, logs one row to
  ``metrics.csv``, keeps the best model by the **monitor**, steps a plateau schedule
  and stops early; every ``runtime.save_every_steps`` steps, and on a SIGTERM, it writes
  ``last/`` mid-window.
- **phases** (``recipe.phase(window)``): when the phase changes the recipe builds its
  updates anew (frozen towers, learning rate, schedule); a resumed run restores the
  saved optimizer states of the phase it stopped in.
- **updates** (:class:`Update`): one optimizer each, with its scheduler, gradient clip
  and what follows a step (the logit-scale cap). A recipe's step back-propagates its
  objective and calls :meth:`Loop.apply` per update; the loop unscales (fp16), clips,
  skips a non-finite step (counted; ``runtime.max_bad_steps`` in a row stop the run) and
  restores BatchNorm statistics a skipped step would have spoilt.
- **weight average** (``train.ema``, :mod:`clapkit.training.ema`): updated after every
  applied step; swapped in for the window's evaluation and for writing ``checkpoint/``
  when asked.
- **state** (``last/trainer_state.pt``): the loop's counters, every update's
  optimizer and scheduler, the fp16 scaler, every process's RNG state, the weight
  average and the recipe's own counters; writing is atomic, and a resume continues
  exactly. Old layouts are upgraded by the recipe (:meth:`Recipe.upgrade_state`).
- **processes** (:mod:`clapkit.training.parallel`): under FSDP the weights and optimizer
  states are shards; :meth:`Loop.save` gathers them (every process takes part), so
  ``checkpoint/`` and ``last/`` are always written whole, by the first process.

A recipe implements :class:`Recipe`; the loop never looks at data, models or losses.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import TrainingError
from . import parallel
from .common import (
    ScalarLogger,
    is_main,
    load_trainer_state,
    on_sigterm,
    save_run,
)
from .ema import WeightAverage

STATE_FORMAT = 2  # trainer_state.pt layout; older ones go through Recipe.upgrade_state

FRESH = {"window": 0, "step": 0, "step_in_window": 0, "window_results": [], "phase": None, "best": None,
         "best_window": -1, "best_step": None, "bad_windows": 0, "bad_steps": 0, "skipped_steps": 0}


@dataclass
class Update:
    """One optimizer over some parameters, with its schedule. ``per_step``: the scheduler
    steps after every applied step (warmup-cosine, linear decay); ``plateau``: a
    ReduceLROnPlateau stepped with the monitor after each window. ``after_step`` runs
    after every applied step (the logit-scale cap)."""

    name: str
    optimizer: torch.optim.Optimizer
    scheduler: Any = None
    grad_clip: float = 0.0
    per_step: bool = False
    plateau: bool = False
    after_step: Callable[[], None] | None = None

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        """The optimizer's state whole (gathered from the shards under FSDP: collective)."""
        return {"optimizer": parallel.optimizer_state(self.optimizer),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None}

    def load_state_dict(self, saved: dict) -> None:
        parallel.load_optimizer_state(self.optimizer, saved["optimizer"])
        if self.scheduler is not None and saved.get("scheduler") is not None:
            self.scheduler.load_state_dict(saved["scheduler"])


@dataclass
class Monitor:
    """The metric that selects the best checkpoint, drives early stopping and the plateau
    schedule: its name in the evaluation row, its direction, and what stands in when it
    is NaN (no validation data): another metric, or None (every window then counts as
    an improvement, so ``checkpoint/`` is the last model)."""

    name: str
    mode: str = "min"  # min | max
    fallback: str | None = None

    @staticmethod
    def direction(name: str) -> str:
        return "min" if "loss" in name else "max"

    def value(self, row: dict) -> float:
        v = row.get(self.name, math.nan)
        if (v is None or math.isnan(v)) and self.fallback:
            v = row.get(self.fallback, math.nan)
        return math.nan if v is None else float(v)

    def initial(self) -> float:
        return math.inf if self.mode == "min" else -math.inf

    def better(self, value: float, best: float | None) -> bool:
        if math.isnan(value):
            return True
        best = self.initial() if best is None else best
        return value < best if self.mode == "min" else value > best


class Recipe:
    """What a recipe gives the loop (override what applies). ``unit`` keys a log row:
    ``epoch`` (windows done) or ``step`` (steps done)."""

    unit = "epoch"
    logs_phase = False  # a recipe with several phases logs each row's

    # the run
    def windows(self) -> int: ...
    def window_length(self, window: int) -> int:
        """Steps of the window (called after :meth:`steps` for it)."""
    def phase(self, window: int) -> str:
        return "train"
    def start_phase(self, phase: str) -> list[Update]: ...
    def begin(self, loop: Loop) -> None:
        """Once, before the first window (after the state is loaded)."""
    def steps(self, window: int, start: int) -> Iterable:
        """The window's batches from its ``start``-th on (``start`` > 0: a resumed window)."""
    def step(self, batch) -> dict | None:
        """One optimisation step; the numbers to log (None: the step was skipped)."""
    def evaluate(self, window: int, results: list[dict]) -> dict:
        """The window's log row, monitors included (the loop adds unit, phase, lr, seconds)."""
    def patience(self, phase: str) -> int:
        return 0
    def summary(self, state: dict) -> dict: ...

    # model and state
    model: torch.nn.Module
    def save(self, folder: Path, model: torch.nn.Module | None = None) -> None:
        """Write the model (``model``: its gathered copy under FSDP) into ``folder``."""
        (model if model is not None else self.model).save(folder)
    def extra_state(self) -> dict:
        return {}
    def load_extra_state(self, saved: dict) -> None:
        pass
    def upgrade_state(self, saved: dict) -> dict:
        """A ``trainer_state.pt`` of an older layout, in this loop's (format 2)."""
        raise TrainingError("last/trainer_state.pt has a layout this version cannot read; start without --resume")


def get_rng(device: torch.device) -> dict:
    """This process's torch RNG state (CPU and its CUDA device)."""
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng(rng: dict, device: torch.device) -> None:
    torch.set_rng_state(rng["cpu"])
    if rng["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)


class Loop:
    """Drives a :class:`Recipe` to its last window (see the module docstring).

    ``options`` are the runtime ones: ``progress``, ``logger``, ``save_every_steps``,
    ``max_bad_steps`` (the config's ``runtime`` section); ``ema`` the ``train.ema`` section
    (None or decay 0: no weight average)."""

    def __init__(self, recipe: Recipe, out: Path, monitor: Monitor, options: dict, precision, device: torch.device,
                 rank: int = 0, world: int = 1, resume: bool = False, ema: dict | None = None):
        self.recipe, self.out, self.monitor, self.options = recipe, Path(out), monitor, options
        self.precision, self.device, self.rank, self.world = precision, device, rank, world
        self.state = {**FRESH, "best": monitor.initial(), "window_results": []}  # a list of this run's own
        self.updates: list[Update] = []
        self._saved_updates: dict | None = None
        self._rng = None  # a mid-window resume: this process's RNG state after the saved step
        self._sigterm = {"stop": False}
        self._skipped = False
        self._norm_stats = [b for m in recipe.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                            for b in m.buffers()]
        self.ema_options = ema if ema and ema.get("decay") else None
        self.ema = None  # built at the start of the run, once the recipe's model is placed (begin)
        if resume:
            saved = load_trainer_state(self.out)
            if saved.get("format") != STATE_FORMAT:
                saved = recipe.upgrade_state(saved)
            self.state = {**self.state, **saved["state"]}
            self._saved_updates = {"phase": self.state["phase"], **saved["updates"]}
            if saved.get("scaler") is not None:
                precision.scaler.load_state_dict(saved["scaler"])
            if self.state["step_in_window"] and saved.get("rng"):
                self._rng = saved["rng"][rank]
            recipe.load_extra_state(saved.get("extra", {}))
            self._saved_ema = saved.get("ema")
            if self.ema_options and self._saved_ema is None and self.state["step"]:
                raise TrainingError(f"{self.out / 'last'}: saved without the weight average that {self.out / 'config.yaml'} "
                                    "sets (train.ema.decay); set train.ema.decay: 0 there, or start a new run")
        self.logger = ScalarLogger(self.out, options["logger"], append=resume) if is_main() else None
        if resume and self.logger:
            self.logger.truncate(self.state["window"] if recipe.unit == "epoch" else self.state["step"])

    # --- steps ---------------------------------------------------------------------------
    def apply(self, update: Update, loss: torch.Tensor) -> bool:
        """Unscale (fp16), clip and apply ``update`` after its backward, unless the loss or
        gradient norm is non-finite: then the step is skipped and counted (see
        :meth:`clapkit.training.common.Precision.finite`). Whether it was applied."""
        p = self.precision
        norm = p.clip(update.optimizer, update.params, update.grad_clip)
        ok = p.finite(loss, norm, self.state, self.state["step"] + 1, self.options["max_bad_steps"], self.out / "last")
        p.step(update.optimizer, skip=not ok)
        if not ok:
            update.zero_grad()
            self._skipped = True
            return False
        if update.after_step is not None:
            update.after_step()
        if update.per_step and update.scheduler is not None:
            update.scheduler.step()
        return True

    def _run_step(self, batch) -> dict | None:
        stats = [(b, b.clone()) for b in self._norm_stats]  # a skipped step must not leave NaN running statistics
        self._skipped = False
        result = self.recipe.step(batch)
        if self._skipped:
            for buf, before in stats:
                buf.copy_(before)
        elif self.ema is not None:
            self.ema.update(self.recipe.model, self.state["step"] + 1)
        return result

    def _start_ema(self) -> None:
        """The weight average of ``train.ema``, from the model as it starts (or as ``last/`` kept it)."""
        if not self.ema_options:
            return
        o = self.ema_options
        self.ema = WeightAverage(self.recipe.model, o["decay"], o["start_step"])
        saved = getattr(self, "_saved_ema", None)
        if saved is not None:
            try:
                self.ema.load_state_dict(saved)
            except ValueError as exc:
                raise TrainingError(f"{self.out / 'last'}: {exc}") from exc

    @contextmanager
    def weights_for(self, use: str):
        """The model with the weights ``use`` (``eval`` or ``checkpoint``) asks for: the
        average where ``train.ema.<use>`` is set, else its own."""
        if self.ema is None or not self.ema_options.get(use, True):
            yield self.recipe.model
        else:
            with self.ema.applied(self.recipe.model) as model:
                yield model

    def _stop_requested(self) -> bool:
        """A SIGTERM reached this process (any process, under DDP: all stop at the same step)."""
        stop = self._sigterm["stop"]
        if self.world == 1:
            return stop
        flag = torch.tensor([float(stop)], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    # --- phases --------------------------------------------------------------------------
    def _enter(self, phase: str) -> None:
        self.updates = self.recipe.start_phase(phase)
        if self.ema is None:  # once, after the recipe has wrapped its model (under FSDP the average is sharded too)
            self._start_ema()
        saved, self._saved_updates = self._saved_updates, None
        if saved is not None and saved["phase"] == phase:
            for u in self.updates:
                if u.name in saved:
                    u.load_state_dict(saved[u.name])
        if self.state["phase"] != phase:  # a new phase restarts the patience count
            self.state["bad_windows"] = 0
        self.state["phase"] = phase

    # --- the run ---------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train to the recipe's last window; a SIGTERM (a scheduler's notice before
        pre-emption) ends the current step, saves ``last/`` and returns with
        ``stopped: SIGTERM``."""
        with on_sigterm() as self._sigterm:
            return self._fit()

    def _fit(self) -> dict:
        r, s, opts = self.recipe, self.state, self.options
        start_time, current, stopped = time.time(), None, None
        r.begin(self)
        while s["window"] < r.windows():
            w = s["window"]
            phase = r.phase(w)
            if phase != current:
                self._enter(phase)
                current = phase
            t0 = time.time()
            steps = r.steps(w, s["step_in_window"])
            n = r.window_length(w)
            if self._rng is not None:  # after the source has drawn what it draws at its start, as the first run's had
                set_rng(self._rng, self.device)
                self._rng = None
            bar = tqdm(total=n, initial=s["step_in_window"], leave=False, desc=f"{r.unit} {w + 1} ({phase})",
                       disable=None if opts["progress"] and is_main() else True)
            every = opts["save_every_steps"]
            for batch in steps:
                result = self._run_step(batch)
                s.update(step=s["step"] + 1, step_in_window=s["step_in_window"] + 1)
                if result is not None:
                    s["window_results"].append(result)
                bar.update()
                if self._stop_requested():
                    self.save(improved=False)
                    stopped = "SIGTERM"
                    break
                if every and s["step"] % every == 0 and s["step_in_window"] < n:
                    self.save(improved=False)
            bar.close()
            if stopped:
                if is_main():
                    print(f"SIGTERM: stopped at {r.unit} {w + 1}, step {s['step']}; {self.out / 'last'} saved, "
                          "continue with --resume", flush=True)
                break
            with self.weights_for("eval") as model, parallel.gathered(model):  # evaluation outside the training forward
                row = r.evaluate(w, s["window_results"])
            value = self.monitor.value(row)
            for u in self.updates:
                if u.plateau and not math.isnan(value):
                    u.scheduler.step(value)
            improved = self.monitor.better(value, s["best"])
            if improved:
                s.update(best=value, best_window=w, best_step=s["step"], bad_windows=0)
            else:
                s["bad_windows"] += 1
            s.update(window=w + 1, step_in_window=0, window_results=[])
            key = w + 1 if r.unit == "epoch" else s["step"]
            row = {r.unit: key, **({"phase": phase} if r.logs_phase else {}), **row, "seconds": time.time() - t0}
            if is_main():
                self.logger.log(key, row)
            self.save(improved)  # after the log row: a resume truncates the log to last/'s window
            if is_main() and opts["progress"]:
                shown = ", ".join(f"{k} {v:.4f}" for k, v in row.items()
                                  if isinstance(v, float) and k != "seconds" and not math.isnan(v))
                print(f"{r.unit} {key}: {shown}{' *' if improved else ''}", flush=True)
            patience = r.patience(phase)
            if patience and s["bad_windows"] >= patience:
                break
        summary = {**r.summary(s), "seconds": time.time() - start_time, "steps": s["step"],
                   "skipped_steps": s["skipped_steps"], "monitor": self.monitor.name}
        if stopped:
            summary["stopped"] = stopped
        if is_main():
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2, default=_plain))
        return summary

    def save(self, improved: bool) -> None:
        """``checkpoint/`` (the best model: when ``improved``, or none exists yet) and ``last/``
        (the model and ``trainer_state.pt``, what ``--resume`` reads), each atomically.
        Collective under torchrun: every process's RNG state is kept, and under FSDP the
        shards are gathered; the first process writes.

        The writing is :func:`~clapkit.training.common.save_run`'s."""
        rng = get_rng(self.device)
        everyone = self._everyone(rng)
        best = self._everyone(improved or not (self.out / "checkpoint").exists())[0]  # the first process decides
        updates = {u.name: u.state_dict() for u in self.updates}
        model = self.recipe.model
        sharded, best_full = parallel.is_sharded(model), None
        # the average whole (gathered from the shards by every process under FSDP; else the first process's)
        ema = self.ema.state_dict() if self.ema is not None and (sharded or is_main()) else None
        self._check_finite()
        if best and sharded:  # gathered now, by every process, with the weights checkpoint/ holds
            with self.weights_for("checkpoint") as weights:
                best_full = parallel.full_model(weights)
        last_full = parallel.full_model(model)
        if not is_main():
            return

        def write_checkpoint(folder: Path) -> None:
            if sharded:
                self.recipe.save(folder, best_full)
            else:
                with self.weights_for("checkpoint") as weights:
                    self.recipe.save(folder, weights)
            if self.ema is not None and self.ema_options.get("checkpoint", True):
                self.ema.record(folder)

        def write_last(folder: Path) -> None:
            self.recipe.save(folder, last_full)
            torch.save({"format": STATE_FORMAT, "state": self.state, "updates": updates,
                        "scaler": self.precision.scaler.state_dict(), "rng": everyone,
                        "extra": self.recipe.extra_state(), "ema": ema}, folder / "trainer_state.pt")

        try:
            save_run(self.out, write_checkpoint if best else None, write_last)
        except OSError as exc:
            raise TrainingError(f"{self.out}: saving the checkpoint failed ({exc}); the previous checkpoint and "
                                "last/ are intact. Free space or fix the folder, then --resume") from exc

    def _everyone(self, value) -> list:
        """``value`` of every process, in rank order (collective under torchrun)."""
        if self.world == 1:
            return [value]
        everyone: list = [None] * self.world
        torch.distributed.all_gather_object(everyone, value)
        return everyone

    def _check_finite(self) -> None:
        model = self.recipe.model
        tensors = [*model.named_parameters(), *model.named_buffers()]
        bad = [n for n, p in tensors if p.is_floating_point() and not torch.isfinite(parallel.local(p)).all()]
        if self.world > 1:  # every process stops, or none (a shard's NaN is its process's alone)
            bad = [n for share in self._everyone(bad) for n in share]
        if bad:
            raise TrainingError(f"non-finite weights ({', '.join(bad[:3])}) at step {self.state['step']}: not saved; "
                                f"{self.out / 'last'} keeps the previous state")


def mean_of(results: list[dict], key: str) -> float:
    values = [r[key] for r in results if key in r and r[key] is not None]
    return float(np.mean(values)) if values else math.nan


def _plain(x):
    if isinstance(x, float | np.floating):
        return float(x)
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


