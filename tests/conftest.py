"""Shared fixtures: the ``shared`` corpora folder beside the repository, fixed clocks."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture
def shared_dir() -> Path:
    """The team's shared corpora; a user's clone has none, so tests that need it skip."""
    if not SHARED.is_dir():
        pytest.skip("the shared corpora folder (../shared beside the repository) is absent")
    return SHARED


@pytest.fixture
def now() -> datetime:
    return datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
