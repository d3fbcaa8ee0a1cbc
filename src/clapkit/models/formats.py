"""The one place that recognises a model format: every command, ``model.init_from``, the
text tower and the audio tower's checkpoint ask :func:`detect` what a path or name is.

=======================  ==============================================================
kind                     what it is
=======================  ==============================================================
``clapkit``              a clapkit dual-encoder checkpoint (``config.json`` with a
                         ``model`` section, ``model.safetensors``, ``text/``), old or new
``train-cse``            a ``clapkit train cse`` output (``cse_model.json``)
``sentence-transformers`` a sentence-transformers folder (``modules.json``); ``minilm``
``hf-clap``              a transformers ClapModel folder or hub name
``hf-clip``              a transformers CLIPModel folder or hub name
``hf-siglip``            a transformers SiglipModel folder or hub name
``hf-text``              any other transformers model folder or hub name (a text encoder)
``open_clip``            ``open_clip:NAME[@PRETRAINED]``, ``open_clip:hf-hub:ORG/REPO``, or a
                         folder with ``open_clip_config.json`` and no ``config.json``
``laion-clap``           a LAION-CLAP training checkpoint (``630k-audioset-best.pt``, ...): a
                         ``.pt`` whose state dict holds ``audio_branch`` and ``text_branch``
``msclap``               Microsoft CLAP's weights (``CLAP_weights_2022.pth``, ``_2023.pth``: a
                         ``.pth`` whose ``model`` holds ``audio_encoder`` and ``caption_encoder``)
``pe-audio``             a transformers ``PeAudioModel`` folder or hub name (Perception
                         Encoder audio-text)
``audio-tower``          an audio tower's weights: ``train audio-backbone``'s
                         ``.safetensors`` or a PANNs ``.pth`` checkpoint
=======================  ==============================================================

A folder that is none of these gets one error listing the kinds.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from ..errors import ConfigError

KINDS = {
    "clapkit": "a clapkit checkpoint (config.json with a model section, model.safetensors, text/)",
    "train-cse": "a `clapkit train cse` output (cse_model.json)",
    "sentence-transformers": "a sentence-transformers folder (modules.json), or minilm",
    "hf-clap": "a transformers ClapModel folder or hub name",
    "hf-clip": "a transformers CLIPModel folder or hub name",
    "hf-siglip": "a transformers SiglipModel folder or hub name",
    "hf-text": "another transformers model folder or hub name (a text encoder)",
    "open_clip": "open_clip:NAME[@PRETRAINED], open_clip:hf-hub:ORG/REPO, or a folder with open_clip_config.json",
    "laion-clap": "a LAION-CLAP checkpoint file (.pt with audio_branch and text_branch weights, e.g. 630k-audioset-best.pt)",
    "msclap": "Microsoft CLAP weights (CLAP_weights_2022.pth or _2023.pth: a .pth with audio_encoder and caption_encoder)",
    "pe-audio": "a transformers PeAudioModel folder or hub name (Perception Encoder audio-text)",
    "audio-tower": "an audio tower file: train audio-backbone's .safetensors or a PANNs .pth",
}
DUAL = ("clapkit", "hf-clap", "hf-clip", "hf-siglip", "open_clip", "laion-clap", "msclap", "pe-audio")
PUBLIC_FAMILIES = {"clap": "audio", "clip": "image", "siglip": "image"}  # transformers model_type -> medium
OTHER_TYPES = {"pe_audio": "pe-audio"}  # other transformers model_types clapkit wraps -> kind
KIND_MEDIUM = {"laion-clap": "audio", "msclap": "audio", "pe-audio": "audio", "open_clip": "image"}
OPEN_CLIP_PREFIX = "open_clip:"


def unknown(name, why: str) -> ConfigError:
    """The one error for a path or name that is no model clapkit reads: why, and the kinds."""
    kinds = "\n".join(f"  - {v}" for v in KINDS.values())
    return ConfigError(f"{name}: not a model clapkit reads ({why}); give one of:\n{kinds}")


def detect(name: str | Path) -> str:
    """The kind of model at ``name`` (a folder, a file, ``minilm``, ``open_clip:...`` or a
    hub name), or a :class:`ConfigError` listing the kinds."""
    if str(name).startswith(OPEN_CLIP_PREFIX):
        return "open_clip"
    if str(name) == "minilm":
        return "sentence-transformers"
    p = Path(name)
    if p.is_file():
        if p.suffix in (".safetensors", ".pth", ".pt", ".ckpt"):
            if is_laion_clap(p):
                return "laion-clap"
            return "msclap" if msclap_version(p) else "audio-tower"
        raise unknown(p, "a file, not a model folder")
    if p.is_dir():
        return _folder(p)
    return _hub(name)


@functools.lru_cache(maxsize=16)
def _state_keys(path: str, stamp: tuple, inner: str) -> frozenset[str]:
    """The names in a torch checkpoint's state dict (its ``inner`` entry when the file holds
    one, DDP's ``module.`` prefix off), read through a memory map; empty for a file that is no
    tensors-only zip checkpoint."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception:  # not a zip checkpoint (mmap), or not tensors only: not one of these kinds
        return frozenset()
    sd = ckpt.get(inner, ckpt) if isinstance(ckpt, dict) else None
    return frozenset(str(k).removeprefix("module.") for k in sd) if isinstance(sd, dict) else frozenset()


