"""Caption/label leakage: which training captions name an evaluation class.

A zero-shot claim assumes the evaluation classes were never seen in training. The
CLAP-pitfalls paper shows that captions naming the classes ("a dog barks" against
ESC-50's *dog*) inflate zero-shot accuracy; its "clean" training set drops every pair
whose caption contains a word of the evaluation class set. This module reproduces and
reports that filter:

- Class names are split into content words (``door_wood_knock`` -> door, wood, knock);
  stop words are dropped (scikit-learn's English list, minus the content words it
  happens to contain such as *fire*; see :data:`STOP_WORDS`).
- Captions are lower-cased and split into alphabetic tokens. A token names a class
  when one of four rules links it to a class word (:class:`WordMatcher`), tried in
  this order, and the report says which rule matched each word:

  ``stem``        the Snowball (Porter 2) stems are equal: dogs, barking, knocks;
  ``lemma``       the token's lemma (simplemma's English dictionary) stems to a class
                  word: irregular forms such as mice -> mouse, geese -> goose;
  ``derivation``  the lemma is a class word plus a derivational suffix (-en, -y, -ish,
                  -like, -ful, -less, -ness, -ter; final consonant doubled or e dropped):
                  wooden -> wood, windy -> wind, laughter -> laugh;
  ``compound``    the lemma is a class word joined to another English word (both at
                  least 3 letters, the other with a Zipf frequency >= 3 in wordfreq's
                  English list): doorbell -> door + bell, raindrops -> rain + drop.

  A word inside an unrelated word never matches (*cat* in *category*: "egory" is no
  word).
- A caption is dirty for a class if any token names it. The paper's own rule is the
  first two (:data:`PAPER_RULES`: a word of the class set, by stem or lemma); every
  count is also given by that rule alone (``paper_captions``, ``dirty_pairs_paper``),
  and the named/never-named split of ``audit model`` uses it as the headline.

The rules flag generously (a leakage audit should rather over-report): *carpet* is
car + pet. The word list is written out (``words.txt``: ``class<TAB>word word ...``) and
a ``!word`` entry excludes a surface word from its class (``car_horn<TAB>car horn
!carpet``); edit it and run again with ``--words``.
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

from ..data.files import read_text
from ..data.records import Pair
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


# Words that contain a class word without coming from it, which the derivation and
# compound rules would otherwise match; written into the default word list as '!word'
# entries of every class with that word (so a user sees and can edit them).
FALSE_FRIENDS = {
    "door": ("outdoor", "outdoors"),
    "rain": ("terrain", "terrains"),
    "car": ("carry", "carries", "carried", "carrying", "cartoon", "cartoons", "carpet", "carpets", "career"),
    "hand": ("handling",),
    "wave": ("microwave", "microwaves"),
}


def matching_words(ws: Iterable[str]) -> list[str]:
    """A word-list entry's words without its '!' exclusions."""
    return [w for w in ws if not w.startswith("!")]


def default_word_list(names: Iterable[str]) -> dict[str, list[str]]:
    """Each class's content words, then '!' exclusions of their :data:`FALSE_FRIENDS`."""
    out = {}
    for name in names:
        ws = label_words(name)
        out[name] = ws + [f"!{f}" for w in ws for f in FALSE_FRIENDS.get(w, ())]
    return out


def write_word_list(path: Path, words: dict[str, list[str]]) -> None:
    lines = ["# class<TAB>words that mark a caption as naming the class; '!word' excludes a surface word "
             "(edit, then rerun with --words)"]
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


DERIVATION_SUFFIXES = ("en", "y", "ish", "like", "ful", "less", "ness", "ter")
PAPER_RULES = ("stem", "lemma")  # S2's dirty caption: it contains a word of the class set
MIN_PART = 3  # letters of each part of a compound, and of a derivation's base
MIN_ZIPF = 3.0  # how common the other part of a compound must be (wordfreq's Zipf scale)


@lru_cache(maxsize=200_000)
def lemma(word: str) -> str:
    import simplemma

    return simplemma.lemmatize(word, lang="en").lower()


@lru_cache(maxsize=200_000)
def is_word(part: str) -> bool:
    from wordfreq import zipf_frequency

    return len(part) >= MIN_PART and zipf_frequency(part, "en") >= MIN_ZIPF


