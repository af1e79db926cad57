"""Fixtures for the margin engine's tests: the raw research cases, by id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def raw_cases(vectors_dir: Path) -> dict[str, dict[str, Any]]:
    """``raw_cases.json`` keyed by case id."""
    cases = json.loads((vectors_dir / "raw_cases.json").read_text(encoding="utf-8"))
    return {c["id"]: c for c in cases}
