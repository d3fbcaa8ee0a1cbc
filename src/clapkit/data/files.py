"""The bottom of the data layer: reading files and rows, naming what is wrong.

Every reader in :mod:`clapkit.data` builds on these: ``KIND:PATH`` specs, CSV rows
streamed with their line numbers, UTF-8 text, and the :class:`Skipped` record that
counts what ``--skip-bad`` left out. This module imports nothing else from the data
layer, so the readers above it (manifests, labelled sets, text, STS, images) import
downwards only.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError


@dataclass
class Skipped:
    """Rows and files left out because the user asked for ``skip_bad``."""

    reasons: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def add(self, error: DataError) -> None:
        self.reasons[error.reason] += 1
        if len(self.examples) < 20:
            self.examples.append(str(error))

    @property
    def count(self) -> int:
        return sum(self.reasons.values())

    def to_dict(self) -> dict:
        return {"count": self.count, "by_reason": dict(self.reasons), "examples": self.examples}

    def coverage(self, present: int) -> dict:
        """How much of the set the metadata lists is here: ``listed`` = ``present`` (read
        and scored) + ``missing`` (listed, no file) + ``unreadable`` (a file that does not
        decode, holds no samples or was cut short) + ``malformed`` (rows left out for
        another fault). Every zero-shot result and bench cell carries it, so two labs'
        numbers can be compared knowing what each scored."""
        missing = sum(n for r, n in self.reasons.items() if r in MISSING_REASONS)
        unreadable = sum(n for r, n in self.reasons.items() if r in UNREADABLE_REASONS)
        return {"listed": present + self.count, "present": present, "missing": missing, "unreadable": unreadable,
                "malformed": self.count - missing - unreadable}


# the reasons (DataError.reason) a listed item is counted as missing or unreadable by Skipped.coverage
MISSING_REASONS = frozenset({"audio file not found", "image file not found", "clip not downloaded"})
UNREADABLE_REASONS = frozenset({"unreadable audio", "empty audio", "truncated audio", "unreadable image", "empty image",
                                "not an image"})


def parse_spec(spec: str, kinds: tuple[str, ...]) -> tuple[str, Path]:
    """Split ``KIND:PATH`` and check the kind."""
    kind, sep, path = str(spec).partition(":")
    if not sep or kind not in kinds:
        raise DataError(f"data spec {spec!r}: expected KIND:PATH with KIND one of {', '.join(kinds)}")
    if not path:
        raise DataError(f"data spec {spec!r}: the path after '{kind}:' is empty")
    return kind, Path(path).expanduser()


def iter_csv_rows(path: Path, required: list[str]) -> Iterator[tuple[int, dict]]:
    """Rows of a CSV as dicts with their line numbers, read as a stream; errors name the file."""
    if not path.is_file():
        raise DataError("file not found", str(path))
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(
                    f"missing column(s) {', '.join(missing)}; the header has {', '.join(header) or 'nothing'}",
                    f"{path} line 1",
                )
            for row in reader:
                yield reader.line_num, row
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", str(path)) from exc
    except csv.Error as exc:
        raise DataError(f"malformed CSV ({exc})", str(path)) from exc


def read_csv_rows(path: Path, required: list[str]) -> list[tuple[int, dict]]:
    """All rows of :func:`iter_csv_rows`."""
    return list(iter_csv_rows(path, required))


def iter_records(path: Path, required: list[str]) -> Iterator[tuple[str, object]]:
    """The records of a table file with where each one is: the rows of a CSV (``.csv`` or
    any other suffix; ``required`` columns checked in the header), the lines of JSON Lines
    (``.jsonl``) or the items of a JSON array (``.json``, e.g. ``emoji.json``). Read each
    record's values with :func:`record_values`, which raises for that record alone."""
    if path.suffix.lower() not in (".jsonl", ".json"):
        for line, row in iter_csv_rows(path, required):
            yield f"{path} line {line}", row
        return
    import json

    text = read_text(path)
    if path.suffix.lower() == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    yield f"{path} line {n}", json.loads(line)
                except json.JSONDecodeError as exc:
                    yield f"{path} line {n}", DataError(f"not valid JSON ({exc.msg})", f"{path} line {n}")
        return
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON ({exc.msg})", f"{path} line {exc.lineno}") from exc
    if not isinstance(items, list):
        raise DataError("expected a JSON array of objects (or use .jsonl, one object a line)", str(path))
    for i, item in enumerate(items):
        yield f"{path} item {i}", item


