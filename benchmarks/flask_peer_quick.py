"""Our Flask and Django overhead against prometheus-flask-exporter and django-prometheus.

Each variant is called the way a WSGI server calls it (environ, start_response, iterate,
close()), in-process, timed with ``time.thread_time()`` (CPU time of this thread, so other
processes on a noisy machine count less). Variants run interleaved in many short rounds,
in a rotating order; reported are medians over rounds, overheads against the bare app and
our overhead divided by the peer's. Needs the peers: run it with the benchmark venv.

    /work/venv-bench/bin/python benchmarks/flask_peer_quick.py [requests per round] [rounds]
"""

from __future__ import annotations

import io
import statistics
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from time import thread_time
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry  # noqa: E402

App = Callable[[dict[str, Any], Any], Iterable[bytes]]


def environ(path: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1", "REMOTE_ADDR": "127.0.0.1", "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr,
        "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False,
    }


def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    return None


def batch_us(app: App, path: str, n: int) -> float:
    begin = thread_time()
    for _ in range(n):
        result = app(environ(path), start_response)
        for _chunk in result:
            pass
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return (thread_time() - begin) / n * 1e6


def flask_variants() -> dict[str, App]:
    from flask import Flask

    from wsgi_metrics import MetricsMiddleware

    def build() -> Flask:
        app = Flask("bench")

        @app.get("/users/<int:user_id>")
        def user(user_id: int) -> str:
            return "ok"

        return app

    variants: dict[str, App] = {"bare": build()}
    ours = build()
    ours.wsgi_app = MetricsMiddleware(  # type: ignore[method-assign]
        ours.wsgi_app, registry=CollectorRegistry()
    )
    variants["ours"] = ours
    try:
        from prometheus_flask_exporter import PrometheusMetrics
    except ImportError:
        print("prometheus-flask-exporter not installed: skipped")
    else:
        peer = build()
        PrometheusMetrics(peer, registry=CollectorRegistry())
        variants["peer"] = peer
    return variants


def django_variants() -> dict[str, App]:
    import importlib.util

    import django
    from django.conf import settings
    from django.http import HttpRequest, HttpResponse
    from django.urls import path

    def user(request: HttpRequest, user_id: int) -> HttpResponse:
        return HttpResponse("ok", content_type="text/plain")

    module = type(sys)("bench_urls")
    module.urlpatterns = [path("users/<int:user_id>", user)]  # type: ignore[attr-defined]
    sys.modules["bench_urls"] = module
    peer = importlib.util.find_spec("django_prometheus") is not None
    settings.configure(
        DEBUG=False, SECRET_KEY="benchmark-only", ROOT_URLCONF="bench_urls",
        ALLOWED_HOSTS=["*"], INSTALLED_APPS=["django_prometheus"] if peer else [],
        MIDDLEWARE=[], DATABASES={}, USE_TZ=True,
        HTTP_METRICS={"registry": CollectorRegistry()},
    )
    django.setup()
    from django.core.handlers.wsgi import WSGIHandler

    variants: dict[str, App] = {}
    lists = {"bare": [], "ours": ["wsgi_metrics.django.MetricsMiddleware"]}
    if peer:
        lists["peer"] = ["django_prometheus.middleware.PrometheusBeforeMiddleware",
                         "django_prometheus.middleware.PrometheusAfterMiddleware"]
    for name, middleware in lists.items():
        settings.MIDDLEWARE = middleware
        variants[name] = WSGIHandler()
    return variants


def run(title: str, variants: dict[str, App], path: str, n: int, rounds: int) -> None:
    for app in variants.values():
        batch_us(app, path, n)  # warm up
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    paired: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        order = names[index % len(names):] + names[:index % len(names)]
        round_times = {name: batch_us(variants[name], path, n) for name in order}
        for name in names:
            times[name].append(round_times[name])
            paired[name].append(round_times[name] - round_times["bare"])
    med = {name: statistics.median(values) for name, values in times.items()}
    over = {name: statistics.median(values) for name, values in paired.items()}
    line = "  ".join(
        f"{name} {med[name]:6.1f} us (+{over[name]:5.1f})" for name in names
    )
    ratio = f"  ratio ours/peer {over['ours'] / over['peer']:.3f}" if "peer" in over else ""
    print(f"{title:7s} N={n} x {rounds}: {line}{ratio}")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 21
    run("flask", flask_variants(), "/users/7", n, rounds)
    run("django", django_variants(), "/users/7", n, rounds)


if __name__ == "__main__":
    main()
