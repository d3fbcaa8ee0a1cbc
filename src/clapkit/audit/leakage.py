"""Caption/label leakage: which training captions name an evaluation class.

A zero-shot claim assumes the evaluation classes were never seen in training. The
CLAP-pitfalls paper shows that captions naming the classes ("a dog barks" against
ESC-50's *dog*) inflate zero-shot accuracy; its "clean" training set drops every pair
whose caption contains a word of the evaluation class set. This module reproduces and
reports that filter:

- Class names are split into content words (``door_wood_knock`` -> door, wood, knock);
  stop words are dropped (scikit-learn's English list, minus the content words it
  happens to contain such as *fire*; see :data:`STOP_WORDS`).
- Captions and class words are lower-cased, split into alphabetic tokens and reduced
  by the Snowball (Porter 2) English stemmer, so inflections match (dog/dogs,
  bark/barks/barking) but a word inside another does not (*cat* vs *category*).
- A caption is dirty for a class if it shares any stem with the class's words.

The word list is written out (``words.txt``: ``class<TAB>word word ...``) so a user can
edit it (add *can* back to *can_opening*, drop *train* if *training* is common in
their captions) and run again with ``--words``. Stemming is a heuristic: irregular
forms (mouse/mice) need their own entry in the word list.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import snowballstemmer
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from ..data.manifests import Pair
from ..data.text import read_text
from ..errors import DataError

# Words in scikit-learn's stop list that are nouns or adjectives naming things or sounds.
_CONTENT_WORDS = {
    "fire", "bill", "mill", "call", "back", "bottom", "front", "side", "top", "fill", "empty",
    "full", "thick", "thin", "move", "show", "system", "part", "interest", "found", "find", "give",
    "describe", "detail",
}
STOP_WORDS = frozenset(ENGLISH_STOP_WORDS - _CONTENT_WORDS)
_TOKEN = re.compile(r"[a-z]+")
_STEMMER = snowballstemmer.stemmer("english")


def tokenize(text: str) -> list[str]:
    """Lower-cased alphabetic tokens ("Dog's bark-like" -> dog, s, bark, like)."""
    return _TOKEN.findall(text.lower())


@lru_cache(maxsize=200_000)
def stem(word: str) -> str:
    return _STEMMER.stemWord(word)


def label_words(label: str) -> list[str]:
    """Content words of a class name: split on ``_``, spaces and punctuation, stop words out."""
    return [w for w in tokenize(label) if w not in STOP_WORDS]


def write_word_list(path: Path, words: dict[str, list[str]]) -> None:
    lines = ["# class<TAB>words that mark a caption as naming the class (edit, then rerun with --words)"]
    lines += [f"{label}\t{' '.join(ws)}" for label, ws in words.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_word_list(path: str | Path) -> dict[str, list[str]]:
    words: dict[str, list[str]] = {}
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        if "\t" not in line:
            raise DataError("expected 'class<TAB>word word ...'", f"{path} line {n}")
        label, ws = line.split("\t", 1)
        words[label.strip()] = [w.lower() for w in ws.split()]
    if not words:
        raise DataError("no classes in the word list", str(path))
    return words


@dataclass
class ScanResult:
    dirty: list[list[str]]  # per pair: the classes its caption names
    per_class: dict[str, dict] = field(default_factory=dict)


def scan(pairs: list[Pair], words: dict[str, list[str]], examples: int = 5) -> ScanResult:
    """Mark each pair's caption with the classes whose words it contains."""
    by_stem: dict[str, set[str]] = defaultdict(set)
    for label, ws in words.items():
        for w in ws:
            by_stem[stem(w)].add(label)
    per_class = {label: {"captions": 0, "matched_words": Counter(), "examples": []} for label in words}
    dirty = []
    for pair in pairs:
        hits: dict[str, set[str]] = defaultdict(set)
        for token in tokenize(pair.caption):
            for label in by_stem.get(stem(token), ()):
                hits[label].add(token)
        for label, tokens in hits.items():
            entry = per_class[label]
            entry["captions"] += 1
            entry["matched_words"].update(tokens)
            if len(entry["examples"]) < examples:
                entry["examples"].append(pair.caption)
        dirty.append(sorted(hits))
    for entry in per_class.values():
        entry["matched_words"] = dict(entry["matched_words"].most_common())
    return ScanResult(dirty, per_class)


