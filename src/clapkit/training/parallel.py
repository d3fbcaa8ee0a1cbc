"""How a recipe's model runs across processes (``runtime.parallel``) and compiled
(``runtime.compile``): the one place that wraps a model for training.

- ``ddp`` (the default under ``torchrun``): every process holds the whole model and
  its optimizer state; gradients are averaged (``DistributedDataParallel``).
- ``fsdp``: FSDP2 (``torch.distributed.fsdp.fully_shard``): between steps every process
  holds a shard of each parameter, its gradient and its optimizer state (half of them on
  two processes), for training state that does not fit one device. The weights are
  still built whole on every device before sharding, and gathered whole for evaluation
  and the frozen cache, so the model itself must fit one device. ``train clap`` /
  ``train clip`` with clapkit's own dual encoder; the other recipes
  (:func:`require_whole_model`) and public models fine-tuned refuse it.

Under ``fsdp`` (:func:`shard`) each repeated layer (the entries of a ``ModuleList``: a
Hugging Face encoder's layers, a CNN's blocks), each backbone, each projector and then
the model itself are ``fully_shard`` units: a unit's weights are gathered for its
forward and freed after it (the model's own stay gathered from forward to backward).
0-d parameters (the learnt temperature), which FSDP cannot split, stay whole in every
process with their gradients averaged; buffers (BatchNorm statistics) are not sharded
either: the first process's are sent to the others before every training forward, as
DDP does. So every process computes what it computes under DDP, and the gradients are
the same sums of halves. A forward of a sharded unit is collective: whatever runs the
model outside its training forward (evaluation, the frozen cache: methods other than
``forward``, work split unevenly between processes) runs in :func:`gathered`, which
gathers every unit once and keeps it whole for the block.

A checkpoint is always written *consolidated* (one full model, in the model's own
format, loadable in one process): :func:`full_model` gathers the shards, and
:func:`optimizer_state` / :func:`load_optimizer_state` keep ``last/``'s optimizer state
whole, so a run resumes on any number of processes, and ``checkpoint/`` and ``last/``
are the same files under either option.
"""

from __future__ import annotations

import copy
import weakref
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from ..errors import ConfigError

# a sharded model -> the first process's unsharded skeleton of it (weights on the meta device), for full_model
_FULL: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def wrap_for_training(model: nn.Module, cfg: dict, device: torch.device, world: int,
                      find_unused: bool = False) -> nn.Module:
    """The module a training step calls: ``model`` itself in one process, wrapped by DDP
    or sharded by FSDP2 under ``torchrun`` (``runtime.parallel``), then compiled when
    ``runtime.compile`` asks (:func:`clapkit.training.compile.compiled`). Under FSDP the
    model is sharded in place (its parameters become shards: build the optimizer after)
    and a model already sharded is kept as it is."""
    net = model
    if world > 1:
        if cfg["runtime"]["parallel"] == "fsdp":
            net = shard(model, find_unused)
        else:
            net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                      find_unused_parameters=find_unused)
    from .compile import compiled

    return compiled(net, cfg["runtime"]["compile"])


def require_whole_model(cfg: dict, recipe: str) -> None:
    """Refuse ``runtime.parallel: fsdp`` in a recipe whose processes each hold the whole model."""
    if cfg["runtime"].get("parallel", "ddp") == "fsdp":
        raise ConfigError(f"runtime.parallel = fsdp: {recipe} does not shard its model (every process holds it "
                          "whole and averages the gradients); fsdp applies to train clap and train clip. Set "
                          "runtime.parallel: ddp")


def units(model: nn.Module) -> list[nn.Module]:
    """The modules :func:`shard` makes FSDP units, innermost first: every entry of a
    ``ModuleList`` (layers, blocks), the backbones (``model.backbones()``) and the
    projectors (``media_proj``, ``text_proj``); the model itself is the last unit."""
    found: list[tuple[int, nn.Module]] = []  # (depth, module)
    for name, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and m is not model:
            found += [(name.count(".") + 1, layer) for layer in m
                      if not isinstance(layer, nn.ModuleList | nn.ModuleDict) and _holds_parameters(layer)]
    outer = list(model.backbones()) if hasattr(model, "backbones") else []
    outer += [getattr(model, name) for name in ("media_proj", "text_proj") if isinstance(getattr(model, name, None), nn.Module)]
    found += [(0, m) for m in outer if m is not model and _holds_parameters(m)]
    seen: set[int] = set()
    ordered = [m for _, m in sorted(found, key=lambda dm: -dm[0])]  # inner units before the ones holding them
    return [m for m in ordered if not (id(m) in seen or seen.add(id(m)))]


