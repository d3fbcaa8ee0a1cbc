"""What a loaded model is and where it came from, for every result that names a model
(the Python API's ``Model.provenance``, bench rows, the evaluations' JSON).

==================  ==========================================================================
key                 value
==================  ==========================================================================
``kind``            the loader's kind (:mod:`clapkit.models.formats`): ``clapkit``,
                    ``hf-clap``, ``laion-clap``, ``pe-audio``, ``open_clip``, ...
``family``          the architecture family: clapkit's towers (``cnn14+bert``), a transformers
                    ``model_type``, ``open_clip``'s model name
``source``          the path, hub name or spec it was loaded from
``fingerprint``     :func:`model_fingerprint`: the files' relative names and sizes and the
                    config's bytes (not where the folder is, nor when it was written)
``library``         whose format the files are in: ``clapkit``, ``transformers``,
                    ``sentence-transformers`` (a folder with ``modules.json``), ``open_clip``,
                    ``laion_clap``, ``msclap``
``medium``          ``audio``, ``image`` or None (a text encoder)
``training_data``   what the model's own files say it was trained on: a clapkit run's
                    ``data.train``, a model card's ``datasets:``; None where they say nothing
==================  ==========================================================================
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any


def model_fingerprint(spec: str, cards: bool = False) -> str:
    """Which model a result came from: the relative names and sizes of the model's files
    (its model card, ``README.md``, aside) and its config.json bytes (a hub name by its name). It does not depend on where the
    folder is or when it was written, so a copy on another machine gives the same value;
    the embedding cache's :func:`clapkit.inference.cache.model_fingerprint` adds the files'
    mtimes, because it asks a different question (are these vectors stale?). ``cards``: count
    the model cards too, as fingerprints did before cards were left aside (what results
    written then record)."""
    path = Path(spec)
    if not path.exists():
        return hashlib.sha256(spec.encode()).hexdigest()[:16]  # a hub name: the name is what is known
    # a model card (README.md) describes the model and is rewritten by `clapkit card`: not part of what it is
    files = [p for p in sorted(path.rglob("*")) if p.is_file() and (cards or p.name != "README.md")] \
        if path.is_dir() else [path]
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(path) if path.is_dir() else p.name}\t{p.stat().st_size}\n".encode())
        if p.name == "config.json":
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def describe(source: str, net, kind: str | None = None) -> dict[str, Any]:
    """The provenance of ``net`` loaded from ``source`` (see the module docstring)."""
    from .formats import kind_or_none

    kind = kind or kind_or_none(source)
    medium = getattr(net, "medium", None) if hasattr(net, "media_backbone") else None
    return {"kind": kind, "family": _family(net, kind), "library": _library(source, kind), "source": str(source),
            "fingerprint": model_fingerprint(str(source)), "medium": medium, "training_data": _training_data(source, net)}


def audio_input(net) -> dict[str, Any] | None:
    """What an audio model's front end is fed (None for other models): ``sample_rate`` (audio
    is resampled to it), ``clip_seconds`` (the window one embedding sees: a clapkit model's
    ``audio.segment_seconds``, a transformers CLAP extractor's ``nb_max_samples``; None where
    the model does not say) and ``fusion`` (LAION-CLAP's feature fusion of longer clips)."""
    if getattr(net, "medium", None) != "audio":
        return None
    cfg = getattr(net, "cfg", None) or {}
    audio = cfg.get("audio", {}) if isinstance(cfg, dict) else {}
    rate = getattr(net, "sample_rate", None) or audio.get("sample_rate")
    processor = getattr(net, "processor", None)
    window = getattr(processor, "nb_max_samples", None)
    seconds = window / rate if window and rate else audio.get("segment_seconds")
    fused = getattr(net, "fused", None)
    return {"sample_rate": int(rate) if rate else None, "clip_seconds": float(seconds) if seconds else None,
            "fusion": bool(fused) if isinstance(fused, bool) else None}


def _library(source, kind: str | None) -> str | None:
    if kind in ("clapkit", "train-cse", "audio-tower"):
        return "clapkit"
    if kind == "sentence-transformers" or (Path(str(source)) / "modules.json").is_file():
        return "sentence-transformers"
    return {"open_clip": "open_clip", "laion-clap": "laion_clap", "msclap": "msclap"}.get(kind or "", "transformers" if kind else None)


def _family(net, kind: str | None) -> str | None:
    cfg = getattr(net, "cfg", None) or {}
    model = cfg.get("model", {}) if isinstance(cfg, dict) else {}
    if kind == "clapkit":
        medium = model.get("modality", "audio")
        tower = model.get(medium, {}).get("name") if isinstance(model.get(medium), dict) else None
        text = model.get("text", {}).get("name") if isinstance(model.get("text"), dict) else None
        return "+".join(str(t) for t in (tower, text) if t) or "clapkit"
    if kind == "open_clip":
        return f"open_clip:{getattr(net, 'family', '')}".rstrip(":")
    return model.get("family") or getattr(net, "family", None) or kind


def _training_data(source, net) -> Any:
    cfg = getattr(net, "cfg", None)
    if isinstance(cfg, dict) and isinstance(cfg.get("data"), dict) and cfg["data"].get("train"):
        return cfg["data"]["train"]
    path = Path(str(source))
    card = path / "README.md" if path.is_dir() else None
    if card is None or not card.is_file():
        return None
    text = card.read_text(errors="replace")
    front = re.match(r"---\n(.*?)\n---", text, re.S)
    if not front:
        return None
    import yaml

    try:
        meta = yaml.safe_load(front[1]) or {}
    except yaml.YAMLError:
        return None
    return meta.get("datasets") if isinstance(meta, dict) else None
