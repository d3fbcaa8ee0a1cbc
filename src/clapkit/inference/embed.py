"""Deterministic embedding of media (audio clips or images) and texts with a dual
encoder (eval mode, centre segments or centre crops, no randomness).

A clapkit :class:`DualEncoder` gets clapkit's own input pipeline; a public model
(:class:`~clapkit.models.public.base.PublicDualEncoder`) gets the decoded media through its own
feature extractor or image processor (:meth:`preprocess`)."""

from __future__ import annotations

import contextlib
import contextvars
import weakref
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data.datasets import collate_clips
from ..data.media import RawMedia, media_dataset
from ..models.dual import DualEncoder
from ..models.public.base import PublicDualEncoder

FEATURES = ("x", "E")  # the backbone output x and the projected, normalised E
PRECISIONS = ("fp32", "bf16")
_COMPILE = contextvars.ContextVar("clapkit_inference_compile", default="none")


def inference_precision(name: str, device):
    """The context every evaluation runs in: ``fp32``, or ``bf16`` autocast on the
    device (CPU or CUDA; embeddings leave the models as fp32 either way)."""
    from ..errors import ConfigError

    if name not in PRECISIONS:
        raise ConfigError(f"--precision {name!r}: choose {' or '.join(PRECISIONS)}")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=name == "bf16")


@contextlib.contextmanager
def inference_compile(name: str):
    """The compile mode (``--compile``) of the embedding functions called inside it that
    are not given one: ``none`` (eager), ``default`` or ``reduce-overhead`` (torch.compile
    of each tower's backbone and projection, :mod:`clapkit.training.compile`)."""
    _check_mode(name)
    token = _COMPILE.set(name)
    try:
        yield
    finally:
        _COMPILE.reset(token)


class _Tower(nn.Module):
    """A tower's backbone and projection as one module (one graph when compiled):
    ``inputs -> (x, E)``. It holds the model weakly (a compiled tower is kept per model)."""

    def __init__(self, model: nn.Module, tower: str):
        super().__init__()
        self.__dict__["_model"] = weakref.ref(model)  # not a submodule
        self.tower = tower

    def forward(self, inputs):
        m = self._model()
        if self.tower == "media":
            x = m.media_backbone(inputs)
            return x, m.project_media(x)
        x = m.text_backbone(inputs)
        return x, m.project_text(x)


# per model: its compiled towers, {(tower, mode): Compiled}, each with its own recompile budget
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tower(model: nn.Module, which: str, compile: str | None = None) -> nn.Module:
    """``which`` (media or text) of ``model`` as a module ``inputs -> (x, E)``, eager or
    compiled with ``compile`` (None: the :func:`inference_compile` in force). A compiled
    tower is kept for the model's later calls (compiled once; a fall-back warns once)."""
    from ..training.compile import Compiled

    mode = _COMPILE.get() if compile is None else compile
    _check_mode(mode)
    if mode == "none":
        return _Tower(model, which)
    towers = _COMPILED.setdefault(model, {})
    if (which, mode) not in towers:
        towers[which, mode] = Compiled(_Tower(model, which), mode, isolate=True)
    return towers[which, mode]


def _check_mode(mode: str) -> None:
    from ..errors import ConfigError
    from ..training.compile import MODES

    if mode not in MODES:
        raise ConfigError(f"--compile {mode!r}: choose {', '.join(MODES)}")


def tower_compile_stats(model: nn.Module) -> dict:
    """``{"media/default": stats, ...}``: what compiled inference of ``model`` did so far
    (:attr:`clapkit.training.compile.Compiled.stats`)."""
    return {f"{w}/{m}": dict(c.stats) for (w, m), c in _COMPILED.get(model, {}).items()}


def precision_tag() -> str:
    """``"bf16"`` inside a bf16 autocast, else ``""``."""
    for device in ("cpu", "cuda"):
        if torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.bfloat16:
            return "bf16"
    return ""


def compile_mode() -> str:
    """The :func:`inference_compile` mode in force (``none`` outside one)."""
    return _COMPILE.get()


def store_tag() -> str:
    """What the embeddings computed here differ by, for a cache's store names: ``+bf16``
    (:func:`precision_tag`), ``+compiled`` (an :func:`inference_compile` other than none:
    equal to eager within rounding, not bit for bit), both, or ``""``."""
    parts = [precision_tag(), "compiled" if _COMPILE.get() != "none" else ""]
    return "".join(f"+{p}" for p in parts if p)


