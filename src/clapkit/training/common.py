"""Pieces every training recipe shares: seeding, devices, processes, checkpoints, logs."""

from __future__ import annotations

import csv
import math
import os
import random
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml

from ..atomic import atomic_dir, recover_dir, save_weights  # noqa: F401 (part of the trainers' toolkit)
from ..distributed import init_distributed, is_main  # noqa: F401 (part of the trainers' toolkit)
from ..errors import ConfigError, TrainingError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_order(seed: int, epoch: int, n: int, rank: int = 0) -> np.ndarray:
    """The seeded sample order of an epoch; also seeds torch for the epoch's dropout.

    Every random draw of an epoch depends on (seed, epoch) only, so a run resumed at
    epoch k draws what an uninterrupted run draws. The order is the same on every DDP
    process; torch (dropout) is seeded per (seed, epoch, rank), because each process
    holds other rows and must not repeat another process's masks.
    """
    seed_epoch(seed, epoch, rank)
    return np.random.default_rng((seed, epoch, 1)).permutation(n)


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """Seed torch (dropout) for an epoch by (seed, epoch, rank): indexed epochs through
    :func:`epoch_order`, streamed ones directly, so a run resumed at an epoch boundary
    draws the masks of the run that never stopped."""
    torch.manual_seed(int(np.random.SeedSequence((seed, epoch, rank)).generate_state(1)[0]))


