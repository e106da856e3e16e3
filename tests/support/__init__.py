"""Reusable test helpers: a real Prometheus server and promtool wrappers."""
