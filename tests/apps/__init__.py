"""Tiny apps the multiprocess tests run under real servers (gunicorn, uvicorn)."""
