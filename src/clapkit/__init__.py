"""clapkit: contrastive cross-modal models with the language encoder at the centre."""

__version__ = "0.1.0"
