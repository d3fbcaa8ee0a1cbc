"""Semantic-textual-similarity sets in their published layouts.

- ``stsb:DIR`` - STS Benchmark ``sts-{train,dev,test}.csv``: tab-separated, no header, no
  quoting; ``genre, file, year, id, score, sentence1, sentence2`` and sometimes extra
  columns, which are ignored.
- ``sick:DIR`` - SICK: ``SICK_test_annotated.txt`` (``pair_ID, sentence_A, sentence_B,
  relatedness_score, ...``) or ``SICK.txt`` (the full release; rows of the requested
  ``SemEval_set``). Columns are found by their header names.
- ``senteval:DIR`` - the folder holding SentEval's ``STS12-en-test`` .. ``STS16-en-test``:
  ``STS.input.<set>.txt`` (sentence pairs, tab-separated, extra columns ignored) with
  ``STS.gs.<set>.txt`` (one gold score a line; an empty gold line drops its pair, as
  SentEval does). A year is read as SentEval and SimCSE read it: exactly the subsets of
  :data:`SENTEVAL_SETS` (STS13 without SMT), every one required, other files ignored, so
  its score is comparable with published tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...errors import DataError
from ..files import Skipped, read_text
from ..specs import STS, ReadOptions, read, spec_kind

SENTEVAL_SETS = {
    "STS12": ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"),
    "STS13": ("FNWN", "headlines", "OnWN"),  # SMT is not distributed (licence)
    "STS14": ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news"),
    "STS15": ("answers-forums", "answers-students", "belief", "headlines", "images"),
    "STS16": ("answer-answer", "headlines", "plagiarism", "postediting", "question-question"),
}
SENTEVAL_YEARS = tuple(SENTEVAL_SETS)


@dataclass
class StsSet:
    """Sentence pairs with gold scores; ``subset`` names the source of each pair."""

    name: str
    s1: list[str]
    s2: list[str]
    scores: list[float]
    subset: list[str]


def _score(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError as exc:
        raise DataError(f"score {text!r} is not a number", where) from exc


def load_stsb(folder: Path, split: str = "test") -> StsSet:
    path = folder / f"sts-{split}.csv"
    s1, s2, scores = [], [], []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 7:
            raise DataError(f"{len(cols)} tab-separated columns, expected at least 7 "
                            "(genre, file, year, id, score, sentence1, sentence2)", f"{path} line {n}")
        scores.append(_score(cols[4], f"{path} line {n}"))
        s1.append(cols[5])
        s2.append(cols[6])
    if not scores:
        raise DataError("no pairs", str(path))
    return StsSet(f"STSB-{split}", s1, s2, scores, ["stsb"] * len(scores))


def load_sick(folder: Path, split: str = "test") -> StsSet:
    annotated = folder / "SICK_test_annotated.txt"
    full = folder / "SICK.txt"
    path = annotated if split == "test" and annotated.is_file() else full
    lines = read_text(path).splitlines()
    header = lines[0].split("\t") if lines else []
    need = ["sentence_A", "sentence_B", "relatedness_score"]
    missing = [c for c in need if c not in header]
    if missing:
        raise DataError(f"missing column(s) {', '.join(missing)}", f"{path} line 1")
    col = {c: header.index(c) for c in header}
    keep_set = "SemEval_set" in col and path == full
    s1, s2, scores = [], [], []
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < len(header):
            raise DataError(f"{len(cols)} columns, the header has {len(header)}", f"{path} line {n}")
        if keep_set and cols[col["SemEval_set"]].strip().upper() != split.upper():
            continue
        s1.append(cols[col["sentence_A"]])
        s2.append(cols[col["sentence_B"]])
        scores.append(_score(cols[col["relatedness_score"]], f"{path} line {n}"))
    if not scores:
        raise DataError(f"no pairs of split {split!r}", str(path))
    return StsSet(f"SICK-R-{split}", s1, s2, scores, ["sick"] * len(scores))


def load_senteval_year(folder: Path, year: str) -> StsSet:
    sub = folder / f"{year}-en-test"
    names = SENTEVAL_SETS[year]
    missing = [f for n in names for f in (f"STS.input.{n}.txt", f"STS.gs.{n}.txt") if not (sub / f).is_file()]
    if missing:
        raise DataError(f"missing {', '.join(missing)}: SentEval's {year} is the subsets {', '.join(names)}, "
                        "all needed for a score comparable with published tables", str(sub))
    s1, s2, scores, subset = [], [], [], []
    for name in names:
        inp, gold = sub / f"STS.input.{name}.txt", sub / f"STS.gs.{name}.txt"
        pairs = read_text(inp).splitlines()
        golds = read_text(gold).splitlines()
        if len(pairs) != len(golds):
            raise DataError(f"{len(pairs)} sentence pairs but {len(golds)} gold lines in {gold.name}", str(inp))
        for n, (pair, g) in enumerate(zip(pairs, golds, strict=True), 1):
            if not g.strip():
                continue  # no gold score: SentEval drops the pair
            cols = pair.split("\t")
            if len(cols) < 2:
                raise DataError("expected two tab-separated sentences", f"{inp} line {n}")
            s1.append(cols[0])
            s2.append(cols[1])
            scores.append(_score(g.strip(), f"{gold} line {n}"))
            subset.append(name)
    return StsSet(year, s1, s2, scores, subset)


def load_sts(spec: str, split: str = "test") -> list[StsSet]:
    """The STS sets of ``spec`` (``senteval:`` gives one per year found)."""
    return read(spec, STS, "text", ReadOptions("text", split=split))


def _folder(path: Path) -> Path:
    if not path.is_dir():
        raise DataError("folder not found", str(path))
    return path


def _write_stsb(d: Path) -> tuple[str, Path]:
    (d / "sts-test.csv").write_text("".join(f"main-captions\tMSRvid\t2012test\t{i:04d}\t{i % 5}.000\ta man {i}\t"
                                            f"a woman {i}\n" for i in range(4)))
    return f"stsb:{d}", d / "sts-test.csv"


@spec_kind("stsb", STS, ("text",), "DIR", "STS Benchmark's `sts-{train,dev,test}.csv` (tab-separated, no header)",
           example=_write_stsb)
def read_stsb(path: Path, opts: ReadOptions, skipped: Skipped) -> list[StsSet]:
    return [load_stsb(_folder(path), opts.split or "test")]


def _write_sick(d: Path) -> tuple[str, Path]:
    (d / "SICK_test_annotated.txt").write_text(
        "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n" +
        "".join(f"{i}\ta boy runs {i}\ta kid runs {i}\t{1 + i % 4}.5\tNEUTRAL\n" for i in range(4)))
    return f"sick:{d}", d / "SICK_test_annotated.txt"


@spec_kind("sick", STS, ("text",), "DIR", "SICK's `SICK_test_annotated.txt`, or `SICK.txt` (rows of the split's "
           "`SemEval_set`)", example=_write_sick)
def read_sick(path: Path, opts: ReadOptions, skipped: Skipped) -> list[StsSet]:
    return [load_sick(_folder(path), opts.split or "test")]


def _write_senteval(d: Path) -> tuple[str, Path]:
    sub = d / "STS13-en-test"
    sub.mkdir()
    for name in SENTEVAL_SETS["STS13"]:
        (sub / f"STS.input.{name}.txt").write_text("a cat sits\ta cat is sitting\ntwo dogs\ta bird\n")
        (sub / f"STS.gs.{name}.txt").write_text("4.5\n0.5\n")
    return f"senteval:{d}", sub / "STS.input.headlines.txt"


@spec_kind("senteval", STS, ("text",), "DIR", "SentEval's `STS12-en-test` .. `STS16-en-test` folders "
           "(`STS.input.<set>.txt` + `STS.gs.<set>.txt`, every published subset)", example=_write_senteval)
def read_senteval(path: Path, opts: ReadOptions, skipped: Skipped) -> list[StsSet]:
    years = [y for y in SENTEVAL_YEARS if (_folder(path) / f"{y}-en-test").is_dir()]
    if not years:
        raise DataError("no STS12-en-test .. STS16-en-test folders", str(path))
    return [load_senteval_year(path, y) for y in years]
