"""The embedded synthetic audio-caption set used by ``clapkit demo`` and the tests.

Sounds are built from three attributes, so class names are descriptive and share
words: pitch (low / high), pattern (steady / pulsing / rising / falling) and source
(beep / buzz / hiss / bell), e.g. "high pulsing beep". Captions describe a clip with
varied wording ("a shrill, stuttering sine tone"). Some attribute combinations are
*never used in training*; every one of their words is, so a model can only classify
them zero-shot by composing what it learnt. Everything is drawn from a seeded
generator: the same seed writes the same files.

Written layout (the formats clapkit reads)::

    train.csv            audio,caption  - pairs of the seen classes (several captions per clip)
    test.csv             audio,caption  - held-out clips of the seen classes (retrieval)
    unseen/<class>/*.wav folder-per-class set of the never-seen classes (zero-shot)
    seen/<class>/*.wav   folder-per-class set of held-out seen-class clips
    classes.json         class names, which are unseen, generation settings
"""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import soundfile as sf

PITCHES = {"low": (110.0, 220.0), "high": (1100.0, 2200.0)}
PATTERNS = ("steady", "pulsing", "rising", "falling")
SOURCES = ("beep", "buzz", "hiss", "bell")

WORDS = {
    "low": ("low", "low-pitched", "deep"),
    "high": ("high", "high-pitched", "shrill"),
    "steady": ("steady", "constant", "continuous"),
    "pulsing": ("pulsing", "repeating", "stuttering"),
    "rising": ("rising", "climbing", "upward sweeping"),
    "falling": ("falling", "descending", "downward sweeping"),
    "beep": ("beep", "pure tone", "sine tone"),
    "buzz": ("buzz", "buzzing drone", "harsh buzz"),
    "hiss": ("hiss", "hissing noise", "airy hiss"),
    "bell": ("bell", "ringing bell", "metallic chime"),
}
TEMPLATES = (
    "a {pitch} {pattern} {source}",
    "the sound of a {pitch} {source} that is {pattern}",
    "a {pattern} {source} at a {pitch} pitch",
    "someone plays a {pitch}, {pattern} {source}",
    "a {source}, {pitch} and {pattern}",
    "{pattern} {pitch} {source} in a quiet room",
)


def class_name(pitch: str, pattern: str, source: str) -> str:
    return f"{pitch} {pattern} {source}"


def all_classes() -> list[tuple[str, str, str]]:
    return list(itertools.product(PITCHES, PATTERNS, SOURCES))


def unseen_classes() -> list[tuple[str, str, str]]:
    """8 of the 32 combinations, chosen so every word still occurs in a seen class and each
    (pattern, source) pair is seen with the other pitch."""
    return held_out_combinations(list(PITCHES), PATTERNS, SOURCES)


def held_out_combinations(first, second, third) -> list[tuple[str, str, str]]:
    """A quarter of the combinations of a 2 x 4 x 4 attribute grid, held out of training:
    (a, b, c) at positions (p, i, j) with (i + j + 2p) % 4 == 0, so every (b, c) pair is
    held out with one value of ``first`` and seen with the other, and every word of a
    held-out combination occurs in seen ones. The image set uses the same rule."""
    return [(a, b, c) for p, a in enumerate(first) for i, b in enumerate(second) for j, c in enumerate(third)
            if (i + j + 2 * p) % 4 == 0]