def record_values(record: object, where: str, columns: list[str]) -> list[str]:
    """The stripped values of ``columns`` in one record of :func:`iter_records`; a record
    that is not an object, has more fields than the header or lacks a value is an error
    naming it."""
    if isinstance(record, DataError):
        raise record
    if not isinstance(record, dict):
        raise DataError(f"expected an object with {', '.join(columns)}, got {type(record).__name__}", where)
    if None in record:  # a CSV row with more fields than the header
        raise DataError(f"{len(record) - 1 + len(record[None])} fields but the header has {len(record) - 1}", where)
    missing = [c for c in columns if record.get(c) is None]
    if missing:
        raise DataError(f"no value for {', '.join(missing)}", where, reason="missing value")
    return [str(record[c]).strip() for c in columns]


def check_row(row: dict, line: int, path: Path, columns: list[str]) -> None:
    if None in row:  # more fields than the header
        raise DataError(f"{len(row) - 1 + len(row[None])} fields but the header has {len(row) - 1}", f"{path} line {line}")
    empty = [c for c in columns if row.get(c) is None]
    if empty:
        raise DataError(f"row is short: no value for {', '.join(empty)}", f"{path} line {line}")


def read_text(path: str | Path) -> str:
    """The text of a UTF-8 file (a leading byte-order mark dropped); a missing file or
    another encoding is an error naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", str(path))
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise DataError(f"not UTF-8 text ({exc.reason} at byte {exc.start}); re-save the file as UTF-8",
                        f"{path} line {line}") from exc


def read_lines(path: str | Path, skip_bad: bool = False, skipped: Skipped | None = None,
               reason: str = "empty line") -> list[str]:
    """The non-empty lines of a UTF-8 file, stripped. An empty line (other than a blank last
    line, the file's end) is an error naming its number; with ``skip_bad`` it is dropped and
    counted in ``skipped`` under ``reason``. A caller that passes ``skipped`` offers
    ``--skip-bad``, and the error says so."""
    lines = read_text(path).splitlines()
    out = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            out.append(line.strip())
        elif n < len(lines):
            hint = "; remove it or pass --skip-bad" if skipped is not None else ""
            err = DataError("empty line", f"{path} line {n}", reason)
            if not skip_bad:
                raise DataError(f"empty line{hint}", err.where, reason)
            skipped.add(err)
    return out


def keep_good(items: list, bad: dict, skip_bad: bool, skipped: Skipped, noun: str) -> list:
    """``items`` without those whose ``.media`` is a key of ``bad`` (its DataError): an
    error naming the first bad file, or, with ``skip_bad``, each one counted."""
    if bad and not skip_bad:
        first = next(iter(bad.values()))
        raise DataError(f"{first} [{len(bad)} bad {noun} in all; use --skip-bad to skip and count them]")
    kept = []
    for item in items:
        if item.media in bad:
            skipped.add(bad[item.media])
        else:
            kept.append(item)
    return kept


class Collector:
    """Runs each row's or record's parser: keeps what it returns, or, on a DataError,
    re-raises it with the ``--skip-bad`` hint, or with ``skip_bad`` counts it."""

    def __init__(self, skip_bad: bool, skipped: Skipped):
        self.items: list = []
        self.skip_bad, self.skipped = skip_bad, skipped

    def __call__(self, fn) -> None:
        try:
            self.items.extend(fn())
        except DataError as exc:
            self.fail(exc)

    def fail(self, exc: DataError) -> None:
        if not self.skip_bad:
            raise DataError(f"{exc} (use --skip-bad to skip and count such rows)", reason=exc.reason) from exc
        self.skipped.add(exc)


def csv_header(path: str | Path) -> list[str]:
    """The column names of a CSV file's first line ([] if it cannot be read)."""
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
            return next(csv.reader(fh), [])
    except OSError:
        return []


@dataclass(frozen=True)
class TarMember:
    """A member file of a tar archive, read in place."""

    tar: Path
    name: str
    offset: int  # of the member's data
    size: int

    def read(self) -> bytes:
        with open(self.tar, "rb") as fh:
            fh.seek(self.offset)
            return fh.read(self.size)

    def open(self) -> io.BytesIO:
        return io.BytesIO(self.read())

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    def __str__(self) -> str:
        return f"{self.tar}#{self.name}"


def fingerprint_files(paths) -> str:
    """Which files a result was computed on: sha256 of their sorted (path, size) (their
    bytes are not read; :mod:`clapkit.data.manifest` hashes contents)."""
    import hashlib
    import os

    h = hashlib.sha256()
    for p in sorted(str(p) for p in paths):
        size = os.path.getsize(p) if os.path.isfile(p) else -1
        h.update(f"{p}\t{size}\n".encode())
    return h.hexdigest()[:16]
