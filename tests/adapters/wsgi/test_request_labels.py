"""Issue 13 through the pure WSGI middleware, called as PEP 3333 servers call it (and
through wsgiref's validator and Werkzeug's test client): labels from request and response
headers and callables, ``set_label`` in the app, its body and its threads, late
exceptions keeping their labels, ``exclude_methods``, ``enabled`` and the environment,
the in-flight gauge by route through a ``route_resolver`` asked at scrape time, and
``count_unmatched``."""

from __future__ import annotations

import contextvars
import io
import logging
import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.util import FileWrapper
from wsgiref.validate import validator

import pytest
from prometheus_client import CollectorRegistry
from werkzeug.test import Client

from asgi_metrics.exposition.collector import iter_registered
from tests.support.request_labels import by, failure_lines, label_names
from tests.support.scrape import (
    exceptions_by_labels,
    in_flight,
    parse_samples,
    requests_by_labels,
)
from tests.support.wsgi import InProcessServer, environ, get, scrape_samples
from wsgi_metrics import (
    OTHER_VALUE,
    ConfigurationError,
    MetricsMiddleware,
    RequestView,
    from_header,
    from_response_header,
    set_label,
)
from wsgi_metrics.middleware import Environ, StartResponse

TENANT = {"tenant": from_header("X-Tenant")}


def app(env: Environ, start_response: StartResponse) -> Iterator[bytes]:
    """Sets the tenant from the query string, answers X-Cache from the path."""
    query = env.get("QUERY_STRING", "")
    if query.startswith("tenant="):
        set_label("tenant", query[len("tenant="):])
    headers = [("Content-Type", "text/plain")]
    if env["PATH_INFO"].startswith("/cache/"):
        headers.append(("x-CACHE", env["PATH_INFO"][len("/cache/"):]))
    start_response("200 OK", headers)
    yield b"ok"


def resolver(env: Environ) -> str | None:
    path = env.get("PATH_INFO", "")
    if path.startswith("/cache/"):
        return "/cache/{state}"
    if path.startswith("/items/"):
        return "/items/{id}"
    return None


def wrap(wsgi_app: Any = app, **options: Any) -> MetricsMiddleware:
    options.setdefault("registry", CollectorRegistry())
    options.setdefault("route_resolver", resolver)
    return MetricsMiddleware(wsgi_app, **options)


def test_request_header_labels_including_content_type() -> None:
    mw = wrap(labels={
        "tenant": from_header("X-Tenant", default="anon"),
        "kind": from_header("Content-Type", allowed=["application/json"], default="none"),
    })
    get(mw, "/items/1", HTTP_X_TENANT="acme", CONTENT_TYPE="application/json")
    get(mw, "/items/1", HTTP_X_TENANT="acme", CONTENT_TYPE="text/xml")
    get(mw, "/items/1")
    assert by(scrape_samples(mw), "http_requests_total", "tenant", "kind") == {
        ("acme", "application/json"): 1, ("acme", OTHER_VALUE): 1, ("anon", "none"): 1,
    }


def test_response_header_label_any_case_and_through_the_file_wrapper() -> None:
    def file_app(env: Environ, start_response: StartResponse) -> Any:
        start_response("200 OK", [("X-Cache", "hit"), ("Content-Length", "4")])
        return env["wsgi.file_wrapper"](io.BytesIO(b"data"))

    labels = {"cache": from_response_header("X-Cache", allowed=["hit", "miss"])}
    mw = wrap(labels=labels, response_size=True)
    for path in ["/cache/hit", "/cache/miss", "/cache/purged", "/items/1"]:
        assert get(mw, path)[0] == "200 OK"
    files = wrap(file_app, labels=labels, response_size=True)
    result = files(environ("/items/2", **{"wsgi.file_wrapper": FileWrapper}),
                   InProcessServer().start_response)
    assert isinstance(result, FileWrapper)
    result.close()
    assert by(scrape_samples(mw), "http_response_size_bytes_count", "route", "cache") == {
        ("/cache/{state}", "hit"): 1, ("/cache/{state}", "miss"): 1,
        ("/cache/{state}", OTHER_VALUE): 1, ("/items/{id}", ""): 1,
    }
    assert by(scrape_samples(files), "http_response_size_bytes_sum", "route", "cache") == {
        ("/items/{id}", "hit"): 4
    }


