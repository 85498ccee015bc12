"""Benchmarks: each module ``benchmarks/<name>.py`` defines ``run() -> dict``.

``python -m benchmarks [NAME ...]`` (or ``./run bench``) runs them and writes
``benchmarks/results/<name>.json`` with a ``machine`` block; see ``benchmarks/__main__.py``.
"""
