"""Shared fixtures. The fake NVML library's fixture lives in tests/fakenvml/plugin.py."""

pytest_plugins = ["fakenvml.plugin", "browserkit"]
