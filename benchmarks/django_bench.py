"""In-process Django benchmark. Runs in its own process because ``settings.configure`` may
happen once per process: ``python -m benchmarks.django_bench N REPEATS WARMUP`` prints JSON.

One settings object serves every variant: ``WSGIHandler()`` reads ``settings.MIDDLEWARE``
when it is constructed, so each variant is a handler built with its own middleware list.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from collections.abc import Callable
from typing import Any

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import path

from benchmarks._harness import interleave, prepare, summarise
from benchmarks._wsgi_driver import WSGIApp, check, make_runner


def user(request: HttpRequest, user_id: int) -> HttpResponse:
    return HttpResponse(f"user {user_id}", content_type="text/plain")


urlpatterns = [path("users/<int:user_id>", user)]

MIDDLEWARE: dict[str, tuple[str, list[str]]] = {
    "bare": ("bare", []),
    "ours": ("ours", ["wsgi_metrics.django.MetricsMiddleware"]),
    "django-prometheus": (
        "peer",
        [
            "django_prometheus.middleware.PrometheusBeforeMiddleware",
            "django_prometheus.middleware.PrometheusAfterMiddleware",
        ],
    ),
}


def configure() -> None:
    installed = ["django_prometheus"] if importlib.util.find_spec("django_prometheus") else []
    settings.configure(
        DEBUG=False,
        SECRET_KEY="benchmark-only",
        ROOT_URLCONF="benchmarks.django_bench",
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=installed,
        MIDDLEWARE=[],
        DATABASES={},
        USE_TZ=True,
    )
    django.setup()


def _builder(middleware: list[str]) -> Callable[[], WSGIApp]:
    def build() -> WSGIApp:
        from django.core.handlers.wsgi import WSGIHandler

        for dotted in middleware:  # missing middleware => ImportError => skipped
            module, _, attr = dotted.rpartition(".")
            getattr(importlib.import_module(module), attr)
        settings.MIDDLEWARE = middleware
        return WSGIHandler()

    return build


def run(n: int, repeats: int, warmup: int) -> dict[str, Any]:
    configure()
    variants = [(name, kind, _builder(mw)) for name, (kind, mw) in MIDDLEWARE.items()]
    runners, outcomes = prepare(variants, check, make_runner, warmup)
    interleave(runners, outcomes, n, repeats)
    result = summarise(outcomes, "bare")
    result["params"] = {"n_per_batch": n, "repeats": repeats, "warmup": warmup,
                        "path": "/users/42"}
    return result


if __name__ == "__main__":
    n, repeats, warmup = (int(a) for a in sys.argv[1:4])
    print(json.dumps(run(n, repeats, warmup)))