def test_callable_label_sees_the_environ_and_both_header_sets() -> None:
    seen: list[RequestView] = []

    def source(view: RequestView) -> str:
        seen.append(view)
        return "tls" if view.raw.get("wsgi.url_scheme") == "https" else "plain"

    mw = wrap(labels={"transport": source})
    get(mw, "/cache/hit", HTTP_X_TENANT="acme", CONTENT_LENGTH="0",
        **{"wsgi.url_scheme": "https"})
    get(mw, "/nowhere", "DELETE")
    first, second = seen
    assert (first.method, first.route, first.status) == ("GET", "/cache/{state}", 200)
    assert first.request_headers["X-TENANT"] == "acme"
    assert first.request_headers["content-length"] == "0"
    assert dict(first.response_headers) == {"content-type": "text/plain", "x-cache": "hit"}
    assert (second.method, second.route, second.status) == ("DELETE", "__unmatched__", 200)
    assert "x-tenant" not in second.request_headers
    assert by(scrape_samples(mw), "http_requests_total", "method", "transport") == {
        ("GET", "tls"): 1, ("DELETE", "plain"): 1,
    }


def test_callable_returning_other_types() -> None:
    answers: list[Any] = [7, None, b"bytes", True, ["list"]]
    mw = wrap(labels={"n": lambda view: answers.pop(0)})
    for _ in range(5):
        get(mw, "/items/1")
    # Numbers read naturally, None is the default, anything else is not a label value.
    assert by(scrape_samples(mw), "http_requests_total", "n") == {
        ("7",): 1, ("",): 1, (OTHER_VALUE,): 2, ("True",): 1,
    }


def test_raising_source_records_the_default_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="asgi_metrics")

    def broken(view: RequestView) -> str:
        raise ValueError(view.route)

    mw = wrap(labels={"tenant": broken})
    for _ in range(4):
        assert get(mw, "/items/1") == ("200 OK", b"ok")
    assert by(scrape_samples(mw), "http_requests_total", "route", "tenant") == {
        ("/items/{id}", ""): 4
    }
    assert len(failure_lines(caplog.records, "reading the label 'tenant'")) == 1


