"""Plain text inputs: sentence corpora (registered kinds ``txt:``, ``stsb:``), class-name
lists (``txt:``, ``folder:``; ESC-50's are in :mod:`clapkit.data.audio.labelled`), NLI
triplets and text-classification files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...errors import DataError
from ..files import Skipped, check_row, iter_records, read_csv_rows, read_lines, record_values
from ..specs import CORPUS, NAMES, ReadOptions, read, spec_kind
from ..tables import class_folders
from .sts import load_stsb

# --- sentence-encoder training data -------------------------------------------------------


@dataclass
class Triplet:
    """An NLI training row: premise, entailment (positive), contradiction (hard negative)."""

    anchor: str
    positive: str
    negative: str


def load_corpus(spec: str, skip_bad: bool = False, skipped: Skipped | None = None) -> list[str]:
    """Sentences for unsupervised SimCSE: a registered corpus kind, or a bare path (``txt:``)."""
    return read(spec if ":" in str(spec) else f"txt:{spec}", CORPUS, "text", ReadOptions("text", skip_bad=skip_bad),
                skipped)


def _write_lines(d: Path) -> tuple[str, Path]:
    (d / "corpus.txt").write_text("a dog barks\nrain on a roof\nchurch bells ring\n")
    return f"txt:{d / 'corpus.txt'}", d / "corpus.txt"


@spec_kind("txt", CORPUS, ("text",), "FILE", "one sentence a line, like `wiki1m_for_simcse.txt`; an empty line is an "
           "error naming its number (skipped and counted with `--skip-bad`)", example=_write_lines)
def read_txt_corpus(path: Path, opts: ReadOptions, skipped: Skipped) -> list[str]:
    out = read_lines(path, opts.skip_bad, skipped, reason="empty sentence")
    if len(out) < 2:
        raise DataError(f"{len(out)} sentence(s); a contrastive batch needs at least 2", str(path))
    return out


def _write_stsb_train(d: Path) -> tuple[str, Path]:
    (d / "sts-train.csv").write_text("".join(f"main-captions\tMSRvid\t2012train\t{i:04d}\t{i % 5}.000\ta man {i}\t"
                                             f"a woman {i}\n" for i in range(3)))
    return f"stsb:{d}", d / "sts-train.csv"


@spec_kind("stsb", CORPUS, ("text",), "DIR", "the distinct sentences of STS Benchmark's `sts-train.csv` (scores "
           "unused; never dev or test, which selection and evaluation use)", example=_write_stsb_train)
def read_stsb_corpus(path: Path, opts: ReadOptions, skipped: Skipped) -> list[str]:
    train = load_stsb(path, "train")
    return list(dict.fromkeys(s.strip() for s in train.s1 + train.s2 if s.strip()))


def load_label_names(spec: str) -> list[str]:
    """Class names only (no media needed): ``esc50:ROOT`` (from ``meta/esc50.csv``),
    ``folder:DIR`` (sub-folder names) or ``txt:FILE`` (one class a line)."""
    return read(spec, NAMES, "text")


def _write_labels(d: Path) -> tuple[str, Path]:
    (d / "labels.txt").write_text("dog\nrain\nchurch_bells\n")
    return f"txt:{d / 'labels.txt'}", d / "labels.txt"


@spec_kind("txt", NAMES, ("text",), "FILE", "one class name a line (duplicates kept once)", example=_write_labels)
def read_txt_names(path: Path, opts: ReadOptions, skipped: Skipped) -> list[str]:
    return list(dict.fromkeys(read_lines(path)))


def _write_class_folders(d: Path) -> tuple[str, Path]:
    for name in ("dog", "rain"):
        (d / name).mkdir()
        (d / name / "a.txt").write_text(f"a {name} file\n")  # any content: only the folders are read
    return f"folder:{d}", d / "dog" / "a.txt"


@spec_kind("folder", NAMES, ("text",), "DIR", "the names of its class sub-folders, sorted", example=_write_class_folders)
def read_folder_names(path: Path, opts: ReadOptions, skipped: Skipped) -> list[str]:
    return class_folders(path)


NLI_COLUMNS = ("sent0", "sent1", "hard_neg")


def load_nli(path: str | Path, skip_bad: bool = False, skipped: Skipped | None = None,
             columns: tuple[str, str, str] = NLI_COLUMNS) -> list[Triplet]:
    """Supervised-SimCSE triplets from a CSV with a header naming ``columns`` (SimCSE's
    ``nli_for_simcse.csv``: ``sent0,sent1,hard_neg``), or from SNLI's / MultiNLI's
    ``.jsonl`` files (see :func:`nli_jsonl_triplets`). Empty cells are errors naming the
    line (skipped and counted with ``skip_bad``)."""
    path = Path(str(path).removeprefix("nli:"))
    skipped = skipped if skipped is not None else Skipped()
    if path.suffix == ".jsonl":
        out = nli_jsonl_triplets(path, skip_bad, skipped)
        if len(out) < 2:
            raise DataError(f"{len(out)} triplet(s); a contrastive batch needs at least 2", str(path))
        return out
    out = []
    for line, row in read_csv_rows(path, list(columns)):
        try:
            check_row(row, line, path, list(columns))
            cells = [(row[c] or "").strip() for c in columns]
            empty = [c for c, v in zip(columns, cells, strict=True) if not v]
            if empty:
                raise DataError(f"empty {', '.join(empty)}", f"{path} line {line}", reason="empty sentence")
            out.append(Triplet(*cells))
        except DataError as exc:
            if not skip_bad:
                raise
            skipped.add(exc)
    if len(out) < 2:
        raise DataError(f"{len(out)} triplet(s); a contrastive batch needs at least 2", str(path))
    return out


NLI_LABELS = ("entailment", "neutral", "contradiction")


def nli_jsonl_triplets(path: Path, skip_bad: bool = False, skipped: Skipped | None = None) -> list[Triplet]:
    """Triplets from SNLI / MultiNLI ``.jsonl`` (``sentence1``, ``sentence2``,
    ``gold_label``), as SimCSE built its training set: for each premise, its k-th
    entailment hypothesis with its k-th contradiction hypothesis, premises in file
    order. A ``gold_label`` of ``-`` (no annotator consensus) drops the line and is
    counted; another unknown label, a missing key or bad JSON is an error naming the
    line (skipped and counted with ``skip_bad``)."""
    skipped = skipped if skipped is not None else Skipped()
    premises: dict[str, dict[str, list[str]]] = {}
    for where, row in iter_records(path, []):
        try:
            if isinstance(row, DataError):  # not valid JSON
                raise row
            missing = [k for k in ("sentence1", "sentence2", "gold_label") if not isinstance(row, dict) or k not in row]
            if missing:
                raise DataError(f"missing key(s) {', '.join(missing)}", where, reason="missing key")
            label = row["gold_label"]
            if label == "-":
                skipped.add(DataError("no gold label ('-')", where, reason="no gold label"))
                continue
            if label not in NLI_LABELS:
                raise DataError(f"gold_label {label!r}; expected one of {', '.join(NLI_LABELS)} or '-'", where,
                                reason="unknown label")
            premise, hypothesis = str(row["sentence1"]).strip(), str(row["sentence2"]).strip()
            if not premise or not hypothesis:
                raise DataError("empty sentence1 or sentence2", where, reason="empty sentence")
        except DataError as exc:
            if not skip_bad:
                raise
            skipped.add(exc)
            continue
        premises.setdefault(premise, {}).setdefault(label, []).append(hypothesis)
    return [Triplet(p, e, c) for p, hyp in premises.items()
            for e, c in zip(hyp.get("entailment", []), hyp.get("contradiction", []), strict=False)]


@dataclass
class TextClassificationSet:
    name: str
    texts: list[str]
    labels: list[int]
    class_names: list[str]


def load_text_classification(path: str | Path, text_column: str = "text", label_column: str = "label",
                             skip_bad: bool = False, skipped: Skipped | None = None) -> TextClassificationSet:
    """Texts and labels for a linear probe, from a CSV (columns), JSON Lines or a JSON array
    of objects (keys; e.g. emoji-datasource's ``emoji.json`` with ``name`` and
    ``category``). Any label values; classes sorted by name. A missing or empty text or
    label is an error naming the line or item (skipped with ``skip_bad``)."""
    path = Path(path)
    skipped = skipped if skipped is not None else Skipped()
    texts, raw = [], []
    for where, record in iter_records(path, [text_column, label_column]):
        try:
            text, label = record_values(record, where, [text_column, label_column])
            if not text or not label:
                raise DataError(f"empty {text_column if not text else label_column}", where, reason="empty cell")
        except DataError as exc:
            if not skip_bad:
                raise
            skipped.add(exc)
            continue
        texts.append(text)
        raw.append(label)
    names = sorted(set(raw))
    if len(names) < 2:
        raise DataError(f"{len(names)} distinct label(s) in column {label_column!r}; a classifier needs 2 or more", str(path))
    index = {n: i for i, n in enumerate(names)}
    return TextClassificationSet(path.stem, texts, [index[x] for x in raw], names)