def _holds_parameters(m: nn.Module) -> bool:
    return next(m.parameters(), None) is not None


def shard(model: nn.Module, find_unused: bool = False) -> nn.Module:
    """``model`` sharded in place by FSDP2 over every process (see the module docstring);
    collective, and a model already sharded is returned as it is. The first process keeps
    a skeleton of the model for :func:`full_model`. ``find_unused``: a parameter without a
    gradient in a step (a branch one process's batch did not take) is reduced as zeros, so
    every process reduces the same ones."""
    from ..models.dual import DualEncoder

    if not isinstance(model, DualEncoder):
        raise ConfigError(f"runtime.parallel = fsdp shards clapkit's own dual encoder; {type(model).__name__} (a public "
                          "model fine-tuned from model.init_from) trains under ddp, which leaves the parameters a "
                          "batch does not reach untouched: set runtime.parallel: ddp")
    if tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 13):
        raise ConfigError(f"runtime.parallel = fsdp needs torch 2.13 or newer (FSDP2 as tested here); this is "
                          f"torch {torch.__version__}: upgrade torch or set runtime.parallel: ddp")
    from torch.distributed.fsdp import FSDPModule, fully_shard

    if isinstance(model, FSDPModule):
        return model
    if torch.distributed.get_rank() == 0:
        _FULL[model] = _skeleton(model)
    scalars = {p for p in model.parameters() if p.dim() == 0}  # fully_shard cannot split a 0-d tensor
    for unit in units(model):
        fully_shard(unit, ignored_params=scalars)
    fully_shard(model, ignored_params=scalars)
    for p in scalars:  # kept whole in every process; their gradients averaged as DDP's are
        p.register_post_accumulate_grad_hook(_average_grad)
    if find_unused:
        model.set_reduce_scatter_unused_params(True)
    # the model is the root: set up now, as a tower may run (the frozen cache) before the model's first forward
    model._get_fsdp_state()._lazy_init()
    model.register_forward_pre_hook(_broadcast_buffers)
    return model


def _average_grad(p: torch.Tensor) -> None:
    """A parameter's gradient averaged over the processes (divided first, as DDP does)."""
    p.grad.div_(torch.distributed.get_world_size())
    torch.distributed.all_reduce(p.grad)


def _broadcast_buffers(model: nn.Module, _args) -> None:
    """The first process's buffers to every process before a training forward (DDP's
    ``broadcast_buffers``): BatchNorm statistics stay one model's."""
    if not (torch.is_grad_enabled() and model.training):
        return
    for b in model.buffers():
        torch.distributed.broadcast(b, 0)


