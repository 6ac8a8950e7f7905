"""Config helpers shared by every part that reads a config mapping."""

from __future__ import annotations

import difflib
from typing import Iterable


def unknown_key(key: str, known: Iterable[str], where: str, what: str = "option") -> ValueError:
    """The error for a config key nobody reads, suggesting the nearest known one.

    >>> unknown_key("sigm", ["sigma", "method"], "postprocess")
    ValueError("postprocess.sigm: unknown option; did you mean 'sigma'? (known: method, sigma)")
    """
    names = sorted(known)
    hint = difflib.get_close_matches(str(key), names, n=1)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
    return ValueError(f"{where}.{key}: unknown {what}{suggestion} (known: {', '.join(names)})")
