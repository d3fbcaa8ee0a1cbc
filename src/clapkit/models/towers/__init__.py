"""Media towers by name: ``model.audio.name`` and ``model.image.name`` -> a builder.

A tower's file in this package registers its builder::

    @register_tower("audio", "small_cnn", "a few conv blocks over a log-mel, for CPU")
    def build(settings: dict, sample_rate: int, **_) -> nn.Module: ...

and :func:`build_tower` imports every file here on its first call, so a new tower is
one new file: the dual encoder, ``train audio-backbone`` and ``clapkit config`` reach
it by its name. A tower registered as ``PREFIX`` also takes ``PREFIX:ARGUMENT`` names
(``hf:PATH``, ``timm:NAME``), its argument in ``settings["name"]``. A builder gets its section of the config (``model.audio`` or
``model.image``; a new tower's own keyword arguments go in that section's ``options``
mapping, which takes any keys) and what the run resolved: ``sample_rate`` (audio),
``image_size`` and ``config_folder`` (images: a checkpoint's saved Hugging Face config).
A tower maps its input to ``(B, embed_dim)`` and says its ``embed_dim``. An image name
that no file registers is a Hugging Face folder or hub name (:class:`.image.HFVisionTower`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ...discovery import import_package
from ...errors import ConfigError

MEDIA = ("audio", "image")


@dataclass(frozen=True)
class Tower:
    medium: str
    name: str
    build: Callable[..., nn.Module]
    summary: str
    module: str


_TOWERS: dict[tuple[str, str], Tower] = {}
_FALLBACK: dict[str, Callable[..., nn.Module]] = {}  # medium -> builder of a name no file registers


def register_tower(medium: str, name: str, summary: str):
    """Register the decorated builder as ``model.<medium>.name: <name>``."""
    if medium not in MEDIA:
        raise ValueError(f"tower {name!r}: medium {medium!r}; choose one of {MEDIA}")

    def register(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        known = _TOWERS.get((medium, name))
        if known is not None and known.module != build.__module__:
            raise ValueError(f"tower {medium}/{name} is registered by {known.module} already")
        _TOWERS[(medium, name)] = Tower(medium, name, build, summary, build.__module__)
        return build

    return register


def register_fallback(medium: str):
    """Register the builder of a ``model.<medium>.name`` that no file registers."""
    def register(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _FALLBACK[medium] = build
        return build

    return register


def _discover() -> None:
    import_package(__name__)


def towers(medium: str) -> list[Tower]:
    _discover()
    return [t for (m, _), t in _TOWERS.items() if m == medium]


def build_tower(medium: str, settings: dict, **context) -> nn.Module:
    """The tower ``settings["name"]`` of ``medium`` (see the module docstring)."""
    _discover()
    name = settings["name"]
    entry = _TOWERS.get((medium, name))
    if entry is None and isinstance(name, str) and ":" in name:  # PREFIX:ARGUMENT, e.g. hf:PATH, timm:NAME
        entry = _TOWERS.get((medium, name.split(":", 1)[0]))
    if entry is not None:
        return entry.build(settings, **context)
    if medium in _FALLBACK:
        return _FALLBACK[medium](settings, **context)
    names = ", ".join(t.name for t in towers(medium))
    raise ConfigError(f"model.{medium}.name = {settings['name']!r}; choose one of {names}")
