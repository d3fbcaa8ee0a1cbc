"""What a user reads is what the code does: every measured figure the README quotes comes
from benchmarks/readme_figures.py, recorded in benchmarks/readme_figures.json with the
sentence that quotes it and what it was computed from. The README must hold each sentence;
the fast figures are recomputed here; a slow figure whose preset or inputs changed since it
was computed fails until it is computed again (its command is in the message)."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
from conftest import REPO

FIGURES = REPO / "benchmarks" / "readme_figures.py"


@pytest.fixture(scope="module")
def figures():
    sys.path.insert(0, str(FIGURES.parent))
    spec = importlib.util.spec_from_file_location("readme_figures", FIGURES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(FIGURES.parent))


def test_every_recorded_figure_is_quoted_by_the_readme_and_still_current(figures):
    record = json.loads(figures.RECORD.read_text())
    readme = (REPO / "README.md").read_text()
    assert set(record) == set(figures.FIGURES), "every figure recorded: python benchmarks/readme_figures.py --write"
    for name, entry in record.items():
        rerun = f"python benchmarks/readme_figures.py --figures {name} --write"
        assert entry["readme"] == figures.sentence(name, entry["values"]), f"{name}: the record is stale ({rerun})"
        assert entry["readme"] in readme, f"README.md does not quote {name} as computed: {entry['readme']!r}"
        assert entry["source"] == figures.FIGURES[name][3](), f"{name}: its inputs changed since it was computed ({rerun})"


def test_the_fast_figures_are_what_todays_code_computes(figures, shared_data):
    record = json.loads(figures.RECORD.read_text())
    assert figures.leakage_shared() == record["leakage_shared"]["values"]
    # minilm_stsb takes 40 s: tests/test_sts.py computes it (the measured 82.0325, quoted to 2 places)
