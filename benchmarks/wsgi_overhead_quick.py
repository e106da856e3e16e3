"""Quick in-process overhead of the WSGI middleware (Flask) and the Django middleware.

Calls each app the way a WSGI server does (environ, start_response, iterate, close()) with
no network, so the difference is the middleware's own cost per request. Bare and
instrumented apps run interleaved in many short rounds (so machine noise hits both alike);
reported are the medians of the rounds and the median of the per-round differences.
The ``flask+cid`` lines compare the middleware without and with ``correlation_id=True``
(a generated ID, then a valid incoming ``X-Request-ID``).

    python benchmarks/wsgi_overhead_quick.py [requests per round] [rounds]
"""

from __future__ import annotations

import io
import os
import statistics
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from time import perf_counter
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "example_apps" / "django_app")]
os.environ["DJANGO_SETTINGS_MODULE"] = "demo_project.settings"

from prometheus_client import CollectorRegistry  # noqa: E402

App = Callable[[dict[str, Any], Any], Iterable[bytes]]


def environ(path: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {**(extra or {}),
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1", "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr,
        "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False,
    }


def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    return None


def per_request_us(app: App, path: str, n: int, extra: dict[str, Any] | None = None) -> float:
    begin = perf_counter()
    for _ in range(n):
        result = app(environ(path, extra), start_response)
        for _chunk in result:
            pass
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return (perf_counter() - begin) / n * 1e6


def compare(
    name: str, bare: App, wrapped: App, path: str, n: int, rounds: int,
    extra: dict[str, Any] | None = None, labels: tuple[str, str] = ("bare", "with metrics"),
) -> None:
    per_request_us(bare, path, n // 10, extra)  # warm up both
    per_request_us(wrapped, path, n // 10, extra)
    bare_runs, wrapped_runs, diffs = [], [], []
    for index in range(rounds):
        # Alternate which goes first, so neither always gets the warmer caches.
        if index % 2:
            w = per_request_us(wrapped, path, n, extra)
            b = per_request_us(bare, path, n, extra)
        else:
            b = per_request_us(bare, path, n, extra)
            w = per_request_us(wrapped, path, n, extra)
        bare_runs.append(b)
        wrapped_runs.append(w)
        diffs.append(w - b)
    b, w, d = (statistics.median(x) for x in (bare_runs, wrapped_runs, diffs))
    print(f"{name:14s} N={n} x {rounds} rounds: {labels[0]} {b:7.1f} us  "
          f"{labels[1]} {w:7.1f} us  overhead {d:5.1f} us/request ({d / b * 100:4.1f}%)")


def plain_apps() -> tuple[App, App]:
    from wsgi_metrics import MetricsMiddleware

    def hello(env: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    return hello, MetricsMiddleware(
        hello, registry=CollectorRegistry(), route_resolver=lambda env: "/hello"
    )


def flask_apps() -> tuple[App, App]:
    from flask import Flask

    from wsgi_metrics import MetricsMiddleware

    def build() -> Any:
        app = Flask("bench")

        @app.get("/users/<int:user_id>")
        def user(user_id: int) -> str:
            return "ok"

        return app

    bare, wrapped = build(), build()
    wrapped.wsgi_app = MetricsMiddleware(wrapped.wsgi_app, registry=CollectorRegistry())
    return bare, wrapped


def flask_correlation_apps() -> tuple[App, App]:
    """The same Flask app behind the middleware without and with correlation IDs."""
    from flask import Flask

    from wsgi_metrics import MetricsMiddleware

    def build(**options: Any) -> Any:
        app = Flask("bench")

        @app.get("/users/<int:user_id>")
        def user(user_id: int) -> str:
            return "ok"

        app.wsgi_app = MetricsMiddleware(app.wsgi_app, registry=CollectorRegistry(), **options)
        return app

    return build(), build(correlation_id=True)


def django_apps() -> tuple[App, App]:
    import django
    from django.conf import settings

    django.setup()
    from django.core.handlers.wsgi import WSGIHandler

    settings.HTTP_METRICS = {"registry": CollectorRegistry()}
    settings.MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
    bare = WSGIHandler()
    settings.MIDDLEWARE = ["wsgi_metrics.django.MetricsMiddleware", *settings.MIDDLEWARE]
    wrapped = WSGIHandler()
    return bare, wrapped


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 41
    compare("plain", *plain_apps(), "/hello", n * 5, rounds)
    compare("flask", *flask_apps(), "/users/7", n, rounds)
    labels = ("metrics", "metrics+cid")
    compare("flask+cid new", *flask_correlation_apps(), "/users/7", n, rounds, labels=labels)
    compare("flask+cid given", *flask_correlation_apps(), "/users/7", n, rounds,
            {"HTTP_X_REQUEST_ID": "req-1234567890abcdef"}, labels)
    compare("django", *django_apps(), "/api/items/7/", n, rounds)


if __name__ == "__main__":
    main()
