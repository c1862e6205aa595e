"""Tests against a real NVIDIA driver, skipped where there is none.

Run them on a GPU machine: `bash tests/gpu/run_on_gpu.sh`.
"""
