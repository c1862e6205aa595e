"""Shared fixtures. Helpers for the fake NVML library live in tests/fakenvml/."""
