"""Pytest fixtures for the fake NVML library (register with `pytest_plugins`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakenvml import build_library


@pytest.fixture(scope="session")
def fake_nvml_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory holding the fake `libnvidia-ml.so.1`, built once per session."""
    return build_library(tmp_path_factory.mktemp("fakenvml"))