class WordMatcher:
    """Which classes a caption token names, and by which rule (see the module docstring).

    ``words`` maps a class to its words; a ``!word`` entry excludes that surface word.
    """

    def __init__(self, words: dict[str, list[str]]):
        self.by_stem: dict[str, set[str]] = defaultdict(set)
        self.excluded: dict[str, set[str]] = defaultdict(set)
        for label, ws in words.items():
            for w in ws:
                if w.startswith("!"):
                    self.excluded[w[1:]].add(label)
                else:
                    self.by_stem[stem(w)].add(label)
        self._cache: dict[str, dict[str, str]] = {}

    def _classes(self, word: str) -> set[str]:
        return self.by_stem.get(stem(word), set()) if len(word) >= MIN_PART else set()

    def match(self, token: str) -> dict[str, str]:
        """{class: rule} for one lower-cased token."""
        if token in self._cache:
            return self._cache[token]
        found: dict[str, str] = {}

        def add(labels: set[str], rule: str) -> None:
            for label in labels:
                found.setdefault(label, rule)

        add(self.by_stem.get(stem(token), set()), "stem")
        lem = lemma(token)
        add(self._classes(lem), "lemma")
        for suffix in DERIVATION_SUFFIXES:
            if lem.endswith(suffix) and len(lem) - len(suffix) >= MIN_PART:
                base = lem[: -len(suffix)]
                bases = {base, base + "e"}
                if len(base) > MIN_PART and base[-1] == base[-2] and base[-1] not in "aeiou":
                    bases.add(base[:-1])  # sunny -> sun
                for b in bases:
                    add(self._classes(b), "derivation")
        for i in range(MIN_PART, len(lem) - MIN_PART + 1):
            left, right = lem[:i], lem[i:]
            hit_left, hit_right = self._classes(left), self._classes(right) | self._classes(lemma(right))
            if hit_left and (hit_right or is_word(right)):
                add(hit_left, "compound")
            if hit_right and (hit_left or is_word(left)):
                add(hit_right, "compound")
        for label in self.excluded.get(token, ()):
            found.pop(label, None)
        self._cache[token] = found
        return found


@dataclass
class ScanResult:
    dirty: list[list[str]]  # per pair: the classes its caption names (any rule)
    per_class: dict[str, dict] = field(default_factory=dict)
    dirty_paper: list[list[str]] = field(default_factory=list)  # per pair: by the paper's rules (stem, lemma)


def scan(pairs: list[Pair], words: dict[str, list[str]], examples: int = 5) -> ScanResult:
    """Mark each pair's caption with the classes whose words it contains.

    ``per_class[label]``: ``captions`` (count, any rule), ``paper_captions`` (count by the
    paper's rules), ``matched_words`` (surface word -> count), ``rules`` (surface word ->
    the rule that matched it) and ``examples``.
    """
    matcher = WordMatcher(words)
    per_class = {label: {"captions": 0, "paper_captions": 0, "matched_words": Counter(), "rules": {}, "examples": []}
                 for label in words}
    dirty, dirty_paper = [], []
    for pair in pairs:
        hits: dict[str, dict[str, str]] = defaultdict(dict)
        for token in tokenize(pair.caption):
            for label, rule in matcher.match(token).items():
                hits[label][token] = rule
        paper = sorted(label for label, tokens in hits.items() if any(r in PAPER_RULES for r in tokens.values()))
        for label in paper:
            per_class[label]["paper_captions"] += 1
        for label, tokens in hits.items():
            entry = per_class[label]
            entry["captions"] += 1
            entry["matched_words"].update(list(tokens))
            entry["rules"].update(tokens)
            if len(entry["examples"]) < examples:
                entry["examples"].append(pair.caption)
        dirty.append(sorted(hits))
        dirty_paper.append(paper)
    for entry in per_class.values():
        entry["matched_words"] = dict(entry["matched_words"].most_common())
    return ScanResult(dirty, per_class, dirty_paper)


