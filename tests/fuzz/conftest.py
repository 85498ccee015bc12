"""Fuzz fixtures: the contract tests' deployed factory."""

from tests.contracts.conftest import factory

__all__ = ["factory"]
