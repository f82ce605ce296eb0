"""Loads pytester and the plugin that compares the checked notebook cells' outputs (tests/notebook_outputs.py)."""

pytest_plugins = ["notebook_outputs", "pytester"]
