"""Relevance judgements for text-to-audio retrieval with several relevant clips per query.

:func:`read_relevance` reads three layouts, told apart by the first line:

- DCASE 2025 task 6's ``metadata_eval.csv`` (the additional annotations of Clotho's
  development-testing captions, published in the task's baseline repository as
  ``resources/metadata_eval.csv``): the header ``query,audio_filenames``, one row per query
  caption, ``audio_filenames`` a Python list of the relevant clips' file names
  (``"['a.wav', 'b.wav']"``; a bare single name is read too). Each named clip is relevant
  with grade 1: the file has no grades;
- a BEIR / MTEB qrels file: tab-separated, the header ``query-id<TAB>corpus-id<TAB>score``,
  one (query, clip, grade) a row;
- TREC qrels: no header, ``QUERY ITERATION ITEM RELEVANCE`` a line, whitespace-separated
  (the iteration, usually 0, is ignored), so neither query nor item holds a space.

A query is a caption's text, a clip a file name (or the path, or the data's clip id). A
grade above 0 is relevant; 0 or less is judged not relevant. :func:`match_relevance` finds
the judgements' captions and clips in the evaluated pairs. A malformed file (a missing
column, a grade that is no number, a (query, clip) judged twice) raises a
:class:`~clapkit.errors.DataError` naming the file and line, always: the judgements are the
ground truth, so a broken one is not skipped. A judgement naming a query or clip that is
not in the data raises too, or, with ``skip_bad``, is counted in a
:class:`~clapkit.data.files.Skipped` record (a copy that lacks some clips).
"""

from __future__ import annotations

import ast
import csv
import html
import math
from dataclasses import dataclass
from pathlib import Path

from ...errors import DataError
from ..files import Skipped, iter_csv_rows, read_text

DCASE_COLUMNS = ["query", "audio_filenames"]
QRELS_COLUMNS = ["query-id", "corpus-id", "score"]


@dataclass(frozen=True)
class Judgement:
    """One (query, clip) relevance: ``relevance`` > 0 relevant; ``where`` is "FILE line N"."""

    query: str
    item: str
    relevance: float
    where: str


def _grade(value: str, where: str) -> float:
    try:
        grade = float(value)
    except ValueError:
        raise DataError(f"relevance {value!r} is not a number", where, "relevance not a number") from None
    if not math.isfinite(grade):
        raise DataError(f"relevance {value!r} is not a finite number", where, "relevance not a number")
    return grade


def _dcase_names(value: str, where: str) -> list[str]:
    text = value.strip()
    if not text.startswith(("[", "(")):
        names = [text] if text else []
    else:
        try:
            names = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise DataError(f"audio_filenames {value!r} is not a list of file names", where) from None
        if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
            raise DataError(f"audio_filenames {value!r} is not a list of file names", where)
    names = [n.strip() for n in names]
    if not names or not all(names):
        raise DataError("audio_filenames names no file (or an empty one)", where)
    return names


def _dcase_rows(path: Path):
    for line, row in iter_csv_rows(path, DCASE_COLUMNS):
        where = f"{path} line {line}"
        if None in row or any(row.get(c) is None for c in DCASE_COLUMNS):
            n = len(row) - (None in row) + len(row.get(None) or []) - sum(v is None for v in row.values())
            raise DataError(f"{n} fields but the header has {len(row) - (None in row)} (a field with commas, a "
                            "caption or a list of several files, is in double quotes)", where)
        for name in _dcase_names(row["audio_filenames"], where):
            yield row["query"], name, 1.0, where


def _qrels_rows(path: Path, lines: list[str]):
    header = [c.strip() for c in lines[0].split("\t")]
    missing = [c for c in QRELS_COLUMNS if c not in header]
    if missing:
        raise DataError(f"missing column(s) {', '.join(missing)} (tab-separated); the header has {', '.join(header)}",
                        f"{path} line 1")
    at = {c: header.index(c) for c in QRELS_COLUMNS}
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        where = f"{path} line {n}"
        if len(fields) != len(header):
            raise DataError(f"{len(fields)} tab-separated fields but the header has {len(header)}", where)
        yield fields[at["query-id"]], fields[at["corpus-id"]], _grade(fields[at["score"]], where), where


