"""The real-driver suite runs only where `nvidia-smi` works; everywhere else it is skipped whole.

Run it on a GPU machine from the repository root with `bash tests/gpu/run_on_gpu.sh`.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest


def driver_missing() -> str | None:
    """Why there is no usable NVIDIA driver here, or None when there is one."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "no nvidia-smi on PATH: no NVIDIA driver on this machine"
    try:
        result = subprocess.run(
            [smi, "-L"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"nvidia-smi -L failed: {err}"
    if result.returncode != 0 or "GPU " not in result.stdout:
        why = (result.stderr or result.stdout).strip().splitlines()
        return f"nvidia-smi -L failed (exit {result.returncode}): {why[0] if why else 'no GPU'}"
    return None


@pytest.fixture(scope="session", autouse=True)
def real_driver() -> None:
    """Skips every test of this folder, with the reason, where no real driver answers."""
    why = driver_missing()
    if why is not None:
        pytest.skip(why)