def test_set_label_in_the_app_its_body_and_its_threads() -> None:
    def threaded(env: Environ, start_response: StartResponse) -> Iterator[bytes]:
        context = contextvars.copy_context()
        worker = threading.Thread(target=context.run, args=(set_label, "tenant", "thread"))
        worker.start()
        worker.join()
        start_response("200 OK", [])
        yield b"done"

    def late(env: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"first"
        set_label("tenant", "during-body")
        yield b"second"

    mw = wrap(app, labels=TENANT)
    get(mw, "/items/1", QUERY_STRING="tenant=acme", HTTP_X_TENANT="header")
    get(mw, "/items/1")  # forgotten: the header's default
    assert by(scrape_samples(mw), "http_requests_total", "tenant") == {
        ("acme",): 1, ("",): 1,
    }
    for wsgi_app, expected in [(threaded, "thread"), (late, "during-body")]:
        other = wrap(wsgi_app, labels=TENANT)
        get(other, "/items/1")
        assert by(scrape_samples(other), "http_requests_total", "tenant") == {
            (expected,): 1
        }


def test_exceptions_keep_their_labels_also_when_raised_after_recording() -> None:
    class ClosingFails:
        def __iter__(self) -> Iterator[bytes]:
            yield b"body"

        def close(self) -> None:
            raise OSError("close failed")

    def failing_body(env: Environ, start_response: StartResponse) -> Iterator[bytes]:
        set_label("tenant", "acme")
        start_response("200 OK", [])
        yield b"partial"
        raise RuntimeError("mid-body")

    def failing_close(env: Environ, start_response: StartResponse) -> ClosingFails:
        set_label("tenant", "beta")
        start_response("200 OK", [])
        return ClosingFails()

    mw = wrap(failing_body, labels=TENANT)
    with pytest.raises(RuntimeError):
        get(mw, "/items/1")
    samples = scrape_samples(mw)
    assert by(samples, "http_request_exceptions_total", "exception_type", "tenant") == {
        ("RuntimeError", "acme"): 1
    }
    # The test client holds the response; the scrape records it; close() raises later:
    # the late exception is counted with the labels the request was recorded with.
    held_mw = wrap(failing_close, labels=TENANT)
    client = Client(held_mw)
    response = client.get("/items/2")
    assert by(parse_samples(client.get("/metrics").get_data(as_text=True)),
              "http_requests_total", "tenant") == {("beta",): 1}
    with pytest.raises(OSError, match="close failed"):
        response.close()
    samples = parse_samples(client.get("/metrics").get_data(as_text=True))
    assert by(samples, "http_request_exceptions_total", "exception_type", "tenant") == {
        ("OSError", "beta"): 1
    }
    assert by(samples, "http_requests_total", "tenant") == {("beta",): 1}


def test_labels_pass_the_wsgi_validator() -> None:
    mw = wrap(labels=TENANT, response_size=True, time_to_first_byte=True)
    checked = validator(mw)
    for tenant in ["acme", "beta"]:
        server = InProcessServer()
        assert server.call(checked, environ("/items/1", HTTP_X_TENANT=tenant)) == b"ok"
    assert by(scrape_samples(mw), "http_request_time_to_first_byte_seconds_count",
              "tenant") == {("acme",): 1, ("beta",): 1}


def test_werkzeug_client_unclosed_responses_forget_set_label() -> None:
    mw = wrap(labels=TENANT)
    client = Client(mw)
    kept = [client.get("/items/1?tenant=acme"), client.get("/items/2")]
    client.get("/items/3", headers={"X-Tenant": "hdr"})
    samples = parse_samples(client.get("/metrics").get_data(as_text=True))
    assert by(samples, "http_requests_total", "tenant") == {
        ("acme",): 1, ("",): 1, ("hdr",): 1,
    }
    for response in kept:
        response.close()


# --- exclude_methods, enabled, the environment ---------------------------------------------


def test_exclude_methods() -> None:
    mw = wrap(exclude_methods=["OPTIONS", "HEAD"], labels=TENANT)
    for method in ["OPTIONS", "HEAD", "GET", "BREW"]:
        assert get(mw, "/items/1", method)[0] == "200 OK"
    samples = scrape_samples(mw)
    assert requests_by_labels(samples) == {
        ("GET", "/items/{id}", "200"): 1, ("_OTHER", "/items/{id}", "200"): 1,
    }
    assert in_flight(samples) == 0


def test_exclude_methods_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_METRICS_EXCLUDE_METHODS", "OPTIONS, HEAD")
    mw = wrap()
    get(mw, "/items/1", "HEAD")
    get(mw, "/items/1", "OPTIONS")
    get(mw, "/items/1")
    assert requests_by_labels(scrape_samples(mw)) == {("GET", "/items/{id}", "200"): 1}
    monkeypatch.setenv("HTTP_METRICS_EXCLUDE_METHODS", "options")
    with pytest.raises(ConfigurationError, match=r"HTTP_METRICS_EXCLUDE_METHODS.*'options'"):
        wrap()


def test_disabled_is_the_app_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    def answers(wsgi_app: Any) -> list[tuple[str | None, list[tuple[str, str]], bytes]]:
        out = []
        for path in ["/items/1", "/metrics", "/cache/hit"]:
            server = InProcessServer()
            body = server.call(wsgi_app, environ(path, HTTP_X_TENANT="acme"))
            out.append((server.status, server.headers, body))
        return out

    expected = answers(app)
    assert expected[1][2] == b"ok"  # /metrics is the app's own path now
    registry = CollectorRegistry()
    assert answers(wrap(app, registry=registry, enabled=False, labels=TENANT)) == expected
    monkeypatch.setenv("HTTP_METRICS_ENABLED", "false")
    assert answers(wrap(app, registry=registry, labels=TENANT)) == expected
    assert list(iter_registered(registry)) == []
    # An explicit keyword wins over the variable.
    on = wrap(app, enabled=True)
    get(on, "/items/1")
    assert requests_by_labels(scrape_samples(on)) == {("GET", "/items/{id}", "200"): 1}


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_METRICS_MAX_LABEL_VALUES", "1")
    monkeypatch.setenv("HTTP_METRICS_COUNT_UNMATCHED", "false")
    monkeypatch.setenv("HTTP_METRICS_IN_FLIGHT_BY_ROUTE", "true")
    mw = wrap(labels=TENANT)
    for tenant in ["a", "b", "a"]:
        get(mw, "/items/1", HTTP_X_TENANT=tenant)
    get(mw, "/nowhere", HTTP_X_TENANT="a")
    samples = scrape_samples(mw)
    assert by(samples, "http_requests_total", "route", "tenant") == {
        ("/items/{id}", "a"): 2, ("/items/{id}", OTHER_VALUE): 1,
    }
    # By route: nothing in flight is no sample at all (by method it is a 0 per method).
    assert label_names(samples, "http_requests_in_flight") == set()
    monkeypatch.setenv("HTTP_METRICS_MAX_LABEL_VALUES", "0")
    with pytest.raises(ConfigurationError, match="HTTP_METRICS_MAX_LABEL_VALUES"):
        wrap()


# --- in flight by route, count_unmatched ----------------------------------------------------


def test_in_flight_by_route_asks_the_resolver_while_the_request_is_stuck() -> None:
    entered, release = threading.Event(), threading.Event()
    routed = threading.Event()

    def stuck(env: Environ, start_response: StartResponse) -> list[bytes]:
        entered.set()
        assert routed.wait(10)
        env["test.route"] = "/stuck/{n}"  # the "router" decided, the app still runs
        entered.clear()
        entered.set()
        assert release.wait(10)
        start_response("200 OK", [])
        return [b"released"]

    def late_resolver(env: Environ) -> str | None:
        route = env.get("test.route")
        return route if isinstance(route, str) else None

    mw = wrap(stuck, route_resolver=late_resolver, in_flight_by_route=True)
    worker = threading.Thread(target=lambda: get(mw, "/stuck/1"))
    worker.start()
    try:
        assert entered.wait(10)
        # Not routed yet: under __unmatched__.
        assert by(scrape_samples(mw), "http_requests_in_flight", "method", "route") == {
            ("GET", "__unmatched__"): 1
        }
        entered.clear()
        routed.set()
        assert entered.wait(10)
        assert by(scrape_samples(mw), "http_requests_in_flight", "method", "route") == {
            ("GET", "/stuck/{n}"): 1
        }
    finally:
        routed.set()
        release.set()
        worker.join(10)
    samples = scrape_samples(mw)
    assert in_flight(samples) == 0
    assert requests_by_labels(samples) == {("GET", "/stuck/{n}", "200"): 1}


def test_count_unmatched() -> None:
    dropped = wrap(count_unmatched=False, labels=TENANT)
    kept = wrap(labels=TENANT)
    for mw in (dropped, kept):
        get(mw, "/nowhere", HTTP_X_TENANT="acme")
        get(mw, "/items/1", HTTP_X_TENANT="acme")
    assert requests_by_labels(scrape_samples(dropped)) == {("GET", "/items/{id}", "200"): 1}
    assert by(scrape_samples(kept), "http_requests_total", "route", "tenant") == {
        ("/items/{id}", "acme"): 1, ("__unmatched__", "acme"): 1,
    }
    assert in_flight(scrape_samples(dropped)) == 0


def test_count_unmatched_false_still_counts_exceptions_of_matched_routes_only() -> None:
    def boom(env: Environ, start_response: StartResponse) -> list[bytes]:
        raise RuntimeError("boom")

    mw = wrap(boom, count_unmatched=False)
    for path in ["/nowhere", "/items/1"]:
        with pytest.raises(RuntimeError):  # the server answers its own 500
            get(mw, path)
    samples = scrape_samples(mw)
    assert exceptions_by_labels(samples) == {("GET", "/items/{id}", "RuntimeError"): 1}
    assert in_flight(samples) == 0