def _trec_rows(path: Path, lines: list[str]):
    for n, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path} line {n}"
        if len(fields) != 4:
            raise DataError(f"{len(fields)} fields; a TREC qrels line is QUERY ITERATION ITEM RELEVANCE", where)
        yield fields[0], fields[2], _grade(fields[3], where), where


def read_relevance(path: str | Path) -> list[Judgement]:
    """The judgements of a relevance file (the layouts of the module's docstring), in file
    order; the first bad row raises a DataError naming the file and line."""
    path = Path(path)
    text = read_text(path)
    lines = text.split("\n")
    first = lines[0].strip() if lines else ""
    if not first:
        raise DataError("empty relevance file (or an empty first line)", f"{path} line 1")
    if {f.strip() for f in first.split("\t")} & set(QRELS_COLUMNS) or first.split()[0] in QRELS_COLUMNS:
        rows = _qrels_rows(path, lines)
    elif {f.strip() for f in next(csv.reader([first]))} & set(DCASE_COLUMNS):
        rows = _dcase_rows(path)
    elif len(first.split()) == 4:
        rows = _trec_rows(path, lines)
    else:
        raise DataError("not a relevance file: expected the header query,audio_filenames (DCASE 2025), "
                        "query-id<TAB>corpus-id<TAB>score (BEIR / MTEB qrels), or TREC qrels lines "
                        "QUERY 0 ITEM RELEVANCE", f"{path} line 1")
    out, seen = [], {}
    for query, item, grade, where in rows:
        query, item = query.strip(), item.strip()
        if not query or not item:
            raise DataError("empty query or clip name", where)
        if (query, item) in seen:
            raise DataError(f"query {query!r} and clip {item!r} are judged twice (first at {seen[query, item]})", where,
                            "duplicate judgement")
        seen[query, item] = where
        out.append(Judgement(query, item, grade, where))
    if not out:
        raise DataError("no judgements in the relevance file", str(path))
    return out


def _clip_keys(clip) -> set[str]:
    media = str(clip.media)
    keys = {media, Path(media).name, str(clip.media_id)}
    return keys | {html.unescape(k) for k in keys}


def match_relevance(judgements: list[Judgement], pairs: list, clips: list, skip_bad: bool = False,
                    skipped: Skipped | None = None) -> tuple[list[int], list[dict[int, float]]]:
    """The judgements on the evaluated data: the pair (text query) of each judged query, in
    order of first judgement, and for each the grade of each judged clip by its row in
    ``clips`` (:func:`~clapkit.data.records.clip_index`'s). A query is found by its caption's
    text (the first pair with it: equal captions embed alike), a clip by its file name, path
    or clip id (HTML entities such as ``&#39;`` read either way). A judgement whose query or
    clip is not in the data, or whose name fits several clips, raises a DataError naming
    its row, or is counted in ``skipped`` with ``skip_bad``."""
    skipped = skipped if skipped is not None else Skipped()
    caption_at: dict[str, int] = {}
    for i, p in enumerate(pairs):
        caption_at.setdefault(p.caption.strip(), i)
    clip_rows: dict[str, set[int]] = {}
    for row, clip in enumerate(clips):
        for key in _clip_keys(clip):
            clip_rows.setdefault(key, set()).add(row)
    query_of: dict[str, int] = {}
    queries: list[int] = []
    grades: list[dict[int, float]] = []
    for j in judgements:
        try:
            if j.query not in caption_at:
                raise DataError(f"query {j.query!r} is no caption of the data", j.where, "relevance query not in the data")
            rows = clip_rows.get(j.item) or clip_rows.get(html.unescape(j.item))
            if not rows:
                raise DataError(f"clip {j.item!r} is not in the data", j.where, "relevance clip not in the data")
            if len(rows) > 1:
                names = ", ".join(sorted(str(clips[r].media) for r in rows)[:3])
                raise DataError(f"clip {j.item!r} names {len(rows)} clips of the data ({names})", j.where,
                                "ambiguous relevance clip")
            row = next(iter(rows))
            if j.query in query_of and row in grades[query_of[j.query]]:  # two names of one clip
                raise DataError(f"query {j.query!r} judges clip {clips[row].media} twice", j.where,
                                "duplicate judgement")
        except DataError as exc:
            if not skip_bad:
                raise
            skipped.add(exc)
            continue
        if j.query not in query_of:
            query_of[j.query] = len(queries)
            queries.append(caption_at[j.query])
            grades.append({})
        grades[query_of[j.query]][row] = j.relevance
    return queries, grades
