"""Moved to :mod:`clapkit.models.public.hf` (kept so existing imports keep working)."""

from .public.base import PublicDualEncoder
from .public.hf import FAMILIES, HFDualEncoder, clap_features, hf_dual_family, hf_family
from .public.loader import load_model

__all__ = ["FAMILIES", "HFDualEncoder", "PublicDualEncoder", "clap_features", "hf_dual_family", "hf_family", "load_model"]
