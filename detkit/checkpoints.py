"""Reading weights safely: ``torch.load(weights_only=True)`` with errors a user can act on.

A checkpoint that carries pickled code (anything but tensors and plain containers) is
refused, never executed; a missing or damaged file is named.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch


def load_weights(path: str | Path, what: str = "weights") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``.

    Raises:
        ValueError: the file does not exist, is not a torch file (or is truncated), or
            carries pickled code (refused, not run).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what}: weights file {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{what}: refusing to load {path}: it carries pickled code or objects beyond tensors "
            f"(loaded with weights_only=True; {str(error).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(f"{what}: {path} is not a readable torch file ({error})") from None


def save_atomic(state: Any, path: str | Path) -> Path:
    """``torch.save`` that never leaves a half-written file where ``path`` was.

    The state is written to a temporary file in the same folder, flushed to disk, then
    renamed over ``path`` (an atomic replace on POSIX and Windows): a crash or a kill during
    the write leaves the previous file whole.
    """
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
