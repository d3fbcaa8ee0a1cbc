"""End-to-end experiments that chain training, evaluation and audits from one config."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ClapkitError


class ExperimentStopped(ClapkitError):
    """A training run of an experiment was stopped (SIGTERM); the experiment stops with it."""


def train_once(train, cfg: dict, run: Path) -> dict:
    """The summary of the training run ``run`` (``train(cfg, run, resume)``: train_clap or
    train_cse), trained unless it finished before. A run a SIGTERM stopped (its summary says
    so) or one killed outright after saving ``last/`` resumes from ``last/``. A run stopped
    now stops the experiment (:class:`ExperimentStopped`), so that nothing is evaluated on a
    half-trained model; running the experiment again with the same output continues it."""
    run = Path(run)
    summary_file = run / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else None
    if summary is None or summary.get("stopped"):
        summary = train(cfg, run, resume=(run / "last").is_dir())
    if summary.get("stopped"):
        raise ExperimentStopped(f"{run}: stopped by {summary['stopped']}; run the experiment again with the same "
                                "--out to continue (finished runs are kept, this one resumes from last/)")
    return summary
