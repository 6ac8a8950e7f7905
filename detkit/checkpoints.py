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