def pretrain_overlap(eval_words: dict[str, list[str]], pretrain_labels: Iterable[str]) -> dict[str, list[str]]:
    """For each evaluation class, the pre-training labels that share a content-word stem."""
    index: dict[str, list[str]] = defaultdict(list)
    for label in pretrain_labels:
        for s in {stem(w) for w in label_words(label)}:
            index[s].append(label)
    out = {}
    for label, ws in eval_words.items():
        found = sorted({p for w in matching_words(ws) for p in index.get(stem(w), [])})
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


def _media_column(spec: str) -> str:
    """``image`` for a csv: caption file of an image-text set (an ``image`` column and no
    ``audio`` column); otherwise ``audio``."""
    from ..data.files import csv_header

    kind, _, path = spec.partition(":")
    header = csv_header(path) if kind == "csv" else []
    return "image" if "image" in header and "audio" not in header else "audio"


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
    from ..data.audio.captions import detect_spec
    from ..data.files import Skipped
    from ..data.specs import ReadOptions, read_pairs
    from ..data.text import load_label_names

    if clean_by not in ("pair", "audio"):
        raise DataError(f"--clean-by {clean_by!r}: choose pair or audio")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = load_label_names(labels)
    words = read_word_list(words_file) if words_file else default_word_list(names)
    empty = [n for n, ws in words.items() if not matching_words(ws)]
    write_word_list(out / "words.txt", words)

    files, all_pairs, all_dirty, all_paper = [], [], [], []
    per_class = {n: {"captions": 0, "paper_captions": 0, "by_file": {}, "matched_words": Counter(), "rules": {},
                     "examples": []} for n in words}
    for arg in captions:
        spec = detect_spec(arg)
        opts = ReadOptions(_media_column(spec), Path(audio_dir) if audio_dir else None, require_media=False)
        pairs = read_pairs(spec, opts, Skipped())
        result = scan(pairs, words)
        dirty_audio = {p.media_id for p, d in zip(pairs, result.dirty, strict=True) if d}
        n_dirty = sum(1 for d in result.dirty if d)
        audio_ids = {p.media_id for p in pairs}
        files.append({
            "file": spec, "pairs": len(pairs), "dirty_pairs": n_dirty,
            "dirty_pairs_paper": sum(1 for d in result.dirty_paper if d),
            "dirty_fraction": n_dirty / len(pairs) if pairs else 0.0,
            "audio": len(audio_ids), "dirty_audio": len(dirty_audio),
            "dirty_audio_fraction": len(dirty_audio) / len(audio_ids) if audio_ids else 0.0,
        })
        for label, entry in result.per_class.items():
            agg = per_class[label]
            agg["captions"] += entry["captions"]
            agg["paper_captions"] += entry["paper_captions"]
            agg["by_file"][spec] = entry["captions"]
            agg["matched_words"].update(entry["matched_words"])
            agg["rules"].update(entry["rules"])
            agg["examples"] += entry["examples"][: max(0, 5 - len(agg["examples"]))]
        all_pairs += pairs
        all_dirty += result.dirty
        all_paper += result.dirty_paper

    n_pairs = len(all_pairs)
    n_dirty = sum(1 for d in all_dirty if d)
    by_rule: Counter = Counter()
    for entry in per_class.values():
        entry["matched_words"] = dict(entry["matched_words"].most_common())
        for w, count in entry["matched_words"].items():
            by_rule[entry["rules"][w]] += count
    report = {
        "labels": labels, "classes": len(words), "classes_without_words": empty,
        "files": files,
        "total": {"pairs": n_pairs, "dirty_pairs": n_dirty, "dirty_fraction": n_dirty / n_pairs if n_pairs else 0.0,
                  "dirty_pairs_paper": sum(1 for d in all_paper if d),
                  "classes_named": sum(1 for e in per_class.values() if e["captions"]),
                  "classes_named_paper": sum(1 for e in per_class.values() if e["paper_captions"])},
        "per_class": per_class,
        "word_list": str(out / "words.txt"),
        "matches_by_rule": dict(by_rule),
        "rules": "stem (snowball english), lemma (simplemma), derivation (suffixes "
                 + ", ".join(DERIVATION_SUFFIXES) + f"), compound (other part a word with Zipf >= {MIN_ZIPF})",
        "stop_words": "scikit-learn English minus content words",
    }
    if pretrain_labels:
        vocab = read_label_vocabulary(pretrain_labels)
        overlap = pretrain_overlap(words, vocab)
        report["pretrain_overlap"] = {
            "vocabulary": str(pretrain_labels), "vocabulary_size": len(vocab),
            "classes_overlapping": len(overlap), "fraction": len(overlap) / len(words), "by_class": overlap,
        }
    if write_clean:
        dirty_ids = {p.media_id for p, d in zip(all_pairs, all_dirty, strict=True) if d}
        keep = [p for p, d in zip(all_pairs, all_dirty, strict=True)
                if not d and (clean_by == "pair" or p.media_id not in dirty_ids)]
        write_clean = Path(write_clean)
        write_clean.parent.mkdir(parents=True, exist_ok=True)
        with open(write_clean, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["audio", "caption"])
            w.writerows((str(p.media.resolve()), p.caption) for p in keep)
        report["clean"] = {"file": str(write_clean), "pairs": len(keep), "by": clean_by}
    (out / "leakage.json").write_text(json.dumps(report, indent=2))
    (out / "summary.md").write_text(summary_markdown(report))
    return report


