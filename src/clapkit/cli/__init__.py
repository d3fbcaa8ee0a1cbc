"""The ``clapkit`` command line. Every metric command writes JSON and prints a summary.

One module per group of commands (train, evaluate, audit, experiments); the Typer
apps, option types and helpers they share live in :mod:`.common`.
"""

# importing a module registers its commands, in this order in --help
from . import experiments, train, evaluate, probe, audit, card, export, manifest  # noqa: F401, I001
from .common import app, main

__all__ = ["app", "main"]
