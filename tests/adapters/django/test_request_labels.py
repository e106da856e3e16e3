"""Issue 13 through real Django: django.test.Client (the WSGI-style handler) and
AsyncClient (the ASGI handler, the middleware called natively), with the views of
:mod:`tests.support.apps.django_label_urls`: labels from the request, ``set_label`` from
function, class-based and async views and from a middleware after ours, ``do_not_track``,
``exclude_methods``, ``enabled``, the in-flight gauge by route, ``count_unmatched`` and the
start-up checks through ``settings.HTTP_METRICS``."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.paths import ROOT

sys.path.insert(0, str(ROOT / "example_apps" / "django_app"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_project.settings")

import django

django.setup()

from django.core.exceptions import MiddlewareNotUsed  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.test import AsyncClient, Client, override_settings  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from asgi_metrics.exposition.collector import iter_registered  # noqa: E402
from tests.support.apps import django_label_urls as views  # noqa: E402
from tests.support.request_labels import by, failure_lines, label_names, total  # noqa: E402
from tests.support.scrape import (  # noqa: E402
    Samples,
    exceptions_by_labels,
    in_flight,
    parse_samples,
    requests_by_labels,
)
from wsgi_metrics import (  # noqa: E402
    OTHER_VALUE,
    ConfigurationError,
    RequestView,
    from_header,
    from_response_header,
)
from wsgi_metrics.django import MetricsMiddleware  # noqa: E402

URLS = "tests.support.apps.django_label_urls"
OURS = "wsgi_metrics.django.MetricsMiddleware"
LABELLING = "tests.support.apps.django_label_urls.LabellingMiddleware"
MIDDLEWARE = [OURS, "django.middleware.common.CommonMiddleware", LABELLING]
TENANT = {"tenant": from_header("X-Tenant")}
ITEM = "/items/<int:pk>/"


def metrics_settings(**options: Any) -> Any:
    """Our middleware first, a labelling one after it, these URLs, a fresh registry."""
    return override_settings(
        HTTP_METRICS={"registry": CollectorRegistry(), **options},
        ROOT_URLCONF=URLS,
        MIDDLEWARE=MIDDLEWARE,
    )


@pytest.fixture(autouse=True)
def _released() -> Iterator[None]:
    views.ENTERED.clear()
    views.RELEASE.clear()
    yield
    views.RELEASE.set()


def scrape(client: Client | None = None) -> Samples:
    response = (client or Client()).get("/metrics")
    assert response.status_code == 200
    return parse_samples(response.content.decode())


def fetch(path: str, method: str = "GET", **extra: Any) -> int:
    response = Client(raise_request_exception=False).generic(method, path, **extra)
    if response.streaming:
        b"".join(response.streaming_content)
    return int(response.status_code)


def run_async(requests: list[tuple[str, dict[str, str]]]) -> tuple[list[int], Samples]:
    """Each (path, headers) through the ASGI handler (AsyncClient), then a scrape."""

    async def traffic() -> tuple[list[int], bytes]:
        client = AsyncClient(raise_request_exception=False)
        statuses = []
        for path, headers in requests:
            response = await client.get(path, headers=headers)
            if response.streaming and response.is_async:
                async for _ in response.streaming_content:
                    pass
            elif response.streaming:
                b"".join(response.streaming_content)  # as Django's own tests read it
            statuses.append(response.status_code)
        scraped = await AsyncClient().get("/metrics")
        return statuses, bytes(scraped.content)

    statuses, text = asyncio.run(traffic())
    return statuses, parse_samples(text.decode())


# --- labels from the request ------------------------------------------------------------


def test_header_label_allowed_values_other_and_default() -> None:
    with metrics_settings(
        labels={"plan": from_header("X-Plan", allowed=["free", "pro"], default="none")}
    ):
        for plan in ["free", "pro", "pro", "gold"]:
            assert fetch("/items/1/", HTTP_X_PLAN=plan) == 200
        assert fetch("/items/2/") == 200
        samples = scrape()
    names = ("method", "route", "status", "plan")
    expected = {
        ("GET", ITEM, "200", "free"): 1,
        ("GET", ITEM, "200", "pro"): 2,
        ("GET", ITEM, "200", OTHER_VALUE): 1,
        ("GET", ITEM, "200", "none"): 1,
    }
    assert by(samples, "http_requests_total", *names) == expected
    assert by(samples, "http_request_duration_seconds_count", *names) == expected


def test_header_label_without_allowed_keeps_max_label_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="asgi_metrics")
    sent = ["a", "b", "/admin/", "z" * 129, "z" * 128, "c", "a"]
    with metrics_settings(labels=TENANT, max_label_values=3):
        for tenant in sent:
            assert fetch("/items/1/", HTTP_X_TENANT=tenant) == 200
        assert fetch("/items/1/") == 200
        samples = scrape()
    assert by(samples, "http_requests_total", "tenant") == {
        ("a",): 2, ("b",): 1, ("z" * 128,): 1, (OTHER_VALUE,): 3, ("",): 1,
    }
    full = failure_lines(caplog.records, "max_label_values=3")
    assert len(full) == 1 and "'tenant'" in full[0]
    assert len(failure_lines(caplog.records, "starting with '/'")) == 1


def test_response_header_label() -> None:
    with metrics_settings(
        labels={"cache": from_response_header("X-Cache", allowed=["hit", "miss"],
                                              default="none")}
    ):
        for state in ["hit", "miss", "miss", "expired"]:
            assert fetch(f"/cache/{state}/") == 201
        assert fetch("/items/1/", HTTP_X_CACHE="hit") == 200  # a request header: not it
        assert fetch("/stream/before/") == 200  # a streaming response without it
        samples = scrape()
    assert by(samples, "http_requests_total", "route", "cache") == {
        ("/cache/<str:state>/", "hit"): 1,
        ("/cache/<str:state>/", "miss"): 2,
        ("/cache/<str:state>/", OTHER_VALUE): 1,
        (ITEM, "none"): 1,
        ("/stream/before/", "none"): 1,
    }


def test_callable_label_gets_the_request_view() -> None:
    seen: list[tuple[Any, ...]] = []

    def client(view: RequestView) -> str:
        seen.append((
            view.method, view.route, view.status, view.request_headers.get("x-client"),
            view.response_headers.get("X-Cache"), view.raw.path,
        ))
        return str(view.request_headers.get("X-Client", "unknown"))

    with metrics_settings(labels={"client": client}):
        assert fetch("/cache/hit/", HTTP_X_CLIENT="cli") == 201
        assert fetch("/nowhere/", "POST") == 404
        samples = scrape()
    assert seen == [
        ("GET", "/cache/<str:state>/", 201, "cli", "hit", "/cache/hit/"),
        ("POST", "__unmatched__", 404, None, None, "/nowhere/"),
    ]
    assert by(samples, "http_requests_total", "method", "route", "status", "client") == {
        ("GET", "/cache/<str:state>/", "201", "cli"): 1,
        ("POST", "__unmatched__", "404", "unknown"): 1,
    }


def test_callable_that_raises_records_the_default_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="asgi_metrics")

    def broken(view: RequestView) -> str:
        raise LookupError("no tenant")

    with metrics_settings(labels={"tenant": broken}):
        for _ in range(3):
            assert fetch("/items/1/") == 200
        samples = scrape()
    assert by(samples, "http_requests_total", "route", "status", "tenant") == {
        (ITEM, "200", ""): 3
    }
    assert len(failure_lines(caplog.records, "reading the label 'tenant'")) == 1


@pytest.mark.parametrize("naming", ["default", "otel"])
def test_labels_on_every_request_family(naming: str) -> None:
    with metrics_settings(
        naming=naming, labels=TENANT, request_size=True, response_size=True,
        time_to_first_byte=True,
    ):
        assert fetch("/items/1/", HTTP_X_TENANT="acme") == 200
        assert fetch("/upload/", "POST", data=b"123456", content_type="text/plain",
                     HTTP_X_TENANT="beta") == 200
        assert fetch("/boom/", HTTP_X_TENANT="acme") == 500
        samples = scrape()
    if naming == "default":
        method, route, status, error = "method", "route", "status", "exception_type"
        families = ["http_requests_total", "http_request_duration_seconds_count",
                    "http_request_size_bytes_count", "http_response_size_bytes_count",
                    "http_request_time_to_first_byte_seconds_count"]
        size, exceptions = "http_request_size_bytes", "http_request_exceptions_total"
        gauge = "http_requests_in_flight"
    else:
        method, route, status, error = (
            "http_request_method", "http_route", "http_response_status_code", "error_type"
        )
        families = ["http_server_request_duration_seconds_count",
                    "http_server_request_body_size_bytes_count",
                    "http_server_response_body_size_bytes_count",
                    "http_server_time_to_first_byte_seconds_count"]
        size, exceptions = ("http_server_request_body_size_bytes",
                            "http_server_request_exceptions_total")
        gauge = "http_server_active_requests"
    expected = {
        ("GET", ITEM, "200", "acme"): 1,
        ("POST", "/upload/", "200", "beta"): 1,
        ("GET", "/boom/", "500", "acme"): 1,
    }
    for family in families:
        assert label_names(samples, family) == {tuple(sorted((method, route, status, "tenant")))}
        assert by(samples, family, method, route, status, "tenant") == expected, family
    assert by(samples, f"{size}_sum", route, "tenant")[("/upload/", "beta")] == 6
    assert by(samples, f"{size}_bucket", route, "tenant", "le")[("/upload/", "beta", "+Inf")] == 1
    assert by(samples, exceptions, method, route, error, "tenant") == {
        ("GET", "/boom/", "RuntimeError", "acme"): 1
    }
    assert label_names(samples, gauge) == {(method,)}


# --- set_label --------------------------------------------------------------------------


def test_set_label_from_function_class_based_views_and_a_later_middleware() -> None:
    with metrics_settings(labels=TENANT):
        assert fetch("/assign/acme/") == 200
        assert fetch("/class/beta/") == 200
        assert fetch("/items/1/", HTTP_X_MIDDLEWARE_TENANT="mw") == 200
        assert fetch("/assign/view/", HTTP_X_MIDDLEWARE_TENANT="mw") == 200  # the view last
        assert fetch("/items/1/", HTTP_X_TENANT="header") == 200
        assert fetch("/items/1/") == 200  # nothing set: forgotten, the default
        samples = scrape()
    assert by(samples, "http_requests_total", "route", "tenant") == {
        ("/assign/<str:tenant>/", "acme"): 1,
        ("/assign/<str:tenant>/", "view"): 1,
        ("/class/<str:tenant>/", "class-beta"): 1,
        (ITEM, "mw"): 1,
        (ITEM, "header"): 1,
        (ITEM, ""): 1,
    }


def test_set_label_in_streaming_responses() -> None:
    with metrics_settings(labels=TENANT):
        assert fetch("/stream/before/") == 200
        assert fetch("/stream/during/") == 200
        assert fetch("/items/1/") == 200
        samples = scrape()
    assert by(samples, "http_requests_total", "route", "tenant") == {
        ("/stream/before/", "streamer"): 1,
        ("/stream/during/", "late"): 1,
        (ITEM, ""): 1,
    }
    assert in_flight(samples) == 0


def test_set_label_under_the_asgi_handler() -> None:
    with metrics_settings(labels=TENANT):
        statuses, samples = run_async([
            ("/async/acme/", {}),  # an async view, in the event loop
            ("/assign/sync/", {}),  # a sync view, in asgiref's thread
            ("/class/beta/", {}),
            ("/items/1/", {"X-Middleware-Tenant": "mw"}),  # a sync middleware, adapted
            ("/stream/before/", {}),
            ("/stream/during/", {}),
            ("/stream/async/", {}),
            ("/items/1/", {}),  # nothing set: forgotten
        ])
    assert statuses == [200] * 8
    assert by(samples, "http_requests_total", "route", "tenant") == {
        ("/async/<str:tenant>/", "async-acme"): 1,
        ("/assign/<str:tenant>/", "sync"): 1,
        ("/class/<str:tenant>/", "class-beta"): 1,
        (ITEM, "mw"): 1,
        ("/stream/before/", "streamer"): 1,
        ("/stream/during/", "late"): 1,
        ("/stream/async/", "late-async"): 1,
        (ITEM, ""): 1,
    }
    assert in_flight(samples) == 0


def test_set_label_of_an_uncounted_request_does_not_reach_a_held_stream() -> None:
    # The test client holds the first (streaming) response unread, so its request's
    # assignments are still current in this thread; a later request that is served but
    # not counted and calls set_label must not relabel it.
    with metrics_settings(labels=TENANT, exclude_methods=["HEAD"],
                          exclude_paths=["/assign/skipped/"]):
        client = Client()
        held = client.get("/stream/before/", HTTP_X_TENANT="hdr")
        assert client.head("/assign/by-head/").status_code == 200
        assert client.get("/assign/skipped/").status_code == 200
        assert b"".join(held.streaming_content) == b"ab"
        samples = scrape()
    assert by(samples, "http_requests_total", "route", "tenant") == {
        ("/stream/before/", "streamer"): 1
    }


# --- do_not_track -----------------------------------------------------------------------

UNTRACKED = [
    ("/private/function/", "GET"), ("/private/marked-then-wrapped/", "GET"),
    ("/private/wrapped-then-marked/", "GET"), ("/private/class/", "GET"),
    ("/private/class/", "POST"), ("/private/as-view/", "GET"),
    ("/private/as-view-wrapped/", "GET"), ("/private/wrapped-as-view/", "GET"),
    ("/private/async/", "GET"),
]


@pytest.mark.parametrize("by_route", [False, True], ids=["by-method", "by-route"])
def test_do_not_track_views_are_served_and_never_recorded(by_route: bool) -> None:
    with metrics_settings(labels=TENANT, in_flight_by_route=by_route):
        for path, method in UNTRACKED:
            assert fetch(path, method) == 200, path
        assert fetch("/plain/") == 200
        samples = scrape()
        statuses, async_samples = run_async([(path, {}) for path, _ in UNTRACKED])
    assert statuses == [200] * len(UNTRACKED)
    assert requests_by_labels(samples) == {("GET", "/plain/", "200"): 1}
    assert requests_by_labels(async_samples) == {("GET", "/plain/", "200"): 1}
    for scraped in (samples, async_samples):
        assert not any("/private/" in dict(labels).get("route", "") for _, labels in scraped)
        assert in_flight(scraped) == 0


def test_do_not_track_stream_counts_in_flight_until_closed_or_collected() -> None:
    with metrics_settings():
        read = Client().get("/private/stream/")
        dropped = Client().get("/private/stream/")
        # While served, the by-method gauge counts them (see docs/semantics.md).
        assert in_flight(scrape()) == 2
        assert b"".join(read.streaming_content) == b"ab"  # the client closes it
        del dropped  # never read, never closed: collected
        gc.collect()
        samples = scrape()
    assert requests_by_labels(samples) == {}
    assert in_flight(samples) == 0


def test_requests_never_recorded_take_no_label_value_and_call_no_source() -> None:
    routes: list[str] = []

    def seen(view: RequestView) -> str:
        routes.append(view.route)
        return "x"

    with metrics_settings(max_label_values=2, count_unmatched=False,
                          labels={"tenant": from_header("X-Tenant"), "seen": seen}):
        for tenant in ["probe-1", "probe-2"]:
            assert fetch("/private/function/", HTTP_X_TENANT=tenant) == 200
        for tenant in ["scan-1", "scan-2"]:
            assert fetch("/nowhere/", HTTP_X_TENANT=tenant) == 404
        for tenant in ["acme", "beta", "gamma"]:
            assert fetch("/plain/", HTTP_X_TENANT=tenant) == 200
        samples = scrape()
    assert by(samples, "http_requests_total", "route", "tenant") == {
        ("/plain/", "acme"): 1, ("/plain/", "beta"): 1, ("/plain/", OTHER_VALUE): 1,
    }
    assert routes == ["/plain/"] * 3


# --- exclude_methods, enabled -----------------------------------------------------------


def test_exclude_methods_are_served_not_counted() -> None:
    with metrics_settings(exclude_methods=["OPTIONS", "HEAD"], labels=TENANT):
        assert fetch("/plain/", "OPTIONS") == 200  # Django's View answers OPTIONS
        assert fetch("/items/1/", "HEAD") == 200
        assert fetch("/items/1/") == 200
        samples = scrape()
        _, async_samples = run_async([("/items/2/", {})])
    assert requests_by_labels(samples) == {("GET", ITEM, "200"): 1}
    assert {dict(labels).get("method") for name, labels in samples
            if name.startswith("http_requests")} == {"GET"}
    assert in_flight(samples) == 0
    assert requests_by_labels(async_samples) == {("GET", ITEM, "200"): 2}


def test_exclude_methods_in_lower_case_is_refused() -> None:
    with (
        metrics_settings(exclude_methods=["options"]),
        pytest.raises(ConfigurationError, match=r"exclude_methods.*'options'"),
    ):
        Client().get("/items/1/")


PAGES = [("/items/1/", "GET"), ("/metrics", "GET"), ("/boom/", "GET"), ("/nowhere/", "GET"),
         ("/stream/before/", "GET"), ("/upload/", "POST")]


def pages() -> list[tuple[int, list[tuple[str, str]], bytes]]:
    answers = []
    client = Client(raise_request_exception=False)
    for path, method in PAGES:
        response = client.generic(method, path)
        body = (b"".join(response.streaming_content) if response.streaming
                else response.content)
        answers.append((response.status_code, sorted(response.items()), body))
    return answers


def test_disabled_drops_the_middleware(monkeypatch: pytest.MonkeyPatch) -> None:
    with override_settings(ROOT_URLCONF=URLS, MIDDLEWARE=MIDDLEWARE[1:]):
        expected = pages()
    assert expected[1][0] == 404  # the app has no /metrics of its own
    registry = CollectorRegistry()
    with override_settings(
        HTTP_METRICS={"registry": registry, "enabled": False, "labels": TENANT},
        ROOT_URLCONF=URLS, MIDDLEWARE=MIDDLEWARE,
    ):
        assert pages() == expected
        with pytest.raises(MiddlewareNotUsed):
            MetricsMiddleware(lambda request: HttpResponse())
        for handler in (WSGIHandler(), ASGIHandler()):
            chain: Any = handler._middleware_chain
            assert not isinstance(getattr(chain, "__wrapped__", chain), MetricsMiddleware)
    assert list(iter_registered(registry)) == []

    monkeypatch.setenv("HTTP_METRICS_ENABLED", "false")
    env_registry = CollectorRegistry()
    with override_settings(
        HTTP_METRICS={"registry": env_registry}, ROOT_URLCONF=URLS, MIDDLEWARE=MIDDLEWARE
    ):
        assert pages() == expected
        with pytest.raises(MiddlewareNotUsed):
            MetricsMiddleware(lambda request: HttpResponse())
    assert list(iter_registered(env_registry)) == []


# --- in flight by route -----------------------------------------------------------------


def stuck_in_a_thread(target: Any) -> threading.Thread:
    worker = threading.Thread(target=target)
    worker.start()
    assert views.ENTERED.wait(10)
    return worker


@pytest.mark.parametrize("path", ["/stuck/1/", "/stuck-async/1/"])
def test_in_flight_by_route_shows_a_stuck_request_under_its_route(path: str) -> None:
    template = path.replace("1", "<int:n>")
    statuses: list[int] = []
    with metrics_settings(in_flight_by_route=True):
        worker = stuck_in_a_thread(lambda: statuses.append(fetch(path)))
        try:
            samples = scrape()
            assert by(samples, "http_requests_in_flight", "method", "route") == {
                ("GET", template): 1
            }
            assert requests_by_labels(samples) == {}
        finally:
            views.RELEASE.set()
            worker.join(10)
        assert statuses == [200]
        samples = scrape()
    assert in_flight(samples) == 0
    assert requests_by_labels(samples) == {("GET", template, "200"): 1}


def test_in_flight_by_route_under_the_asgi_handler() -> None:
    # Only our (async) middleware: a sync one would run the stuck request in asgiref's
    # one thread-sensitive thread, which the scrape's AsyncClient needs too.
    with (
        metrics_settings(in_flight_by_route=True, naming="otel"),
        override_settings(MIDDLEWARE=[OURS]),
    ):
        worker = stuck_in_a_thread(lambda: run_async([("/stuck-async/2/", {})]))
        try:

            async def metrics() -> bytes:
                return bytes((await AsyncClient().get("/metrics")).content)

            samples = parse_samples(asyncio.run(metrics()).decode())
            assert by(samples, "http_server_active_requests", "http_request_method",
                      "http_route") == {("GET", "/stuck-async/<int:n>/"): 1}
        finally:
            views.RELEASE.set()
            worker.join(10)
        samples = scrape()
    assert total(samples, "http_server_active_requests") == 0


# --- count_unmatched --------------------------------------------------------------------


def test_count_unmatched_false_drops_unmatched_requests() -> None:
    with metrics_settings(count_unmatched=False):
        assert fetch("/nowhere/") == 404
        assert fetch("/items/1") == 301  # APPEND_SLASH: no route claimed it
        assert fetch("/items/1/") == 200
        samples = scrape()
        _, async_samples = run_async([("/nowhere/", {})])
    assert requests_by_labels(samples) == {("GET", ITEM, "200"): 1}
    assert requests_by_labels(async_samples) == {("GET", ITEM, "200"): 1}
    assert in_flight(samples) == 0 == in_flight(async_samples)


def test_unmatched_counted_by_default() -> None:
    with metrics_settings():
        assert fetch("/nowhere/") == 404
        assert fetch("/boom") == 301
        samples = scrape()
    assert requests_by_labels(samples) == {
        ("GET", "__unmatched__", "404"): 1, ("GET", "__unmatched__", "301"): 1,
    }
    assert exceptions_by_labels(samples) == {}


# --- start-up checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "named"),
    [
        ({"route": from_header("X-Route")}, "route"),
        ({"le": from_header("X-Le")}, "le"),
        ({"__x": from_header("X-X")}, "__x"),
        ({"1a": from_header("X-A")}, "1a"),
        ({"status": lambda view: "x"}, "status"),
    ],
)
def test_bad_label_names_fail_naming_the_label(labels: dict[str, Any], named: str) -> None:
    with (
        metrics_settings(labels=labels),
        pytest.raises(ConfigurationError, match=f"labels.*{named}"),
    ):
        Client().get("/items/1/")


def test_label_clashing_with_const_labels_fails_naming_it() -> None:
    with (
        metrics_settings(labels=TENANT, const_labels={"tenant": "fixed"}),
        pytest.raises(ConfigurationError, match="tenant"),
    ):
        Client().get("/items/1/")
