"""Shared pytest configuration. The real-component fixtures live in ``tests/harness/fixtures.py``."""

pytest_plugins = ["tests.harness.fixtures"]
