"""Plain text inputs (one text a line)."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError


def read_text(path: str | Path) -> str:
    """The text of a UTF-8 file; a missing file or another encoding is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", str(path))
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", str(path)) from exc


def read_lines(path: str | Path) -> list[str]:
    """Non-empty lines of a UTF-8 file; an empty line is an error naming its number."""
    lines = read_text(path).splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip() and n < len(lines):
            raise DataError("empty line", f"{path} line {n}")
    return [line.strip() for line in lines if line.strip()]
