"""``runtime.compile``: torch.compile of the training forward and of inference.

- ``none``: the module runs eager (the default).
- ``default``: ``torch.compile`` with inductor (C++/OpenMP kernels on CPU, Triton on CUDA).
- ``reduce-overhead``: the same plus CUDA graphs (each call marks a new step:
  ``torch.compiler.cudagraph_mark_step_begin``); on CPU inductor skips CUDA graphs
  ("skipping cudagraphs due to cpu device", counted in ``cudagraph_skips``) and the
  mode runs as ``default``.

Compilation happens at the first call of each new input signature, so its errors
appear there: a module that cannot compile (a dynamo or inductor error, a missing C++
compiler) warns once, naming ``runtime.compile``, reruns that call eagerly from the
torch RNG state and buffers it started with (a graph that ran before the failing one
may have drawn dropout or moved BatchNorm statistics: the step is neither lost nor
doubled) and stays eager. Under ``torchrun`` a process cannot turn eager alone (the
others' collectives would no longer match), so the error is raised instead. The
backward graph is compiled with the forward (``force_non_lazy_backward_lowering``,
where this torch has it) so that its errors are caught there too.

Equal to eager within rounding (fp32, tested: losses and embeddings to rtol 1e-4 / atol
1e-5, weights after 14 Adam steps to atol 5e-5, but an attention key's bias, whose
gradient is zero up to rounding) where no dropout is drawn: inductor draws dropout masks with its own
random-number generator, so a compiled run with dropout trains on other masks than the
eager run (still seeded: a compiled run repeats itself).

Shapes: ``dynamic=None``, torch's automatic dynamic shapes: the first call compiles
for its exact shapes; a call with another batch size (an epoch's last batch) or
caption length recompiles once with that dimension symbolic, after which every size
reuses it (a tower: at most 3 compiles). ``torch._dynamo.config.recompile_limit`` (8)
bounds the compiles of a code object (of a region with ``isolate``); past it dynamo runs
it eager.

:attr:`Compiled.stats` (summary.json's ``compile``) keeps the time of the calls that
compiled apart from the time of the others: ``compile_seconds`` is the wall time of
each first call of an input signature (the compile and one run), ``run_seconds`` and
``runs`` those of the calls that reused a compiled graph.
"""

from __future__ import annotations

import contextlib
import inspect
import time
import warnings
import weakref

import torch
from torch import nn

MODES = ("none", "default", "reduce-overhead")
_ISOLATES = "isolate_recompiles" in inspect.signature(torch.compile).parameters  # a recent torch (2.13 has it)

