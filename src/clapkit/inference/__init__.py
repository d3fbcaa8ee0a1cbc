"""Inference with a trained dual encoder: deterministic embedding of media and texts
(:mod:`.embed`) and the on-disk embedding cache of a checkpoint (:mod:`.cache`).
Training (frozen-phase and teacher caches), evaluation, audit and curation build on it."""