class StepBatches:
    """Batch ``step`` of a stream drawn by steps, not epochs: rows of a permutation seeded
    by (seed, epoch, stream) with ``n // batch_size`` batches an epoch, so any step's
    batch is known without replaying the steps before it (exact resume). The current
    epoch's permutation is kept, not redrawn each step."""

    def __init__(self, seed: int, stream: int, n: int, batch_size: int):
        self.seed, self.stream, self.n, self.batch_size = seed, stream, n, batch_size
        self._epoch, self._order = None, None

    def __call__(self, step: int) -> np.ndarray:
        epoch, b = divmod(step, self.n // self.batch_size)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, np.random.default_rng((self.seed, epoch, self.stream)).permutation(self.n)
        return self._order[b * self.batch_size : (b + 1) * self.batch_size]


def runtime_of(cfg: dict) -> tuple[torch.device, Precision]:
    """The device and precision of ``cfg``'s runtime section, with its determinism set:
    what every recipe starts from."""
    r = cfg["runtime"]
    device = pick_device(r["device"])
    set_determinism(r["deterministic"], device)
    return device, Precision(r["precision"], device)


def set_determinism(enabled: bool, device: torch.device) -> None:
    """``runtime.deterministic``: on CUDA, deterministic kernels (cuDNN without autotuning,
    ``torch.use_deterministic_algorithms``, a fixed cuBLAS workspace), so a resumed or
    repeated run on the same GPU and software gives the same weights. CPU kernels here
    are deterministic already, so nothing is set for a CPU run. Ops that have no
    deterministic CUDA kernel warn instead of stopping the run (``warn_only``).
    """
    if device.type != "cuda":
        return
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled
    torch.use_deterministic_algorithms(enabled, warn_only=True)


class Precision:
    """``runtime.precision`` for one trainer: ``fp32``, ``bf16`` (autocast; works on CPU as
    well) or ``fp16`` (autocast and a gradient scaler). Forwards run under
    :meth:`autocast`; the caller casts embeddings to fp32 before its loss (frontends and
    L2 normalisations are fp32 inside the models), back-propagates :meth:`scale` of it,
    then calls :meth:`clip` and :meth:`step`."""

    DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

    def __init__(self, name: str, device: torch.device):
        if name not in self.DTYPES:
            raise ConfigError(f"runtime.precision = {name!r}; choose one of {sorted(self.DTYPES)}")
        self.name, self.dtype, self.device = name, self.DTYPES[name], device
        self.scaler = torch.amp.GradScaler(device.type, enabled=name == "fp16")

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to back-propagate (scaled under fp16)."""
        return self.scaler.scale(loss)

    def clip(self, optimizer: torch.optim.Optimizer, params: list, grad_clip: float) -> torch.Tensor:
        """Unscale the gradients (fp16), clip them to ``grad_clip`` (0: no clipping) and
        return their norm."""
        self.scaler.unscale_(optimizer)
        return torch.nn.utils.clip_grad_norm_(params, grad_clip or math.inf)  # inf: the norm, gradients unchanged

    def finite(self, loss: torch.Tensor, norm: torch.Tensor, state: dict, step: int, max_bad: int, last: Path) -> bool:
        """Whether a step may be applied: its loss and (fp32/bf16) gradient norm are finite;
        under fp16 an overflowing gradient is the scaler's business. A bad step is
        counted in ``state`` (``bad_steps`` in a row, ``skipped_steps`` in all) and printed;
        ``max_bad`` in a row (``runtime.max_bad_steps``) raise a TrainingError."""
        ok = bool(torch.isfinite(loss)) and (self.scaler.is_enabled() or bool(torch.isfinite(norm)))
        if ok:
            state["bad_steps"] = 0
            return True
        state["bad_steps"] = state.get("bad_steps", 0) + 1
        state["skipped_steps"] = state.get("skipped_steps", 0) + 1
        what = "loss" if not torch.isfinite(loss) else "gradient norm"
        print(f"step {step}: non-finite {what}; step skipped ({state['bad_steps']} in a row, "
              f"{state['skipped_steps']} in all)", flush=True)
        if state["bad_steps"] >= max(1, max_bad):
            raise TrainingError(f"{state['bad_steps']} non-finite steps in a row (runtime.max_bad_steps = {max_bad}) at "
                                f"step {step}; {last} holds the last good state. Lower the learning rate, use bf16 "
                                "rather than fp16, or check the batch's inputs")
        return False

    def step(self, optimizer: torch.optim.Optimizer, skip: bool = False) -> None:
        """Step unless ``skip``; under fp16 the scaler decides (it skips a step whose
        gradients overflowed or are NaN, and lowers the scale)."""
        if self.scaler.is_enabled():
            self.scaler.step(optimizer)
            self.scaler.update()
        elif not skip:
            optimizer.step()


@contextmanager
def on_sigterm():
    """A flag (``flag["stop"]``) that a SIGTERM, as a scheduler sends before pre-emption,
    sets while the block runs; the previous handler comes back after it. Outside the
    main thread no handler can be installed and the flag stays down."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: flag.__setitem__("stop", True))
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if dist.is_initialized() and torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"runtime.device = {name!r} but no CUDA device is available; use cpu or auto")
    return torch.device(name)


def average_gradients(params, world: int) -> None:
    """Average the gradients over the processes (what DDP does for a wrapped module), for
    recipes whose steps call their model's methods rather than one forward. With losses
    over a gathered global batch (``gather_with_grad``) this gives one process's gradients."""
    if world <= 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


# where a resumed run runs may change with the machine; nothing it computes does
RESUME_MAY_CHANGE = (("runtime", "device"), ("runtime", "progress"))


def resume_config(out: Path | str, cfg: dict, may_change: tuple[tuple[str, str], ...]) -> dict:
    """The saved ``config.yaml`` of the run in ``out``, with only ``may_change`` taken from ``cfg``.

    A resume continues the saved run; the length of the run (epochs, steps) is the only
    thing a user may extend, and the device and progress bar (:data:`RESUME_MAY_CHANGE`)
    follow the machine it resumes on; every other option of the new ``cfg`` is ignored.
    """
    out = Path(out)
    saved = out / "config.yaml"
    if not (recover_dir(out / "last") / "trainer_state.pt").is_file() or not saved.is_file():
        raise ConfigError(f"--resume: {out} holds no resumable run (no last/trainer_state.pt); start without --resume")
    from ..config import complete, upgrade

    base = complete(upgrade(yaml.safe_load(saved.read_text()), str(saved)))
    for section, key in (*may_change, *RESUME_MAY_CHANGE):
        base[section][key] = cfg[section][key]
    return base