# one stats record per underlying model, so that a run's phases (each wraps anew) add up
_STATS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compiled(module: nn.Module, mode: str) -> nn.Module:
    """``module`` compiled with ``mode`` (``none``: itself); see the module docstring."""
    if mode not in MODES:
        from ..errors import ConfigError

        raise ConfigError(f"runtime.compile = {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "none":
        return module
    base = module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module
    stats = _STATS.get(base)
    if stats is None or stats["mode"] != mode:
        stats = _STATS[base] = new_stats(mode)
    return Compiled(module, mode, stats)


def new_stats(mode: str) -> dict:
    """An empty stats record (see :attr:`Compiled.stats`)."""
    return {"mode": mode, "compiled": True, "fell_back": None, "compiles": 0, "graphs": 0,
            "compile_seconds": 0.0, "runs": 0, "run_seconds": 0.0, "cudagraph_skips": 0}


def compile_stats(module) -> dict | None:
    """The stats of a :class:`Compiled` module (None for any other)."""
    if not isinstance(module, Compiled):
        return None
    s = dict(module.stats)
    s["recompiles"] = max(0, s["compiles"] - 1)
    s["run_seconds_mean"] = s["run_seconds"] / s["runs"] if s["runs"] else None
    return s


def _counts() -> tuple[int, int]:
    """Graphs dynamo made and graphs inductor ran without CUDA graphs (reduce-overhead), so far."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"], counters["inductor"]["cudagraph_skips"]


class Compiled(nn.Module):
    """``module`` run through ``torch.compile(mode=...)``, eager once compiling failed.

    ``stats``: ``mode``; ``compiled`` (False once it fell back) and ``fell_back`` (the
    error, or None); ``compiles`` (calls that compiled: the first and each recompile),
    ``graphs`` (the graphs they made), ``compile_seconds``; ``runs`` and ``run_seconds``
    (the calls that reused compiled code); ``cudagraph_skips``: graphs that
    ``reduce-overhead`` ran without CUDA graphs (every graph on CPU)."""

    def __init__(self, module: nn.Module, mode: str, stats: dict | None = None, isolate: bool = False):
        super().__init__()
        self.module = module
        self.mode = mode
        self.stats = stats if stats is not None else new_stats(mode)
        extra = {"isolate_recompiles": True} if isolate and _ISOLATES else {}  # its own recompile budget
        self.__dict__["_fn"] = torch.compile(module, mode=mode, dynamic=None, **extra)  # not a second submodule

    def forward(self, *args, **kwargs):
        if not self.stats["compiled"]:
            return self.module(*args, **kwargs)
        before, start = _counts(), time.perf_counter()
        state = snapshot(self.module)
        try:
            if self.mode == "reduce-overhead" and torch.cuda.is_available():
                torch.compiler.cudagraph_mark_step_begin()  # the previous call's outputs are done with
            with _eager_backward():
                out = self._fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
                from ..errors import ConfigError

                raise ConfigError(f"runtime.compile = {self.mode}: {type(self.module).__name__} could not be compiled "
                                  f"in process {torch.distributed.get_rank()} ({_reason(e)}); under torchrun a "
                                  "process cannot run eager alone. Set runtime.compile: none") from e
            restore(state)
            out = self.module(*args, **kwargs)  # an error eager raises too is the model's own: it propagates
            self._fall_back(e)
            return out
        seconds, after = time.perf_counter() - start, _counts()
        if made := after[0] - before[0]:
            self.stats["compiles"] += 1
            self.stats["graphs"] += made
            self.stats["compile_seconds"] += seconds
            self.stats["cudagraph_skips"] += after[1] - before[1]
        else:
            self.stats["runs"] += 1
            self.stats["run_seconds"] += seconds
        return out

    def _fall_back(self, e: Exception) -> None:
        reason = _reason(e)
        self.stats.update(compiled=False, fell_back=reason)
        warnings.warn(f"runtime.compile = {self.mode}: {type(self.module).__name__} could not be compiled "
                      f"({reason}); running it eager. Set runtime.compile: none (or --compile none) to skip "
                      f"compiling, or fix the compiler (a C++ compiler for CPU, Triton for CUDA)",
                      RuntimeWarning, stacklevel=3)


def snapshot(module: nn.Module) -> tuple:
    """The torch RNG states and ``module``'s buffers, for :func:`restore`."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return torch.get_rng_state(), cuda, [(b, b.detach().clone()) for b in module.buffers()]


def restore(state: tuple) -> None:
    """Put back what :func:`snapshot` took."""
    cpu, cuda, buffers = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
    with torch.no_grad():
        for b, saved in buffers:
            b.copy_(saved)


def _reason(e: BaseException) -> str:
    """``Outer: Inner: first line of the innermost message`` (dynamo wraps the backend's error)."""
    names, inner = [type(e).__name__], e
    while (nxt := getattr(inner, "inner_exception", None) or inner.__cause__) is not None and len(names) < 4:
        names.append(type(nxt).__name__)
        inner = nxt
    lines = [line for line in str(inner).strip().splitlines() if line.strip()]
    return ": ".join(names + lines[:1])[:300]


def _eager_backward():
    """Compile the backward graph with the forward (its errors then reach :class:`Compiled`)."""
    try:
        import torch._functorch.config as fconfig
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    if not hasattr(fconfig, "force_non_lazy_backward_lowering"):
        return contextlib.nullcontext()
    return fconfig.patch(force_non_lazy_backward_lowering=True)