def synth_clip(pitch: str, pattern: str, source: str, rng: np.random.Generator, sr: int, seconds: float) -> np.ndarray:
    n = int(sr * seconds)
    t = np.arange(n) / sr
    lo, hi = PITCHES[pitch]
    f0 = np.exp(rng.uniform(np.log(lo), np.log(hi)))
    span = 1.5 * rng.uniform(0.8, 1.2)  # octaves swept by rising/falling
    if pattern == "rising":
        freq = f0 * 2 ** (span * (t / seconds - 0.5))
    elif pattern == "falling":
        freq = f0 * 2 ** (span * (0.5 - t / seconds))
    else:
        freq = np.full(n, f0)
    phase = 2 * np.pi * np.cumsum(freq) / sr + rng.uniform(0, 2 * np.pi)
    if source == "beep":
        x = np.sin(phase)
    elif source == "buzz":
        x = sum(np.sin(k * phase) / k for k in range(1, 12)) * 0.6
    elif source == "hiss":  # narrow-band noise around the frequency track
        noise = rng.standard_normal(n + 64)
        width = max(4, int(sr / (0.15 * f0 + 40)))
        smooth = np.convolve(noise, np.ones(width) / np.sqrt(width), mode="same")[:n]
        x = smooth * np.sin(phase)
        x /= np.abs(x).max() + 1e-9
    else:  # bell: inharmonic partials
        x = sum(np.sin(r * phase) / (1 + i) for i, r in enumerate((1.0, 2.76, 5.40, 8.93))) * 0.5
    if pattern == "pulsing":
        rate = rng.uniform(3.0, 5.0)
        x = x * (np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)) > 0)
    onset = int(rng.uniform(0, 0.15) * n)
    env = np.ones(n)
    env[:onset] = 0
    fade = int(0.01 * sr)
    env[onset : onset + fade] *= np.linspace(0, 1, fade)[: max(0, min(fade, n - onset))]
    x = x * env * rng.uniform(0.3, 0.9)
    x = x + rng.standard_normal(n) * rng.uniform(0.005, 0.03)
    return x.astype(np.float32)


def caption(pitch: str, pattern: str, source: str, rng: np.random.Generator) -> str:
    tpl = TEMPLATES[rng.integers(len(TEMPLATES))]
    words = {k: WORDS[v][rng.integers(3)] for k, v in (("pitch", pitch), ("pattern", pattern), ("source", source))}
    text = tpl.format(**words)
    return text[0].upper() + text[1:] + "."


