"""Fixtures of the planner tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.check.support import make_project


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with data files and model folders (see ``tests/check/support.py``)."""
    return make_project(tmp_path)
