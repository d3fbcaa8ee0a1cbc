"""Writes that never leave a half-written file or folder behind (checkpoints, weights).

A leaf module: models save themselves with it, trainers write their run folders with it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Write a directory in a temporary sibling, then swap it in.

    A crash while writing leaves the previous ``final`` intact. Between the two renames
    the old copy is ``final.old``; :func:`recover_dir` brings it back.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        old = final.with_name(final.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_weights(state: dict, path: Path) -> None:
    """Write a state dict as safetensors, atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
    os.replace(tmp, path)


def recover_dir(final: Path) -> Path:
    """``final``, or its ``.old`` copy if a crash hit between the renames of :func:`atomic_dir`."""
    old = final.with_name(final.name + ".old")
    if not final.exists() and old.exists():
        os.replace(old, final)
    return final


def atomic_write_text(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temporary file beside it and a rename, so a stop
    leaves the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
