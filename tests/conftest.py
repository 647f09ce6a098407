"""Shared test set-up: fixture plugins, one module each."""

pytest_plugins = ["tests.fixtures.server"]
