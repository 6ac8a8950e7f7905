"""Shared test fixtures: paths to the shared peer data beside the repository."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
PEER = SHARED / "data" / "peer"
COCO128 = SHARED / "data" / "coco128"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, skipping the test when it is absent."""
    path = SHARED.joinpath("data", *parts)
    if not path.exists():
        pytest.skip(f"shared test data not found: {path}")
    return path