def _skeleton(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose saved tensors (its state dict) are on the meta
    device (no memory) and whose other buffers are on the CPU: what :func:`full_model`
    fills with the gathered weights."""
    saved = {id(t) for t in model.state_dict(keep_vars=True).values()}
    return _copy_with(model, lambda t: t.detach().to("meta") if id(t) in saved else t.detach().to("cpu", copy=True))


def _copy_with(model: nn.Module, tensor_of) -> nn.Module:
    """A deep copy of ``model`` with ``tensor_of(t)`` for each of its parameters and buffers."""
    memo: dict = {}
    for t in (*model.parameters(), *model.buffers()):
        c = tensor_of(t)
        memo[id(t)] = nn.Parameter(c, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else c
    return copy.deepcopy(model, memo)


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model`` is sharded by FSDP2 (its parameters DTensors)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule) or any(_is_dtensor(p) for p in model.parameters())


def _is_dtensor(t) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def _fsdp_modules(model: nn.Module) -> list[nn.Module]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextmanager
def gathered(model: nn.Module):
    """``model`` (the one :func:`shard` sharded) whole on every process for the block:
    every unit gathered on entry (collective), then its forwards and methods run without
    collectives, however the work is split between the processes. After the block the
    model is resharded (what the block wrote into its weights is dropped) and FSDP forgets
    the block's forwards (its backward prefetching follows the recorded forward order).
    Not for training. ``model`` itself when it is not sharded."""
    fsdp = _fsdp_modules(model)
    if not fsdp:
        yield model
        return
    for m in fsdp:
        m.set_reshard_after_forward(False, recurse=False)
        m.unshard()
    try:
        yield model
    finally:
        for m in fsdp:
            m.reshard()
            m.set_reshard_after_forward(m is not model, recurse=False)  # the root keeps its own through to backward
        model.reset_iter_state()


def local(t: torch.Tensor) -> torch.Tensor:
    """This process's part of ``t`` (its shard under FSDP; ``t`` itself otherwise)."""
    return t.to_local() if hasattr(t, "to_local") else t


def whole(t: torch.Tensor) -> torch.Tensor:
    """``t`` whole: a shard's full tensor (collective), or ``t`` itself."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def fill(target: torch.Tensor, full: torch.Tensor) -> None:
    """Copy the whole tensor ``full`` into ``target`` (its own shard of it under FSDP;
    every process holds ``full``, so nothing is sent)."""
    if hasattr(target, "device_mesh"):
        full = _shard_like(full, target)
    target.copy_(full)


def _shard_like(full: torch.Tensor, like) -> torch.Tensor:
    """This process's shard of ``full``, placed as the DTensor ``like`` (no communication)."""
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full.to(device=like.device, dtype=like.dtype), like.device_mesh, like.placements,
                             src_data_rank=None)


def _main() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


def full_model(model: nn.Module) -> nn.Module | None:
    """The model to save: ``model`` itself unless sharded; a sharded model's full weights
    gathered (collective: every process calls it) into a new unsharded copy on the first
    process's CPU (None on the others)."""
    if not is_sharded(model):
        return model
    for m in _fsdp_modules(model):  # the shards are the weights (a gathered copy may be stale)
        m.reshard()
    skeleton = _FULL.get(model) if _main() else None
    if _main() and skeleton is None:
        raise RuntimeError("full_model: the model was not sharded by clapkit.training.parallel.shard")
    state = {}
    for name, t in model.state_dict().items():  # one tensor at a time: never the whole model on a device
        full = whole(t.detach())  # a new tensor for a shard; a whole tensor (a buffer) is copied below
        if skeleton is not None:
            state[name] = full.cpu() if _is_dtensor(t) else full.to("cpu", copy=True)
    if skeleton is None:
        return None
    own = {id(t): name for name, t in skeleton.state_dict(keep_vars=True).items()}
    return _copy_with(skeleton, lambda t: state[own[id(t)]] if id(t) in own else t.detach().clone())


def optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """``optimizer.state_dict()``, whole: a sharded model's states gathered (collective),
    one tensor at a time, onto the first process's CPU (what it writes; the other
    processes get an empty state)."""
    saved = optimizer.state_dict()
    if not any(_is_dtensor(v) for s in saved["state"].values() for v in s.values()):
        return saved
    main = _main()
    state = {}
    for i in sorted(saved["state"]):
        entry = {}
        for key, v in saved["state"][i].items():
            if _is_dtensor(v):
                v = v.full_tensor().cpu()
            entry[key] = v
        if main:
            state[i] = entry
    return {"state": state, "param_groups": saved["param_groups"]} if main else {"state": {}, "param_groups": []}


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Load what :func:`optimizer_state` gave (re-sharded like the parameters when sharded:
    each process keeps its shard of every whole state tensor)."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if any(_is_dtensor(p) for p in params):
        state = {}
        for i, entry in saved["state"].items():
            p = params[int(i)]
            state[i] = {key: _shard_like(v, p) if _is_dtensor(p) and key != "step" and torch.is_tensor(v)
                        and tuple(v.shape) == tuple(p.shape) else v for key, v in entry.items()}
        saved = {**saved, "state": state}
    optimizer.load_state_dict(saved)