def pretrain_overlap(eval_words: dict[str, list[str]], pretrain_labels: Iterable[str]) -> dict[str, list[str]]:
    """For each evaluation class, the pre-training labels that share a content-word stem."""
    index: dict[str, list[str]] = defaultdict(list)
    for label in pretrain_labels:
        for s in {stem(w) for w in label_words(label)}:
            index[s].append(label)
    out = {}
    for label, ws in eval_words.items():
        found = sorted({p for w in ws for p in index.get(stem(w), [])})
        if found:
            out[label] = found
    return out


def read_label_vocabulary(path: str | Path) -> list[str]:
    """Class names from a CSV (a ``display_name``, ``name``, ``label`` or ``category``
    column, as AudioSet's ``class_labels_indices.csv``) or a text file, one a line."""
    path = Path(path)
    text = read_text(path)
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        header = list(rows[0]) if rows else []
        for col in ("display_name", "name", "label", "category"):
            if col in header:
                return [r[col].strip() for r in rows if r[col] and r[col].strip()]
        raise DataError(f"no display_name/name/label/category column (header: {', '.join(header)})", str(path))
    return [line.strip() for line in text.splitlines() if line.strip()]


def audit_leakage(
    captions: list[str],
    labels: str,
    out: str | Path,
    words_file: str | Path | None = None,
    pretrain_labels: str | Path | None = None,
    write_clean: str | Path | None = None,
    clean_by: str = "pair",
    audio_dir: str | Path | None = None,
) -> dict:
    """Scan caption files against an evaluation label set; write the report to ``out``.

    Writes ``words.txt`` (the editable word list), ``leakage.json`` and ``summary.md``;
    with ``write_clean`` also a ``audio,caption`` CSV of the pairs that name no class
    (``clean_by="audio"`` drops every caption of a clip that has one dirty caption).
    """
    from ..data.labelled import load_label_names
    from ..data.manifests import detect_spec, load_pairs

    if clean_by not in ("pair", "audio"):
        raise DataError(f"--clean-by {clean_by!r}: choose pair or audio")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = load_label_names(labels)
    words = read_word_list(words_file) if words_file else {n: label_words(n) for n in names}
    empty = [n for n, ws in words.items() if not ws]
    write_word_list(out / "words.txt", words)

    files, all_pairs, all_dirty = [], [], []
    per_class = {n: {"captions": 0, "by_file": {}, "matched_words": Counter(), "examples": []} for n in words}
    for arg in captions:
        spec = detect_spec(arg)
        pairs = load_pairs(spec, audio_dir=audio_dir, require_audio=False)
        result = scan(pairs, words)
        dirty_audio = {p.audio_id for p, d in zip(pairs, result.dirty, strict=True) if d}
        n_dirty = sum(1 for d in result.dirty if d)
        audio_ids = {p.audio_id for p in pairs}
        files.append({
            "file": spec, "pairs": len(pairs), "dirty_pairs": n_dirty,
            "dirty_fraction": n_dirty / len(pairs) if pairs else 0.0,
            "audio": len(audio_ids), "dirty_audio": len(dirty_audio),
            "dirty_audio_fraction": len(dirty_audio) / len(audio_ids) if audio_ids else 0.0,
        })
        for label, entry in result.per_class.items():
            agg = per_class[label]
            agg["captions"] += entry["captions"]
            agg["by_file"][spec] = entry["captions"]
            agg["matched_words"].update(entry["matched_words"])
            agg["examples"] += entry["examples"][: max(0, 5 - len(agg["examples"]))]
        all_pairs += pairs
        all_dirty += result.dirty

    n_pairs = len(all_pairs)
    n_dirty = sum(1 for d in all_dirty if d)
    for entry in per_class.values():
        entry["matched_words"] = dict(entry["matched_words"].most_common())
    report = {
        "labels": labels, "classes": len(words), "classes_without_words": empty,
        "files": files,
        "total": {"pairs": n_pairs, "dirty_pairs": n_dirty, "dirty_fraction": n_dirty / n_pairs if n_pairs else 0.0,
                  "classes_named": sum(1 for e in per_class.values() if e["captions"])},
        "per_class": per_class,
        "word_list": str(out / "words.txt"),
        "stemmer": "snowball english", "stop_words": "scikit-learn English minus content words",
    }
    if pretrain_labels:
        vocab = read_label_vocabulary(pretrain_labels)
        overlap = pretrain_overlap(words, vocab)
        report["pretrain_overlap"] = {
            "vocabulary": str(pretrain_labels), "vocabulary_size": len(vocab),
            "classes_overlapping": len(overlap), "fraction": len(overlap) / len(words), "by_class": overlap,
        }
    if write_clean:
        dirty_ids = {p.audio_id for p, d in zip(all_pairs, all_dirty, strict=True) if d}
        keep = [p for p, d in zip(all_pairs, all_dirty, strict=True)
                if not d and (clean_by == "pair" or p.audio_id not in dirty_ids)]
        write_clean = Path(write_clean)
        write_clean.parent.mkdir(parents=True, exist_ok=True)
        with open(write_clean, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["audio", "caption"])
            w.writerows((str(p.audio.resolve()), p.caption) for p in keep)
        report["clean"] = {"file": str(write_clean), "pairs": len(keep), "by": clean_by}
    (out / "leakage.json").write_text(json.dumps(report, indent=2))
    (out / "summary.md").write_text(summary_markdown(report))
    return report