def _file_keys(path: Path, inner: str) -> frozenset[str]:
    st = path.stat()
    return _state_keys(str(path.resolve()), (st.st_size, st.st_mtime_ns), inner)


def is_laion_clap(path: str | Path) -> bool:
    """Whether ``path`` is a LAION-CLAP training checkpoint: its state dict (``state_dict``)
    holds an ``audio_branch`` and a ``text_branch``."""
    p = Path(path)
    if not p.is_file() or p.suffix not in (".pt", ".pth", ".ckpt"):
        return False
    keys = _file_keys(p, "state_dict")
    return any(k.startswith("audio_branch.") for k in keys) and any(k.startswith("text_branch.") for k in keys)


def msclap_version(path: str | Path) -> str | None:
    """``2022`` or ``2023`` for msclap weights (``model`` holds a ``caption_encoder``; the
    audio tower tells the version: CNN14 or HTSAT), else None."""
    p = Path(path)
    if not p.is_file() or p.suffix not in (".pth", ".pt", ".ckpt"):
        return None
    keys = _file_keys(p, "model")
    if not any(k.startswith("caption_encoder.") for k in keys):
        return None
    if "audio_encoder.base.conv_block1.conv1.weight" in keys:
        return "2022"
    return "2023" if any(k.startswith("audio_encoder.base.") for k in keys) else None


def _folder(p: Path) -> str:
    if (p / "cse_model.json").is_file():
        return "train-cse"
    config = p / "config.json"
    if not config.is_file():
        if (p / "open_clip_config.json").is_file():
            return "open_clip"
        raise unknown(p, "no config.json, cse_model.json or open_clip_config.json")
    try:
        cfg = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{config}: unreadable ({exc})") from exc
    if not isinstance(cfg, dict):
        raise unknown(p, "its config.json is not a mapping")
    if "model" in cfg and "model_type" not in cfg:
        if not (p / "text").is_dir() or not (p / "model.safetensors").is_file():
            missing = "text/" if not (p / "text").is_dir() else "model.safetensors"
            raise ConfigError(f"{p}: not a clapkit checkpoint (no {missing}); pass the checkpoint folder that "
                              "`clapkit train clap`, `train clip` or `clapkit demo` wrote")
        return "clapkit"
    if cfg.get("model_type") in PUBLIC_FAMILIES:
        return f"hf-{cfg['model_type']}"
    if cfg.get("model_type") in OTHER_TYPES:
        return OTHER_TYPES[cfg["model_type"]]
    if (p / "modules.json").is_file():
        return "sentence-transformers"
    if "model_type" in cfg:
        return "hf-text"
    raise unknown(p, "its config.json names no model_type and no clapkit model section")


def _hub(name) -> str:
    from transformers import AutoConfig

    try:
        model_type = AutoConfig.from_pretrained(str(name)).model_type
    except (OSError, ValueError) as exc:
        raise unknown(name, f"neither a local folder or file nor a hub model this machine can reach ({exc})") from exc
    if model_type in OTHER_TYPES:
        return OTHER_TYPES[model_type]
    return f"hf-{model_type}" if model_type in PUBLIC_FAMILIES else "hf-text"


def transformers_family(kind: str | None) -> str | None:
    """``clap``, ``clip`` or ``siglip`` for a transformers dual-encoder kind, else None."""
    return kind[3:] if kind and kind.startswith("hf-") and kind[3:] in PUBLIC_FAMILIES else None


def public_family(kind: str | None) -> str | None:
    """The family of a public dual encoder's kind (a transformers family, ``open_clip``,
    ``laion-clap`` or ``pe-audio``), else None."""
    return kind if kind in KIND_MEDIUM else transformers_family(kind)


def kind_medium(kind: str) -> str | None:
    """The medium of a public dual encoder's kind (``audio`` or ``image``); None for a
    clapkit checkpoint (its config says) and for kinds that are no dual encoder."""
    return KIND_MEDIUM.get(kind) or PUBLIC_FAMILIES.get(transformers_family(kind) or "")


def kind_or_none(name: str | Path) -> str | None:
    """:func:`detect`, or None where it names no kind (a missing path, a bad folder)."""
    try:
        return detect(name)
    except ConfigError:
        return None
