"""Plain text inputs (one text a line)."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError


def read_lines(path: str | Path) -> list[str]:
    """Non-empty lines of a UTF-8 file; an empty line is an error naming its number."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", str(path))
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", str(path)) from exc
    for n, line in enumerate(lines, 1):
        if not line.strip() and n < len(lines):
            raise DataError("empty line", f"{path} line {n}")
    return [line.strip() for line in lines if line.strip()]
