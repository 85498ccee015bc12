"""Prediction markets for machine-learning data on an EVM chain."""

__version__ = "0.1.0"