def write_synthetic(
    out: str | Path, seed: int = 0, sr: int = 16000, seconds: float = 2.0,
    train_clips: int = 16, test_clips: int = 4, unseen_clips: int = 10, captions_per_clip: int = 3,
) -> dict:
    """Write the set to ``out``; returns the contents of ``classes.json``."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    unseen = set(unseen_classes())
    train_rows, test_rows = [], []

    def write(rel: str, cls: tuple[str, str, str]) -> None:
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, synth_clip(*cls, rng, sr, seconds), sr, subtype="PCM_16")

    for cls in all_classes():
        name = class_name(*cls).replace(" ", "_")
        if cls in unseen:
            for k in range(unseen_clips):
                write(f"unseen/{name}/{name}_{k:02d}.wav", cls)
            continue
        for k in range(train_clips):
            rel = f"audio/{name}_{k:02d}.wav"
            write(rel, cls)
            train_rows += [(rel, caption(*cls, rng)) for _ in range(captions_per_clip)]
        for k in range(test_clips):
            rel = f"seen/{name}/{name}_test{k:02d}.wav"
            write(rel, cls)
            test_rows += [(rel, caption(*cls, rng)) for _ in range(2)]
    for fname, rows in (("train.csv", train_rows), ("test.csv", test_rows)):
        with open(out / fname, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["audio", "caption"])
            w.writerows(rows)
    meta = {
        "classes": [class_name(*c) for c in all_classes()],
        "unseen": [class_name(*c) for c in all_classes() if c in unseen],
        "seed": seed, "sample_rate": sr, "seconds": seconds,
        "train_pairs": len(train_rows), "test_pairs": len(test_rows),
    }
    (out / "classes.json").write_text(json.dumps(meta, indent=2))
    return meta


# --- the leakage set --------------------------------------------------------------------
# Evaluation class names use one family of words; ordinary captions use synonyms. "Dirty"
# training captions sometimes use the evaluation words too, as real caption sets name
# ESC-50's classes; removing the captions that contain them (the clean filter of the
# CLAP-pitfalls paper) leaves only the synonyms, so a clean model must rely on the text
# encoder to relate "shrill" to "high".
EVAL_WORDS = {
    "high": "shrill", "low": "deep",
    "steady": "constant", "pulsing": "stuttering", "rising": "ascending", "falling": "descending",
    "beep": "tone", "buzz": "drone", "hiss": "whoosh", "bell": "chime",
}
PLAIN_WORDS = {
    "high": ("high", "high-pitched"), "low": ("low", "low-pitched"),
    "steady": ("steady", "continuous"), "pulsing": ("pulsing", "repeating"),
    "rising": ("rising", "climbing"), "falling": ("falling", "dropping"),
    "beep": ("beep", "sine wave"), "buzz": ("buzz", "buzzing sound"), "hiss": ("hiss", "hissing sound"),
    "bell": ("bell", "ringing bell"),
}


def eval_label(cls: tuple[str, str, str]) -> str:
    return "_".join(EVAL_WORDS[a] for a in cls)


def _leaky_caption(cls: tuple[str, str, str], rng: np.random.Generator, leak: float) -> str:
    words = {}
    for key, attr in zip(("pitch", "pattern", "source"), cls, strict=True):
        words[key] = EVAL_WORDS[attr] if rng.random() < leak else PLAIN_WORDS[attr][rng.integers(2)]
    text = TEMPLATES[rng.integers(len(TEMPLATES))].format(**words)
    return text[0].upper() + text[1:] + "."


def write_leakage_set(
    out: str | Path, seed: int = 0, sr: int = 16000, seconds: float = 2.0, pretrain_clips: int = 12,
    train_clips: int = 10, eval_clips: int = 20, captions_per_clip: int = 3, leak: float = 0.1,
) -> dict:
    """Write the data of the synthetic 2 x 3 leakage experiment to ``out``::

        pretrain/<class>/*.wav   labelled set for backbone pre-training (all 32 combinations)
        train_dirty.csv          audio,caption pairs of all 32 combinations; a fraction
                                 ``leak`` of caption words use the evaluation vocabulary
        eval/<label>/*.wav       held-out clips of the 8 evaluation classes, named with
                                 the evaluation vocabulary (e.g. shrill_ascending_chime)
        leakage.json             evaluation classes and the pre-training classes they match
    """
    out = Path(out)
    rng = np.random.default_rng(seed)
    evals = unseen_classes()

    def write(rel: str, cls) -> str:
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, synth_clip(*cls, rng, sr, seconds), sr, subtype="PCM_16")
        return rel

    rows = []
    for cls in all_classes():
        name = class_name(*cls).replace(" ", "_")
        for k in range(pretrain_clips):
            write(f"pretrain/{name}/{name}_{k:02d}.wav", cls)
        for k in range(train_clips):
            rel = write(f"audio/{name}_{k:02d}.wav", cls)
            rows += [(rel, _leaky_caption(cls, rng, leak)) for _ in range(captions_per_clip)]
        if cls in evals:
            for k in range(eval_clips):
                write(f"eval/{eval_label(cls)}/{eval_label(cls)}_{k:02d}.wav", cls)
    with open(out / "train_dirty.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["audio", "caption"])
        w.writerows(rows)
    meta = {
        "eval_classes": [eval_label(c) for c in evals],
        "pretrain_classes_matching_eval": [class_name(*c).replace(" ", "_") for c in evals],
        "train_pairs": len(rows), "leak": leak, "seed": seed,
    }
    (out / "leakage.json").write_text(json.dumps(meta, indent=2))
    return meta


def write_unpaired_pool(out: str | Path, seed: int = 100, sr: int = 16000, seconds: float = 2.0, per_class: int = 6) -> int:
    """Audio of every class with neither captions nor labels (file names carry no class):
    the unpaired pool of the teacher-curation experiment. Returns the number of clips."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    jobs = [cls for cls in all_classes() for _ in range(per_class)]
    order = rng.permutation(len(jobs))
    for n, j in enumerate(order):
        sf.write(out / f"pool_{n:05d}.wav", synth_clip(*jobs[j], rng, sr, seconds), sr, subtype="PCM_16")
    return len(jobs)
