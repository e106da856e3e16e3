"""Benchmark suite for asgi_metrics / wsgi_metrics against the bare app and peer libraries.

Run from the repository root: ``python -m benchmarks [--quick] [--only NAME]``.
"""
