"""Evaluation: metrics on embeddings (pure functions) and evaluators that embed data."""
