"""Fixtures for the evaluation tests: the tiny PLM checkpoint."""

from __future__ import annotations

import pytest

from model_runner.tiny import build_tiny_plm


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random PLM saved like a real checkpoint."""
    return build_tiny_plm(str(tmp_path_factory.mktemp("models") / "tiny-plm"))
