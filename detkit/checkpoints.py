"""Reading weights safely: ``torch.load(weights_only=True)`` with errors a user can act on.

A checkpoint that carries pickled code (anything but tensors and plain containers) is
refused, never executed; a missing or damaged file is named.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

_ZIP, _PICKLE = b"PK\x03\x04", b"\x80"  # torch.save's zip format (torch >= 1.6); the legacy pickle format


def load_weights(path: str | Path, what: str = "weights") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``.

    Raises:
        ValueError: the file does not exist, is empty, is not a torch file (or is truncated
            or damaged), or carries pickled code (refused, not run). The message says which;
            it never suggests ``weights_only=False``, which would run what the file carries.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what}: weights file {path} does not exist")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{what}: {path} is empty (0 bytes): not a checkpoint (an interrupted copy or download?)")
    with open(path, "rb") as f:
        start = f.read(4)
    if not start.startswith((_ZIP, _PICKLE)):
        raise ValueError(f"{what}: {path} is not a torch checkpoint (it starts with bytes {start.hex(' ')}, "
                         "neither torch.save's zip archive nor its legacy format)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if found is None:  # the unpickler met bytes it cannot read: damage, not code
            raise ValueError(f"{what}: {path} is damaged: its pickled data cannot be read "
                             f"({_reason(error)})") from None
        raise ValueError(
            f"{what}: refusing to load {path}: it carries pickled code or objects beyond tensors and plain "
            f"containers (it names {found.group(1)}); detkit loads weights only and never runs what a "
            "checkpoint carries. Save the model's state_dict (tensors) instead"
        ) from None
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(f"{what}: {path} is not a readable torch file: truncated or damaged "
                         f"({_reason(error)})") from None


def _reason(error: BaseException) -> str:
    """The first sentence of torch's message, without its advice (which may suggest
    ``weights_only=False``), or the error's type when it says nothing."""
    text = str(error)
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", text, re.DOTALL)
    if found:
        text = found.group(1)
    text = text.strip().split(". ")[0].strip() if text.strip() else ""
    return text or type(error).__name__


def save_atomic(state: Any, path: str | Path) -> Path:
    """``torch.save`` that never leaves a half-written file where ``path`` was.

    The state is written to a temporary file in the same folder (``.<name>.<pid>.<random>.tmp``),
    flushed to disk, then renamed over ``path`` (an atomic replace on POSIX and Windows): a
    crash or a kill during the write leaves the previous file whole. A temporary left by a
    kill is removed by ``remove_stale_temporaries`` when the run starts again.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
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


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries that ``save_atomic`` calls in ``folder`` left behind when they
    were killed mid-write (each up to a whole checkpoint); returns what was deleted.

    A temporary whose writing process is still alive is kept: another process may be
    saving into the same folder right now.
    """
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        found = re.fullmatch(r"\.(.+?\.pth)\.(?:(\d+)\.)?[^.]+\.tmp", tmp.name)
        if found is None or (found.group(2) and _alive(int(found.group(2)))):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there; a live writer's file is locked anyway
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def load_checked(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], where: str) -> None:
    """``model.load_state_dict(state_dict)``, failing with the keys that do not fit, named."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [f"{k} {list(v.shape)} (expected {list(own[k].shape)})" for k, v in state_dict.items()
             if k in own and v.shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {title}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}")
        raise ValueError(f"{where}: the weights do not fit this model: {'; '.join(parts)}")
    with torch.no_grad():
        model.load_state_dict(state_dict)
