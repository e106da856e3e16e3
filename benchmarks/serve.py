"""App factories for the end-to-end servers; the variant comes from $BENCH_VARIANT.

uvicorn: ``uvicorn --factory benchmarks.serve:asgi_app``
gunicorn: ``gunicorn 'benchmarks.serve:wsgi_app()'``
"""

from __future__ import annotations

import os

from benchmarks import asgi_variants, wsgi_variants
from benchmarks._wsgi_driver import WSGIApp


def _variant() -> str:
    return os.environ.get("BENCH_VARIANT", "bare")


def asgi_app() -> asgi_variants.ASGIApp:
    return asgi_variants.BY_NAME[_variant()].build(0)


def wsgi_app() -> WSGIApp:
    return wsgi_variants.BY_NAME[_variant()].build()
