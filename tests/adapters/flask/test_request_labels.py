"""Issue 13 through real Flask (its test client, and its WSGI app called as a server calls
it): labels from the request (headers, response headers, callables, ``set_label``), the
per-route opt-out ``do_not_track``, ``exclude_methods``, ``enabled``, the in-flight gauge
by route, ``count_unmatched`` and the start-up checks, each read back from ``/metrics``
sample by sample."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
from flask import Flask, Response, request, stream_with_context
from flask.views import MethodView, View
from prometheus_client import CollectorRegistry

from asgi_metrics.exposition.collector import iter_registered
from tests.support.request_labels import by, failure_lines, label_names, total
from tests.support.scrape import Samples, in_flight, parse_samples, requests_by_labels
from tests.support.wsgi import InProcessServer, environ
from wsgi_metrics import (
    OTHER_VALUE,
    ConfigurationError,
    MetricsMiddleware,
    RequestView,
    do_not_track,
    from_header,
    from_response_header,
    set_label,
)
from wsgi_metrics.flask import Metrics

ITEM = "/items/<int:item_id>"


def make_app() -> Flask:
    app = Flask(__name__)

    @app.before_request
    def hook() -> None:
        # An auth hook that knows the tenant before the view runs.
        tenant = request.headers.get("X-Hook-Tenant")
        if tenant is not None:
            set_label("tenant", tenant)

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.post("/items/<int:item_id>")
    def create(item_id: int) -> tuple[str, int, dict[str, str]]:
        return "created", 201, {"X-Served-By": "node-1"}

    @app.get("/cache/<state>")
    def cache(state: str) -> tuple[str, int, dict[str, str]]:
        return "cached", 200, {"X-Cache": state}

    @app.get("/assign/<tenant>")
    def assign(tenant: str) -> str:
        set_label("tenant", tenant)
        return "assigned"

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    @app.post("/body")
    def body() -> bytes:
        return request.get_data()

    @app.get("/stream/before")
    def stream_before() -> Response:
        set_label("tenant", "streamer")

        def chunks() -> Iterator[bytes]:
            yield b"a"
            yield b"b"

        return Response(chunks())

    @app.get("/stream/during")
    def stream_during() -> Response:
        @stream_with_context
        def chunks() -> Iterator[bytes]:
            yield b"a"
            # Known only once part of the body went out (a cache fill, a late tenant).
            set_label("tenant", "late")
            yield b"b"

        return Response(chunks())

    return app


def with_metrics(**options: Any) -> Flask:
    app = make_app()
    Metrics(app, registry=CollectorRegistry(), **options)
    return app


def scrape(app: Flask) -> Samples:
    with app.test_client().get("/metrics") as response:
        assert response.status_code == 200
        return parse_samples(response.get_data(as_text=True))


def get(app: Flask, path: str, method: str = "GET", **kwargs: Any) -> int:
    with app.test_client().open(path, method=method, **kwargs) as response:
        response.get_data()
        return response.status_code


TENANT = {"tenant": from_header("X-Tenant")}


# --- labels from request headers --------------------------------------------------------


def test_header_label_allowed_values_other_and_default() -> None:
    app = with_metrics(
        labels={"plan": from_header("X-Plan", allowed=["free", "pro"], default="none")}
    )
    for plan in ["free", "free", "pro", "enterprise", "FREE"]:
        assert get(app, "/items/1", headers={"x-plan": plan}) == 200
    assert get(app, "/items/2") == 200
    samples = scrape(app)
    expected = {
        ("GET", ITEM, "200", "free"): 2,
        ("GET", ITEM, "200", "pro"): 1,
        ("GET", ITEM, "200", OTHER_VALUE): 2,  # not allowed (case matters)
        ("GET", ITEM, "200", "none"): 1,  # absent: the default
    }
    names = ("method", "route", "status", "plan")
    assert by(samples, "http_requests_total", *names) == expected
    assert by(samples, "http_request_duration_seconds_count", *names) == expected
    assert label_names(samples, "http_requests_in_flight") == {("method",)}


def test_header_label_without_allowed_keeps_max_label_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="asgi_metrics")
    app = with_metrics(labels=TENANT, max_label_values=4)
    sent = [
        "a", "b", "c",
        "/etc/passwd",  # a path: never a value, and does not take a place
        "x" * 129,  # too long: the same
        "y" * 128,  # the longest kept: the fourth value
        "d", "e",  # past max_label_values
        "a",  # kept before: still itself
    ]
    for tenant in sent:
        assert get(app, "/items/1", headers={"X-Tenant": tenant}) == 200
    assert get(app, "/items/1") == 200  # absent: the default, ""
    samples = scrape(app)
    assert by(samples, "http_requests_total", "tenant") == {
        ("a",): 2, ("b",): 1, ("c",): 1, ("y" * 128,): 1, (OTHER_VALUE,): 4, ("",): 1,
    }
    assert total(samples, "http_requests_total") == len(sent) + 1
    full = failure_lines(caplog.records, "max_label_values=4")
    assert len(full) == 1 and "'tenant'" in full[0]
    malformed = failure_lines(caplog.records, "longer than 128")
    assert len(malformed) == 1 and "'tenant'" in malformed[0]


def test_response_header_label() -> None:
    app = with_metrics(
        labels={"cache": from_response_header("X-Cache", allowed=["hit", "miss"],
                                              default="none")}
    )
    for state in ["hit", "hit", "miss", "stale"]:
        assert get(app, f"/cache/{state}") == 200
    assert get(app, "/items/1") == 200
    # A request header of that name is not the response's.
    assert get(app, "/items/1", headers={"X-Cache": "hit"}) == 200
    assert by(scrape(app), "http_requests_total", "route", "cache") == {
        ("/cache/<state>", "hit"): 2,
        ("/cache/<state>", "miss"): 1,
        ("/cache/<state>", OTHER_VALUE): 1,
        (ITEM, "none"): 2,
    }


def test_callable_label_gets_the_request_view() -> None:
    seen: list[dict[str, Any]] = []

    def client(view: RequestView) -> str:
        seen.append({
            "method": view.method,
            "route": view.route,
            "status": view.status,
            "client": view.request_headers.get("X-Client"),
            "client_lower": view.request_headers["x-client"],
            "served_by": view.response_headers.get("x-served-by"),
            "path": view.raw["PATH_INFO"],
        })
        return view.request_headers.get("X-Client", "unknown")

    app = with_metrics(labels={"client": client})
    assert get(app, "/items/7", "POST", headers={"X-Client": "cli"}) == 201
    assert get(app, "/nowhere", headers={"X-Client": "web"}) == 404
    assert seen == [
        {"method": "POST", "route": ITEM, "status": 201, "client": "cli",
         "client_lower": "cli", "served_by": "node-1", "path": "/items/7"},
        {"method": "GET", "route": "__unmatched__", "status": 404, "client": "web",
         "client_lower": "web", "served_by": None, "path": "/nowhere"},
    ]
    assert by(scrape(app), "http_requests_total", "method", "route", "status", "client") == {
        ("POST", ITEM, "201", "cli"): 1,
        ("GET", "__unmatched__", "404", "web"): 1,
    }


def test_callable_that_raises_records_the_default_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="asgi_metrics")

    def broken(view: RequestView) -> str:
        raise KeyError("no tenant here")

    app = with_metrics(labels={"tenant": broken, "plan": from_header("X-Plan")})
    for _ in range(3):
        assert get(app, "/items/1", headers={"X-Plan": "pro"}) == 200
    samples = scrape(app)
    # The failing label gets its default; the other label is still read.
    assert by(samples, "http_requests_total", "route", "tenant", "plan") == {
        (ITEM, "", "pro"): 3
    }
    lines = failure_lines(caplog.records, "reading the label 'tenant'")
    assert len(lines) == 1, lines


@pytest.mark.parametrize("naming", ["default", "otel"])
def test_labels_on_every_request_family(naming: str) -> None:
    app = with_metrics(
        naming=naming, labels=TENANT, request_size=True, response_size=True,
        time_to_first_byte=True,
    )
    assert get(app, "/items/1", headers={"X-Tenant": "acme"}) == 200
    assert get(app, "/body", "POST", data=b"12345", headers={"X-Tenant": "beta"}) == 200
    assert get(app, "/boom", headers={"X-Tenant": "acme"}) == 500
    samples = scrape(app)
    if naming == "default":
        method, route, status, error = "method", "route", "status", "exception_type"
        families = [
            "http_requests_total", "http_request_duration_seconds_count",
            "http_request_size_bytes_count", "http_response_size_bytes_count",
            "http_request_time_to_first_byte_seconds_count",
        ]
        exceptions, gauge = "http_request_exceptions_total", "http_requests_in_flight"
    else:
        method, route, status, error = (
            "http_request_method", "http_route", "http_response_status_code", "error_type"
        )
        families = [
            "http_server_request_duration_seconds_count",
            "http_server_request_body_size_bytes_count",
            "http_server_response_body_size_bytes_count",
            "http_server_time_to_first_byte_seconds_count",
        ]
        exceptions, gauge = "http_server_request_exceptions_total", "http_server_active_requests"
        assert not any(name == "http_requests_total" for name, _ in samples)
    expected = {
        ("GET", ITEM, "200", "acme"): 1,
        ("POST", "/body", "200", "beta"): 1,
        ("GET", "/boom", "500", "acme"): 1,
    }
    for family in families:
        assert label_names(samples, family) == {tuple(sorted((method, route, status, "tenant")))}
        assert by(samples, family, method, route, status, "tenant") == expected, family
    size = next(family for family in families if "request_size" in family
                or "request_body_size" in family)
    bucket = size.replace("_count", "_bucket")
    assert by(samples, bucket, route, "tenant", "le")[("/body", "beta", "+Inf")] == 1
    size_sum = size.replace("_count", "_sum")
    assert by(samples, size_sum, route, "tenant")[("/body", "beta")] == 5
    assert by(samples, exceptions, method, route, error, "tenant") == {
        ("GET", "/boom", "RuntimeError", "acme"): 1
    }
    assert label_names(samples, gauge) == {(method,)}  # the gauge has no request labels


# --- set_label --------------------------------------------------------------------------


def test_set_label_from_a_view_and_a_before_request_hook_wins_over_the_source() -> None:
    app = with_metrics(labels=TENANT)
    assert get(app, "/assign/acme") == 200
    assert get(app, "/assign/acme", headers={"X-Tenant": "from-header"}) == 200
    assert get(app, "/items/1", headers={"X-Hook-Tenant": "hooked"}) == 200
    assert get(app, "/items/1", headers={"X-Tenant": "header"}) == 200
    assert get(app, "/items/1") == 200
    assert by(scrape(app), "http_requests_total", "route", "tenant") == {
        ("/assign/<tenant>", "acme"): 2,
        (ITEM, "hooked"): 1,
        (ITEM, "header"): 1,
        (ITEM, ""): 1,
    }


def test_set_label_goes_through_the_bound() -> None:
    app = with_metrics(
        labels={"tenant": from_header("X-Tenant", allowed=["acme"], default="anon")}
    )
    assert get(app, "/assign/acme") == 200
    assert get(app, "/assign/evil") == 200  # set, but not allowed
    assert by(scrape(app), "http_requests_total", "tenant") == {
        ("acme",): 1, (OTHER_VALUE,): 1,
    }


def test_set_label_outside_a_request_or_undeclared_does_nothing() -> None:
    app = with_metrics(labels=TENANT)
    set_label("tenant", "outside")  # no request: nothing to set
    assert get(app, "/items/1") == 200
    app_without = with_metrics()
    assert get(app_without, "/assign/acme") == 200  # declared nowhere: ignored
    assert by(scrape(app), "http_requests_total", "tenant") == {("",): 1}
    assert label_names(scrape(app_without), "http_requests_total") == {
        ("method", "route", "status")
    }


def test_set_label_is_forgotten_after_a_closed_request() -> None:
    app = with_metrics(labels=TENANT)
    assert get(app, "/assign/acme") == 200
    assert get(app, "/items/1") == 200  # nothing set: the header's (absent) default
    assert get(app, "/items/1", headers={"X-Tenant": "hdr"}) == 200
    assert by(scrape(app), "http_requests_total", "route", "tenant") == {
        ("/assign/<tenant>", "acme"): 1, (ITEM, ""): 1, (ITEM, "hdr"): 1,
    }


def test_set_label_is_forgotten_after_unclosed_test_client_responses() -> None:
    # How tests are written: responses never closed (nothing resets the ContextVar).
    app = with_metrics(labels=TENANT)
    client = app.test_client()
    kept = [client.get("/assign/acme"), client.get("/items/1")]
    assert client.get("/items/2").status_code == 200
    assert client.get("/assign/beta").status_code == 200
    assert client.get("/items/3", headers={"X-Tenant": "hdr"}).status_code == 200
    set_label("tenant", "outside")  # after the requests: must not reach any of them
    assert by(scrape(app), "http_requests_total", "route", "tenant") == {
        ("/assign/<tenant>", "acme"): 1,
        ("/assign/<tenant>", "beta"): 1,
        (ITEM, ""): 2,
        (ITEM, "hdr"): 1,
    }
    assert all(response.status_code == 200 for response in kept)


def test_set_label_of_an_uncounted_request_does_not_reach_a_held_response() -> None:
    # The test client keeps the first response unclosed, so its request's assignments
    # stay current in this thread; a later request that is served but not counted (an
    # excluded method or path) and calls set_label must not relabel it.
    app = with_metrics(
        labels=TENANT, exclude_methods=["HEAD"], exclude_paths=["/assign/skipped"]
    )
    client = app.test_client()
    held = client.get("/items/1", headers={"X-Tenant": "hdr"})
    assert client.head("/assign/by-head").status_code == 200
    assert client.get("/assign/skipped").status_code == 200
    assert by(scrape(app), "http_requests_total", "route", "tenant") == {(ITEM, "hdr"): 1}
    held.close()


def test_held_test_client_responses_keep_their_own_assignments() -> None:
    # The test client reads a response when the test asks, interleaved with other
    # requests, and may never close it: a body's set_label reaches its own request, and
    # set_label in the test's own code (outside any request) reaches none.
    app = with_metrics(labels=TENANT)
    client = app.test_client()
    stream = client.get("/stream/during")  # the test client took its first chunk only
    later = client.get("/items/1")  # held too, never closed
    set_label("tenant", "outside")
    assert stream.get_data() == b"ab"  # set_label("tenant", "late") runs now
    assert by(scrape(app), "http_requests_total", "route", "tenant") == {
        ("/stream/during", "late"): 1, (ITEM, ""): 1,
    }
    assert later.status_code == 200


def test_set_label_in_a_streaming_response_before_and_during_the_body() -> None:
    app = with_metrics(labels=TENANT)
    assert get(app, "/stream/before") == 200
    assert get(app, "/stream/during") == 200
    assert get(app, "/items/1") == 200
    # Through the WSGI app as a server calls it, too: iterate, then close().
    server = InProcessServer()
    assert server.call(app.wsgi_app, environ("/stream/during")) == b"ab"
    samples = scrape(app)
    assert by(samples, "http_requests_total", "route", "tenant") == {
        ("/stream/before", "streamer"): 1,
        ("/stream/during", "late"): 2,
        (ITEM, ""): 1,
    }
    assert in_flight(samples) == 0


def test_set_label_from_a_thread_the_view_starts_with_the_context() -> None:
    import contextvars

    app = make_app()

    @app.get("/threaded")
    def threaded() -> str:
        context = contextvars.copy_context()
        worker = threading.Thread(target=context.run, args=(set_label, "tenant", "worker"))
        worker.start()
        worker.join()
        return "ok"

    Metrics(app, registry=CollectorRegistry(), labels=TENANT)
    assert get(app, "/threaded") == 200
    assert by(scrape(app), "http_requests_total", "route", "tenant") == {
        ("/threaded", "worker"): 1
    }


def test_set_label_from_an_async_view() -> None:
    # Flask runs an async view through asgiref's async_to_sync, in an event loop of its own.
    app = make_app()

    @app.get("/async/<tenant>")
    async def assign_async(tenant: str) -> str:
        await asyncio.sleep(0)
        set_label("tenant", f"async-{tenant}")
        return "ok"

    Metrics(app, registry=CollectorRegistry(), labels=TENANT)
    assert get(app, "/async/acme") == 200
    assert get(app, "/items/1") == 200
    assert by(scrape(app), "http_requests_total", "route", "tenant") == {
        ("/async/<tenant>", "async-acme"): 1, (ITEM, ""): 1,
    }


# --- do_not_track -----------------------------------------------------------------------


def tracked_and_untracked_app() -> Flask:
    app = make_app()

    @app.get("/private/inner")
    @do_not_track
    def inner() -> str:  # marked, then registered
        return "inner"

    @do_not_track
    @app.get("/private/outer")
    def outer() -> str:  # registered, then marked
        return "outer"

    @do_not_track
    class Untracked(MethodView):
        def get(self) -> str:
            return "method view"

        def post(self) -> str:
            return "posted"

    class Plain(View):
        def dispatch_request(self) -> str:
            return "view"

    class Decorated(MethodView):
        # as_view() wraps the view in these: the class is still found.
        decorators: ClassVar[list[Callable[..., Any]]] = [lambda view: view]

        def get(self) -> str:
            return "decorated"

    app.add_url_rule("/private/method-view", view_func=Untracked.as_view("untracked"))
    app.add_url_rule(
        "/private/as-view", view_func=do_not_track(Plain.as_view("plain_marked"))
    )
    app.add_url_rule("/plain", view_func=Plain.as_view("plain"))
    app.add_url_rule(
        "/private/decorated", view_func=do_not_track(Decorated).as_view("decorated")
    )
    return app


UNTRACKED = [
    ("/private/inner", "GET"), ("/private/outer", "GET"), ("/private/method-view", "GET"),
    ("/private/method-view", "POST"), ("/private/as-view", "GET"),
    ("/private/decorated", "GET"),
]


def test_do_not_track_views_are_served_and_never_recorded() -> None:
    app = tracked_and_untracked_app()
    Metrics(app, registry=CollectorRegistry(), labels=TENANT, response_size=True)
    for path, method in UNTRACKED:
        with app.test_client().open(path, method=method) as response:
            assert response.status_code == 200, path
            assert response.get_data()
    assert get(app, "/plain") == 200  # a View without the mark is still recorded
    samples = scrape(app)
    assert requests_by_labels(samples) == {("GET", "/plain", "200"): 1}
    assert not any(
        labels and dict(labels).get("route", "").startswith("/private")
        for _, labels in samples
    )
    assert in_flight(samples) == 0


def test_do_not_track_in_flight_goes_back_to_zero_with_unclosed_responses() -> None:
    app = tracked_and_untracked_app()
    Metrics(app, registry=CollectorRegistry())
    client = app.test_client()
    kept = [client.open(path, method=method) for path, method in UNTRACKED]
    samples = scrape(app)
    assert requests_by_labels(samples) == {}
    assert in_flight(samples) == 0
    for response in kept:
        response.close()
    assert in_flight(scrape(app)) == 0


def test_do_not_track_with_in_flight_by_route() -> None:
    app = tracked_and_untracked_app()
    Metrics(app, registry=CollectorRegistry(), in_flight_by_route=True)
    for path, method in UNTRACKED:
        assert get(app, path, method) == 200
    samples = scrape(app)
    assert requests_by_labels(samples) == {}
    assert in_flight(samples) == 0


def test_requests_never_recorded_take_no_label_value_and_call_no_source() -> None:
    # A do_not_track view or a dropped 404 is served and never recorded: its values must
    # not take the places of max_label_values, nor reach a callable source.
    routes: list[str] = []

    def seen(view: RequestView) -> str:
        routes.append(view.route)
        return "x"

    app = tracked_and_untracked_app()
    Metrics(app, registry=CollectorRegistry(), max_label_values=2, count_unmatched=False,
            labels={"tenant": from_header("X-Tenant"), "seen": seen})
    for tenant in ["probe-1", "probe-2"]:
        assert get(app, "/private/inner", headers={"X-Tenant": tenant}) == 200
    for tenant in ["scan-1", "scan-2"]:
        assert get(app, "/nowhere", headers={"X-Tenant": tenant}) == 404
    for tenant in ["acme", "beta", "gamma"]:
        assert get(app, "/plain", headers={"X-Tenant": tenant}) == 200
    assert by(scrape(app), "http_requests_total", "route", "tenant") == {
        ("/plain", "acme"): 1, ("/plain", "beta"): 1, ("/plain", OTHER_VALUE): 1,
    }
    assert routes == ["/plain"] * 3


# --- exclude_methods, enabled -----------------------------------------------------------


def test_exclude_methods_are_served_not_counted() -> None:
    app = with_metrics(exclude_methods=["OPTIONS", "HEAD"], labels=TENANT)
    assert get(app, "/items/1", "OPTIONS") == 200  # Flask's automatic OPTIONS
    assert get(app, "/items/1", "HEAD") == 200
    assert get(app, "/items/1") == 200
    samples = scrape(app)
    assert requests_by_labels(samples) == {("GET", ITEM, "200"): 1}
    assert {labels["method"] for labels in
            [dict(pairs) for name, pairs in samples
             if name.startswith("http_") and not name.startswith("http_metrics_")]} == {"GET"}
    assert in_flight(samples) == 0


def test_exclude_methods_in_lower_case_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"exclude_methods.*'options'"):
        with_metrics(exclude_methods=["options"])
    app = make_app()
    app.config["HTTP_METRICS"] = {"exclude_methods": ["OPTIONS", "head"]}
    with pytest.raises(ConfigurationError, match=r"exclude_methods.*'head'"):
        Metrics(app)


def responses(app: Flask) -> list[tuple[int, list[tuple[str, str]], bytes]]:
    answers = []
    for path, method in [("/items/1", "GET"), ("/boom", "GET"), ("/metrics", "GET"),
                         ("/stream/before", "GET"), ("/items/1", "POST"),
                         ("/nowhere", "GET")]:
        with app.test_client().open(path, method=method) as response:
            answers.append((response.status_code, list(response.headers), response.get_data()))
    return answers


def test_disabled_is_a_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    bare = make_app()
    expected = responses(bare)
    assert expected[2][0] == 404  # the app has no /metrics of its own

    registry = CollectorRegistry()
    app = make_app()
    Metrics(app, registry=registry, enabled=False, labels=TENANT)
    assert responses(app) == expected
    assert list(iter_registered(registry)) == []

    monkeypatch.setenv("HTTP_METRICS_ENABLED", "false")
    from_env, env_registry = make_app(), CollectorRegistry()
    env_app = MetricsMiddleware(from_env.wsgi_app, registry=env_registry)
    from_env.wsgi_app = env_app  # type: ignore[method-assign]
    assert responses(from_env) == expected
    assert list(iter_registered(env_registry)) == []
    # The variable holds for the extension and its app.config too.
    configured, config_registry = make_app(), CollectorRegistry()
    configured.config["HTTP_METRICS"] = {"registry": config_registry}
    Metrics(configured)
    assert responses(configured) == expected
    assert list(iter_registered(config_registry)) == []


# --- in flight by route -----------------------------------------------------------------


def stuck_app(**options: Any) -> tuple[Flask, threading.Event, threading.Event]:
    app = make_app()
    entered, release = threading.Event(), threading.Event()

    @app.get("/stuck/<int:n>")
    def stuck(n: int) -> str:
        entered.set()
        assert release.wait(10)
        return "released"

    Metrics(app, registry=CollectorRegistry(), **options)
    return app, entered, release


def test_in_flight_by_route_shows_a_stuck_request_under_its_route() -> None:
    app, entered, release = stuck_app(in_flight_by_route=True)
    server = InProcessServer()
    bodies: list[bytes] = []
    worker = threading.Thread(
        target=lambda: bodies.append(server.call(app.wsgi_app, environ("/stuck/1")))
    )
    worker.start()
    try:
        assert entered.wait(10)
        # Scraped from this thread while the request is stuck inside the view.
        samples = scrape(app)
        assert by(samples, "http_requests_in_flight", "method", "route") == {
            ("GET", "/stuck/<int:n>"): 1
        }
        assert requests_by_labels(samples) == {}
    finally:
        release.set()
        worker.join(10)
    assert bodies == [b"released"]
    samples = scrape(app)
    assert in_flight(samples) == 0
    assert requests_by_labels(samples) == {("GET", "/stuck/<int:n>", "200"): 1}


def test_in_flight_by_route_otel_names_and_a_real_threaded_server() -> None:
    from werkzeug.serving import make_server

    from tests.support.servers import http_get

    app, entered, release = stuck_app(in_flight_by_route=True, naming="otel")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    serving = threading.Thread(target=server.serve_forever)
    serving.start()
    url = f"http://127.0.0.1:{server.port}"
    answers: list[tuple[int, str]] = []
    client = threading.Thread(target=lambda: answers.append(http_get(f"{url}/stuck/2")))
    try:
        client.start()
        assert entered.wait(10)
        status, text = http_get(f"{url}/metrics")
        assert status == 200
        assert by(parse_samples(text), "http_server_active_requests",
                  "http_request_method", "http_route") == {("GET", "/stuck/<int:n>"): 1}
        release.set()
        client.join(10)
        assert answers == [(200, "released")]
        deadline = time.monotonic() + 5
        while True:  # the server closes the body a moment after the client read it
            samples = parse_samples(http_get(f"{url}/metrics")[1])
            if total(samples, "http_server_active_requests") == 0:
                break
            assert time.monotonic() < deadline, samples
            time.sleep(0.02)
    finally:
        release.set()
        server.shutdown()
        serving.join(10)
        server.server_close()


def test_in_flight_by_method_by_default_while_stuck() -> None:
    app, entered, release = stuck_app()
    worker = threading.Thread(
        target=lambda: InProcessServer().call(app.wsgi_app, environ("/stuck/1"))
    )
    worker.start()
    try:
        assert entered.wait(10)
        samples = scrape(app)
        assert by(samples, "http_requests_in_flight", "method") == {("GET",): 1}
    finally:
        release.set()
        worker.join(10)
    assert in_flight(scrape(app)) == 0


# --- count_unmatched --------------------------------------------------------------------


def test_count_unmatched_false_drops_404s() -> None:
    app = with_metrics(count_unmatched=False)
    assert get(app, "/nowhere") == 404
    assert get(app, "/items/1", "DELETE") == 405  # Werkzeug does not say which rule
    assert get(app, "/items/1") == 200
    samples = scrape(app)
    assert requests_by_labels(samples) == {("GET", ITEM, "200"): 1}
    assert in_flight(samples) == 0


def test_unmatched_counted_by_default() -> None:
    app = with_metrics()
    assert get(app, "/nowhere") == 404
    assert requests_by_labels(scrape(app)) == {("GET", "__unmatched__", "404"): 1}


# --- start-up checks --------------------------------------------------------------------


BAD_LABELS = [
    ({"route": from_header("X-Route")}, "route"),
    ({"le": from_header("X-Le")}, "le"),
    ({"__x": from_header("X-X")}, "__x"),
    ({"1a": from_header("X-A")}, "1a"),
    ({"ok": from_header("not a header")}, "ok"),
    ({"tenant": "X-Tenant"}, "tenant"),  # a string is not a source
    ({"tenant": from_header("X-Tenant", allowed=["/a"])}, "tenant"),
]


@pytest.mark.parametrize(("labels", "named"), BAD_LABELS)
def test_bad_label_names_fail_at_start_naming_the_label(
    labels: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigurationError, match=f"labels.*{named}"):
        with_metrics(labels=labels)
    app = make_app()
    app.config["HTTP_METRICS"] = {"labels": labels, "registry": CollectorRegistry()}
    with pytest.raises(ConfigurationError, match=f"labels.*{named}"):
        Metrics(app)
    with pytest.raises(ConfigurationError, match=f"labels.*{named}"):
        MetricsMiddleware(make_app().wsgi_app, labels=labels, registry=CollectorRegistry())


def test_label_clashing_with_const_labels_fails_naming_it() -> None:
    with pytest.raises(ConfigurationError, match="tenant"):
        with_metrics(labels=TENANT, const_labels={"tenant": "fixed"})
    app = make_app()
    app.config["HTTP_METRICS"] = {
        "labels": TENANT, "const_labels": {"tenant": "x"}, "registry": CollectorRegistry(),
    }
    with pytest.raises(ConfigurationError, match="tenant"):
        Metrics(app)


def test_labels_through_app_config() -> None:
    app = make_app()
    registry = CollectorRegistry()
    app.config["HTTP_METRICS"] = {"labels": TENANT, "registry": registry,
                                  "max_label_values": 1}
    Metrics(app)
    for tenant in ["a", "b", "a"]:
        assert get(app, "/items/1", headers={"X-Tenant": tenant}) == 200
    assert by(scrape(app), "http_requests_total", "tenant") == {("a",): 2, (OTHER_VALUE,): 1}