def zeroshot_leakage(captions: list[str], data, correct=None, medium: str = "audio") -> dict:
    """How much a zero-shot set's classes leak into a model's training captions: the
    fraction of the caption pairs naming a class of ``data`` (this module's rules), the
    classes named, and, given each item's top-1 ``correct``ness, the accuracy on the
    items of named classes and of never-named classes, with counts (single-label sets)."""
    import numpy as np

    from ..data.audio.captions import detect_spec
    from ..data.files import Skipped
    from ..data.specs import ReadOptions, read_pairs

    pairs = [p for f in captions for p in read_pairs(detect_spec(str(f)), ReadOptions(medium, require_media=False),
                                                      Skipped())]
    if not pairs:
        raise DataError(f"captions {', '.join(map(str, captions))}: no caption pairs to audit")
    dirty = scan(pairs, default_word_list(data.class_names)).dirty
    named = sorted({c for hits in dirty for c in hits}, key=data.class_names.index)
    out = {"caption_files": [str(f) for f in captions], "caption_pairs": len(pairs),
           "dirty_fraction": float(np.mean([bool(h) for h in dirty])), "classes_named": named}
    if correct is not None and not data.multilabel:
        in_named = np.array([data.class_names[c.label] in set(named) for c in data.clips])
        for key, mask in (("top1_named_classes", in_named), ("top1_unnamed_classes", ~in_named)):
            out[key] = {"value": float(np.asarray(correct)[mask].mean()) if mask.any() else None, "n": int(mask.sum())}
    return out


def summary_markdown(report: dict) -> str:
    lines = [f"# Caption leakage against `{report['labels']}` ({report['classes']} classes)", ""]
    lines += ["| caption file | pairs | dirty pairs | dirty fraction | clips | dirty clips |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for f in report["files"]:
        lines.append(f"| `{f['file']}` | {f['pairs']} | {f['dirty_pairs']} | {f['dirty_fraction']:.3f} | {f['audio']} | {f['dirty_audio']} |")
    t = report["total"]
    lines += ["", f"Total: {t['dirty_pairs']} of {t['pairs']} pairs ({t['dirty_fraction']:.1%}) name an evaluation "
              f"class; {t['classes_named']} of {report['classes']} classes are named at least once. By the paper's "
              f"rule alone (a word of the class set, by stem or lemma): {t['dirty_pairs_paper']} pairs, "
              f"{t['classes_named_paper']} classes.", ""]
    rules = ", ".join(f"{r} {c}" for r, c in report["matches_by_rule"].items())
    lines += [f"Matched words by rule (occurrences): {rules}.", ""]
    lines += ["| class | captions | matched words (count, rule if not the stem) | example |", "| --- | ---: | --- | --- |"]
    for label, e in sorted(report["per_class"].items(), key=lambda kv: -kv[1]["captions"]):
        words = ", ".join(f"{w} ({c}{'' if e['rules'][w] == 'stem' else ', ' + e['rules'][w]})"
                          for w, c in list(e["matched_words"].items())[:4])
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