def unit_rows(a: np.ndarray) -> np.ndarray:
    """Each row of ``a`` scaled to length 1 (an all-zero row stays zero), in ``a``'s dtype."""
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


class _Preprocess:
    """Collate for a public model: its own preprocessing of a batch of decoded media."""

    def __init__(self, model: PublicDualEncoder, items: Sequence):
        self.model, self.items = model, items

    def __call__(self, batch: list) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        media, idx = zip(*batch, strict=True)
        keys = [str(self.items[i].media) for i in idx]  # each clip's random draws seeded by its file
        return self.model.preprocess(list(media), keys), torch.tensor(idx)


def media_loader(model, items: Sequence, batch_size: int, num_workers: int = 0) -> DataLoader:
    """Batches ``(inputs, indices)`` of ``items`` for the model's media tower, in order."""
    if isinstance(model, PublicDualEncoder):
        ds = RawMedia(items, model.medium, model.sample_rate)
        collate = _Preprocess(model, ds.items)
    else:
        ds, collate = media_dataset(model.cfg, items, train=False), collate_clips
    return DataLoader(ds, batch_size=batch_size, collate_fn=collate, num_workers=num_workers)


def to_device(inputs, device):
    """A tensor or a dict of tensors on ``device``."""
    if isinstance(inputs, dict):
        return {k: v.to(device) for k, v in inputs.items()}
    return inputs.to(device)


def embed_media(
    model: DualEncoder, items: Sequence, batch_size: int = 32, projected: bool = True,
    device: str | torch.device = "cpu", num_workers: int = 0, progress: bool = False, compile: str | None = None,
) -> np.ndarray:
    """E_m (projected, L2-normalised) or x_m (backbone output) of ``items`` (have ``.media``)."""
    kind = "E" if projected else "x"
    return media_features(model, items, (kind,), batch_size, device, num_workers, progress, compile)[kind]


@torch.no_grad()
def media_features(
    model: DualEncoder, items: Sequence, kinds: Sequence[str] = ("x", "E"), batch_size: int = 32,
    device: str | torch.device = "cpu", num_workers: int = 0, progress: bool = False, compile: str | None = None,
) -> dict[str, np.ndarray]:
    """``{"x": backbone outputs, "E": projected L2-normalised embeddings}`` of ``items``
    (the ``kinds`` asked for), from one pass of the media tower, eager or compiled
    (``compile``: see :func:`tower`). Under ``torchrun`` each process embeds every
    ``world``-th batch and all get the whole result, in item order
    (:mod:`clapkit.distributed`)."""
    from ..distributed import gather_batches, my_batches

    bad = set(kinds) - set(FEATURES)
    if bad or not kinds:
        raise ValueError(f"features {sorted(bad) or list(kinds)}: choose from {', '.join(FEATURES)}")
    model.eval()
    run = tower(model, "media", compile)
    n_batches = -(-len(items) // batch_size)
    mine = my_batches(n_batches)
    share = [item for b in mine for item in items[b * batch_size : (b + 1) * batch_size]]
    loader = media_loader(model, share, batch_size, num_workers)
    if progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc=model.medium, leave=False, disable=None)  # off when not a terminal
    done = {}
    for b, (media, _) in zip(mine, loader, strict=True):
        out = dict(zip(("x", "E"), run(to_device(media, device)), strict=True))
        done[b] = {k: out[k].float().cpu().numpy() for k in kinds}
    parts = gather_batches(done, n_batches)
    return {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros((0, 0), np.float32) for k in kinds}


@torch.no_grad()
def embed_text(
    model: DualEncoder, texts: Sequence[str], batch_size: int = 64, projected: bool = True,
    device: str | torch.device = "cpu", compile: str | None = None,
) -> np.ndarray:
    """E_t (projected, L2-normalised) or x_t (backbone output) of ``texts``, eager or
    compiled (``compile``: see :func:`tower`); under ``torchrun`` split by batches as
    :func:`media_features` is."""
    from ..distributed import gather_batches, my_batches

    model.eval()
    run = tower(model, "text", compile)
    n_batches = -(-len(texts) // batch_size)
    done = {}
    for b in my_batches(n_batches):
        x, e = run(model.text.tokenize(list(texts[b * batch_size : (b + 1) * batch_size]), device))
        done[b] = (e if projected else x).float().cpu().numpy()
    parts = gather_batches(done, n_batches)
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