def summary_markdown(report: dict) -> str:
    lines = [f"# Caption leakage against `{report['labels']}` ({report['classes']} classes)", ""]
    lines += ["| caption file | pairs | dirty pairs | dirty fraction | clips | dirty clips |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for f in report["files"]:
        lines.append(f"| `{f['file']}` | {f['pairs']} | {f['dirty_pairs']} | {f['dirty_fraction']:.3f} | {f['audio']} | {f['dirty_audio']} |")
    t = report["total"]
    lines += ["", f"Total: {t['dirty_pairs']} of {t['pairs']} pairs ({t['dirty_fraction']:.1%}) name an evaluation "
              f"class; {t['classes_named']} of {report['classes']} classes are named at least once.", ""]
    lines += ["| class | captions | matched words | example |", "| --- | ---: | --- | --- |"]
    for label, e in sorted(report["per_class"].items(), key=lambda kv: -kv[1]["captions"]):
        words = ", ".join(f"{w} ({c})" for w, c in list(e["matched_words"].items())[:4])
        example = e["examples"][0].replace("|", "/") if e["examples"] else ""
        lines.append(f"| {label} | {e['captions']} | {words} | {example} |")
    if report["classes_without_words"]:
        lines += ["", f"Classes with no words left after stop words: {', '.join(report['classes_without_words'])}"]
    if "pretrain_overlap" in report:
        p = report["pretrain_overlap"]
        lines += ["", f"Pre-training vocabulary `{p['vocabulary']}`: {p['classes_overlapping']} of {report['classes']} "
                  "evaluation classes share a word with a pre-training label."]
    if "clean" in report:
        lines += ["", f"Clean manifest: `{report['clean']['file']}` ({report['clean']['pairs']} pairs, by {report['clean']['by']})."]
    lines += ["", f"Word list: `{report['word_list']}` (edit and rerun with `--words`)."]
    return "\n".join(lines) + "\n"