def save_run(out: Path, write_checkpoint, write_last) -> None:
    """Write ``checkpoint/`` (the best model; ``write_checkpoint(folder)``, None: kept as it
    is), then ``last/`` (``write_last(folder)``: the model and ``trainer_state.pt``, what
    ``--resume`` reads). Both atomically.

    The order matters: ``last/`` records the new best, so it is written only once the
    best model is on disk. A crash between the two leaves ``last/`` at the previous
    save, and the resumed run redoes (and re-saves) what followed it.
    """
    out = Path(out)
    if write_checkpoint is not None:
        with atomic_dir(out / "checkpoint") as tmp:
            write_checkpoint(tmp)
    with atomic_dir(out / "last") as tmp:
        write_last(tmp)


def write_run_card(out: Path, recipe: str, cfg: dict, summary: dict, medium: str | None, training,
                   suite_medium: str | None = None) -> None:
    """The model card of the run's final ``checkpoint/`` (``README.md``, and the text tower's):
    :func:`clapkit.audit.card.write_training_card` with ``training()`` (a callable giving its
    :class:`~clapkit.audit.card.TrainingData`). Once, after the last window (not at step or
    epoch saves), by the first process; a card that cannot be written warns and never
    fails the run (``clapkit card OUT/checkpoint`` writes it later)."""
    if not is_main():
        return
    if summary.get("stopped"):  # a stop (SIGTERM, a fault) leaves the grace period to the checkpoint, not the audit
        import warnings

        warnings.warn(f"{Path(out) / 'checkpoint'}: the run stopped ({summary['stopped']}); no model card written "
                      f"(resume it, or write one with `clapkit card {Path(out) / 'checkpoint'}`)", RuntimeWarning,
                      stacklevel=2)
        return
    try:
        from ..audit.card import write_training_card

        write_training_card(out, recipe, cfg, summary, medium, training(), suite_medium)
    except Exception as exc:  # a card documents the model: the trained weights stand without it
        import warnings

        warnings.warn(f"{Path(out) / 'checkpoint'}: model card not written ({type(exc).__name__}: {exc}); write it "
                      f"with `clapkit card {Path(out) / 'checkpoint'}`", RuntimeWarning, stacklevel=2)


def load_trainer_state(out: Path) -> dict:
    """What :func:`save_run` wrote in ``out/last/trainer_state.pt``."""
    return torch.load(recover_dir(Path(out) / "last") / "trainer_state.pt", map_location="cpu", weights_only=False)


class ScalarLogger:
    """Per-epoch scalars to ``metrics.csv`` (always) and TensorBoard (optional)."""

    def __init__(self, folder: Path, kind: str = "csv", append: bool = False):
        self.path = Path(folder) / "metrics.csv"
        self.fields: list[str] | None = None
        if append and self.path.exists():
            with open(self.path, newline="") as fh:
                self.fields = next(csv.reader(fh), None)
        self.tb = None
        if kind == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ConfigError("runtime.logger = tensorboard needs `pip install tensorboard`; or use csv") from exc
            self.tb = SummaryWriter(str(Path(folder) / "tensorboard"))

    def log(self, step: int, row: dict) -> None:
        if self.fields is None:
            self.fields = list(row)
            with open(self.path, "w", newline="") as fh:
                csv.writer(fh).writerow(self.fields)
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow([row.get(k, "") for k in self.fields])
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, int | float):
                    self.tb.add_scalar(k, v, step)
            self.tb.flush()

    def truncate(self, last_epoch: int) -> None:
        """On resume, drop rows logged after the checkpoint that is resumed from."""
        if not self.path.exists():
            return
        with open(self.path, newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            return
        keep = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= last_epoch]
        with open(self.path, "w", newline="") as fh:
            csv.writer(fh).writerows(keep)
