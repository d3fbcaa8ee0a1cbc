"""The one loader of dual encoders: what a path or name is comes from
:func:`clapkit.models.formats.detect`, and each kind goes to its wrapper (clapkit's
:class:`~clapkit.models.dual.DualEncoder`, or a public model's in this package). Above every
wrapper, so none of them imports another's loader."""

from __future__ import annotations

from pathlib import Path

import torch

from ...errors import ConfigError
from ..dual import DualEncoder
from ..formats import KINDS, detect, transformers_family
from .hf import HFDualEncoder, _not_dual
from .laion_clap import load_laion_clap
from .msclap import MsclapDualEncoder
from .open_clip import OpenClipDualEncoder
from .pe_audio import PeAudioDualEncoder


def load_model(path: str | Path, device: str | torch.device = "cpu", text_model: str | None = None):
    """The dual encoder at ``path``, in eval mode: a clapkit checkpoint (:class:`DualEncoder`),
    a transformers ClapModel, CLIPModel or SiglipModel folder or hub name
    (:class:`HFDualEncoder`), an open_clip model, a LAION-CLAP ``.pt``, msclap weights or
    a Perception Encoder audio model; what it is comes from :func:`clapkit.models.formats.detect`.
    ``text_model``: for a LAION-CLAP or msclap file, which holds no tokenizer, the folder or hub
    name its text side is built on (default: the one the owner's package loads)."""
    kind = detect(path)
    if kind == "open_clip":
        return OpenClipDualEncoder(str(path)).to(device).eval()
    if kind == "laion-clap":
        return load_laion_clap(path, text_model).to(device).eval()
    if kind == "msclap":
        return MsclapDualEncoder(path, text_model).to(device).eval()
    if kind == "pe-audio":
        return PeAudioDualEncoder(str(path)).to(device).eval()
    if kind == "clapkit":
        return DualEncoder.load(Path(path)).to(device)
    if transformers_family(kind) is None:
        raise _not_dual(path, kind)
    return HFDualEncoder(str(path)).to(device)


def load_for_training(cfg: dict, folder: str | Path, resume: bool = False):
    """The model a run starts from: a clapkit checkpoint (``--resume``: as saved;
    ``model.init_from``: its weights under this run's config), or a public CLAP, CLIP or
    SigLIP in ``transformers`` format (or open_clip), fine-tuned in place and saved back in
    that format. What ``folder`` is comes from one :func:`clapkit.models.formats.detect`."""
    kind = detect(folder)
    if kind == "clapkit":
        return DualEncoder.load(folder) if resume else DualEncoder.load_as(folder, cfg)
    if kind == "open_clip":
        return OpenClipDualEncoder(str(folder)).for_training(cfg)
    if transformers_family(kind) is not None:
        return HFDualEncoder(str(folder)).for_training(cfg)
    if kind == "laion-clap":  # fine-tuned as the ClapModel it maps onto, saved as a transformers folder
        return load_laion_clap(folder).for_training(cfg)
    raise ConfigError(f"model.init_from = {folder}: {KINDS[kind]}; a run starts from a clapkit checkpoint or "
                      "a public CLAP, CLIP or SigLIP (a text encoder goes in model.text.name)")
