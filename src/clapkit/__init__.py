"""clapkit: contrastive cross-modal models with the language encoder at the centre."""

__version__ = "0.1.0"

from .api import Model, ZeroShot, load  # noqa: E402  (the Python interface: clapkit.load(...))

__all__ = ["Model", "ZeroShot", "__version__", "load"]
