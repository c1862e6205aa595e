"""Tests of the single executable built by tools/build_exe.py (marker `exe`)."""
