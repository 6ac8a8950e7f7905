"""Config helpers shared by every part that reads a config mapping."""

from __future__ import annotations

import difflib
from typing import Iterable


def _nearest(value: object, known: Iterable[str]) -> tuple[str, str]:
    """("; did you mean 'x'?" or "", the known names listed)."""
    names = sorted(known)
    hint = difflib.get_close_matches(str(value), names, n=1)
    return (f"; did you mean {hint[0]!r}?" if hint else ""), ", ".join(names)


def unknown_key(key: str, known: Iterable[str], where: str, what: str = "option") -> ValueError:
    """The error for a config key nobody reads, suggesting the nearest known one.

    >>> unknown_key("sigm", ["sigma", "method"], "postprocess")
    ValueError("postprocess.sigm: unknown option; did you mean 'sigma'? (known: method, sigma)")
    """
    suggestion, names = _nearest(key, known)
    return ValueError(f"{where}.{key}: unknown {what}{suggestion} (known: {names})")


def unknown_choice(value: object, known: Iterable[str], where: str, what: str = "type") -> ValueError:
    """The error for a value outside its choices, suggesting the nearest.

    >>> unknown_choice("resnt", ["resnet", "efficientnet"], "model.backbone.type")
    ValueError("model.backbone.type: unknown type 'resnt'; did you mean 'resnet'? (known: efficientnet, resnet)")
    """
    suggestion, names = _nearest(value, known)
    return ValueError(f"{where}: unknown {what} {value!r}{suggestion} (known: {names})")
