"""The pure WSGI middleware, called the way PEP 3333 servers call it."""

from __future__ import annotations

import gc
import gzip
import io
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any
from wsgiref.util import FileWrapper
from wsgiref.validate import validator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from asgi_metrics.core.labels import KNOWN_METHODS
from tests.support.scrape import (
    duration_sum,
    exceptions_by_labels,
    in_flight,
    parse_samples,
    requests_by_labels,
)
from tests.support.wsgi import InProcessServer, environ, get, scrape_samples
from wsgi_metrics import EXCEPTION_KEY, ConfigurationError, MetricsMiddleware
from wsgi_metrics.middleware import Environ, StartResponse


def hello(env: Environ, start_response: StartResponse) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def wrap(app: Any, **options: Any) -> MetricsMiddleware:
    options.setdefault("registry", CollectorRegistry())
    return MetricsMiddleware(app, **options)


def test_counts_by_method_route_status() -> None:
    mw = wrap(hello, route_resolver=lambda env: "/hello")
    for _ in range(3):
        assert get(mw, "/hello/1") == ("200 OK", b"hello")
    get(mw, "/hello/2", "POST")
    samples = scrape_samples(mw)
    assert requests_by_labels(samples) == {
        ("GET", "/hello", "200"): 3, ("POST", "/hello", "200"): 1
    }
    assert in_flight(samples) == 0


def test_without_resolver_every_route_is_unmatched() -> None:
    mw = wrap(hello)
    get(mw, "/a")
    get(mw, "/b")
    assert requests_by_labels(scrape_samples(mw)) == {("GET", "__unmatched__", "200"): 2}


def test_recorded_when_the_server_closes_the_iterable_not_before() -> None:
    mw = wrap(hello)
    result = mw(environ("/"), InProcessServer().start_response)
    assert list(result) == [b"hello"]
    # Iterated but not closed yet: still in flight, not counted.
    assert in_flight(scrape_samples(mw)) == 1
    assert requests_by_labels(scrape_samples(mw)) == {}
    result.close()  # type: ignore[attr-defined]
    samples = scrape_samples(mw)
    assert in_flight(samples) == 0
    assert requests_by_labels(samples) == {("GET", "__unmatched__", "200"): 1}


def test_streaming_generator_timed_to_close() -> None:
    def slow(env: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [])
        for _ in range(3):
            time.sleep(0.03)
            yield b"x"

    mw = wrap(slow)
    assert get(mw, "/")[1] == b"xxx"
    assert duration_sum(scrape_samples(mw), "GET", "__unmatched__", "200") >= 0.09


def test_response_passes_through_unchanged() -> None:
    chunk = b"payload"

    class Body:
        closed = False

        def __iter__(self) -> Iterator[bytes]:
            yield chunk

        def close(self) -> None:
            Body.closed = True

    headers = [("Content-Type", "text/plain"), ("X-Custom", "1")]

    def app(env: Environ, start_response: StartResponse) -> Body:
        start_response("201 Created", headers)
        return Body()

    mw = wrap(app)
    server = InProcessServer()
    result = mw(environ("/"), server.start_response)
    got = list(result)
    assert got[0] is chunk
    assert server.status == "201 Created" and server.headers is headers
    result.close()  # type: ignore[attr-defined]
    assert Body.closed


def test_len_of_the_app_iterable_stays_visible() -> None:
    mw = wrap(hello)
    result = mw(environ("/"), InProcessServer().start_response)
    assert len(result) == 1  # type: ignore[arg-type]  # wsgiref sets Content-Length from it
    result.close()  # type: ignore[attr-defined]

    def gen_app(env: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"x"

    result = wrap(gen_app)(environ("/"), InProcessServer().start_response)
    assert not hasattr(result, "__len__")
    result.close()  # type: ignore[attr-defined]


def test_generator_raising_mid_stream() -> None:
    error = ValueError("mid-stream")
    closed = []

    def app(env: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [])
        try:
            yield b"first"
            raise error
        finally:
            closed.append(True)

    mw = wrap(app)
    with pytest.raises(ValueError) as info:
        get(mw, "/")
    assert info.value is error
    samples = scrape_samples(mw)
    assert requests_by_labels(samples) == {("GET", "__unmatched__", "200"): 1}
    assert exceptions_by_labels(samples) == {("GET", "__unmatched__", "ValueError"): 1}
    assert in_flight(samples) == 0
    assert closed


def test_app_raising_before_start_response() -> None:
    error = KeyError("early")

    def app(env: Environ, start_response: StartResponse) -> list[bytes]:
        raise error

    mw = wrap(app)
    with pytest.raises(KeyError) as info:
        get(mw, "/")
    assert info.value is error
    samples = scrape_samples(mw)
    assert requests_by_labels(samples) == {("GET", "__unmatched__", "500"): 1}
    assert exceptions_by_labels(samples) == {("GET", "__unmatched__", "KeyError"): 1}
    assert in_flight(samples) == 0


def test_start_response_with_exc_info_before_the_body() -> None:
    def app(env: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [])
        try:
            raise RuntimeError("handled by the app")
        except RuntimeError:
            start_response("500 Internal Server Error", [], sys.exc_info())
        return [b"error page"]

    mw = wrap(app)
    assert get(mw, "/") == ("500 Internal Server Error", b"error page")
    samples = scrape_samples(mw)
    assert requests_by_labels(samples) == {("GET", "__unmatched__", "500"): 1}
    assert exceptions_by_labels(samples) == {("GET", "__unmatched__", "RuntimeError"): 1}
    assert in_flight(samples) == 0


def test_start_response_with_exc_info_after_the_body_started() -> None:
    error = RuntimeError("too late")

    def app(env: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"partial"
        try:
            raise error
        except RuntimeError:
            # The headers are out: the server re-raises, and so must we, unchanged.
            start_response("500 Internal Server Error", [], sys.exc_info())
        yield b"never"

    mw = wrap(app)
    with pytest.raises(RuntimeError) as info:
        get(mw, "/")
    assert info.value is error
    samples = scrape_samples(mw)
    assert requests_by_labels(samples) == {("GET", "__unmatched__", "200"): 1}  # what was sent
    assert exceptions_by_labels(samples) == {("GET", "__unmatched__", "RuntimeError"): 1}
    assert in_flight(samples) == 0


def test_exception_reported_in_environ_is_counted() -> None:
    def app(env: Environ, start_response: StartResponse) -> list[bytes]:
        env[EXCEPTION_KEY] = ZeroDivisionError("caught by the framework")
        start_response("500 Internal Server Error", [])
        return [b""]

    mw = wrap(app)
    get(mw, "/")
    assert exceptions_by_labels(scrape_samples(mw)) == {
        ("GET", "__unmatched__", "ZeroDivisionError"): 1
    }


def test_closed_before_iteration_without_status_is_client_closed() -> None:
    def lazy(env: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [])  # only runs once iterated
        yield b"x"

    mw = wrap(lazy)
    result = mw(environ("/"), InProcessServer().start_response)
    result.close()  # type: ignore[attr-defined]  # the client went away first
    samples = scrape_samples(mw)
    assert requests_by_labels(samples) == {("GET", "__unmatched__", "499"): 1}
    assert in_flight(samples) == 0


def test_never_closed_iterable_is_recorded_when_collected() -> None:
    def slow_close(env: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"x"

    mw = wrap(slow_close)
    result = mw(environ("/"), InProcessServer().start_response)
    assert list(result) == [b"x"]
    time.sleep(0.05)
    assert in_flight(scrape_samples(mw)) == 1
    del result
    gc.collect()
    samples = scrape_samples(mw)
    assert requests_by_labels(samples) == {("GET", "__unmatched__", "200"): 1}
    assert in_flight(samples) == 0
    # Timed to the end of the iteration, not to the collection.
    assert duration_sum(samples, "GET", "__unmatched__", "200") < 0.05


def test_server_file_wrapper_is_passed_through_and_recorded_at_close(tmp_path: Any) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"0123456789")

    def app(env: Environ, start_response: StartResponse) -> Any:
        start_response("200 OK", [("Content-Length", "10")])
        return env["wsgi.file_wrapper"](open(path, "rb"), 4)

    mw = wrap(app, response_size=True)
    result = mw(
        environ("/", **{"wsgi.file_wrapper": FileWrapper}), InProcessServer().start_response
    )
    assert type(result) is FileWrapper  # the server still recognises it (sendfile)
    assert b"".join(result) == b"0123456789"
    assert in_flight(scrape_samples(mw)) == 1
    result.close()
    assert result.filelike.closed
    samples = scrape_samples(mw)
    assert requests_by_labels(samples) == {("GET", "__unmatched__", "200"): 1}
    assert in_flight(samples) == 0
    size = frozenset({"method": "GET", "route": "__unmatched__", "status": "200"}.items())
    assert samples[("http_response_size_bytes_sum", size)] == 10


def test_file_wrapper_without_settable_close_is_observed_like_any_iterable() -> None:
    class SlotWrapper:
        __slots__ = ("filelike",)

        def __init__(self, filelike: Any, blksize: int = 8192) -> None:
            self.filelike = filelike

        def __iter__(self) -> Iterator[bytes]:
            yield self.filelike.read()

        def close(self) -> None:
            self.filelike.close()

    def app(env: Environ, start_response: StartResponse) -> Any:
        start_response("200 OK", [])
        return env["wsgi.file_wrapper"](io.BytesIO(b"data"))

    mw = wrap(app)
    assert get(mw, "/", **{"wsgi.file_wrapper": SlotWrapper})[1] == b"data"
    assert requests_by_labels(scrape_samples(mw)) == {("GET", "__unmatched__", "200"): 1}


def test_passes_the_pep3333_validator() -> None:
    def app(env: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"ok"

    mw = validator(wrap(validator(app)))
    assert get(mw, "/x") == ("200 OK", b"ok")
    assert get(mw, "/metrics")[0] == "200 OK"


def test_route_resolver_called_while_the_request_is_served() -> None:
    seen = []

    def app(env: Environ, start_response: StartResponse) -> list[bytes]:
        env["framework.route"] = "/items/{id}"
        start_response("200 OK", [])
        env.pop("framework.route")  # gone once the framework is done
        return [b""]

    def resolver(env: Environ) -> str | None:
        seen.append(env.get("framework.route"))
        return env.get("framework.route")

    mw = wrap(app, route_resolver=resolver)
    get(mw, "/items/1")
    assert seen == ["/items/{id}"]
    assert requests_by_labels(scrape_samples(mw)) == {("GET", "/items/{id}", "200"): 1}


def test_failing_route_resolver_never_breaks_a_request(caplog: Any) -> None:
    def resolver(env: Environ) -> str:
        raise RuntimeError("resolver bug")

    mw = wrap(hello, route_resolver=resolver)
    with caplog.at_level(logging.ERROR, logger="asgi_metrics"):
        assert get(mw, "/") == ("200 OK", b"hello")
        assert get(mw, "/") == ("200 OK", b"hello")
    assert requests_by_labels(scrape_samples(mw)) == {("GET", "__unmatched__", "200"): 2}
    assert len([r for r in caplog.records if r.name == "asgi_metrics"]) == 1


def test_non_string_route_is_unmatched() -> None:
    mw = wrap(hello, route_resolver=lambda env: 42)  # type: ignore[arg-type,return-value]
    get(mw, "/")
    assert requests_by_labels(scrape_samples(mw)) == {("GET", "__unmatched__", "200"): 1}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.text(st.characters(min_codepoint=33, max_codepoint=255), min_size=1, max_size=12),
    path=st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=30),
)
def test_hostile_methods_and_paths_add_no_series(method: str, path: str) -> None:
    # WSGI environ strings are latin-1 decoded bytes: any byte can appear.
    mw = wrap(hello)
    bare = InProcessServer()
    expected = bare.call(hello, environ("/" + path, method))
    assert get(mw, "/" + path, method) == (bare.status, expected)
    for (m, route, status) in requests_by_labels(scrape_samples(mw)):
        assert m in KNOWN_METHODS | {"_OTHER"}
        assert route == "__unmatched__"
        assert status == "200"


def test_odd_method_and_non_utf8_path() -> None:
    mw = wrap(hello)
    get(mw, "/caf\xe9/%FF/\xff", "FOO")
    get(mw, "/", "get")  # methods are case-sensitive
    assert requests_by_labels(scrape_samples(mw)) == {("_OTHER", "__unmatched__", "200"): 2}


def test_garbage_status_is_labelled_other() -> None:
    def app(env: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("abc", [])
        return [b""]

    mw = wrap(app)
    get(mw, "/")
    assert requests_by_labels(scrape_samples(mw)) == {("GET", "__unmatched__", "other"): 1}


def test_excluded_paths_are_served_not_counted() -> None:
    mw = wrap(hello, exclude_paths=["/healthz"], exclude_patterns=[r"/static/.*"])
    assert get(mw, "/healthz") == ("200 OK", b"hello")
    assert get(mw, "/static/app.js") == ("200 OK", b"hello")
    get(mw, "/counted")
    assert requests_by_labels(scrape_samples(mw)) == {("GET", "__unmatched__", "200"): 1}


def test_metrics_endpoint() -> None:
    mw = wrap(hello)
    get(mw, "/")
    server = InProcessServer()
    body = server.call(mw, environ("/metrics"))
    headers = dict(server.headers)
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert int(headers["Content-Length"]) == len(body)
    # Scrapes are not counted.
    scrape_samples(mw)
    assert requests_by_labels(parse_samples(body.decode())) == {("GET", "__unmatched__", "200"): 1}
    assert requests_by_labels(scrape_samples(mw)) == {("GET", "__unmatched__", "200"): 1}

    server = InProcessServer()
    body = server.call(mw, environ("/metrics", HTTP_ACCEPT="application/openmetrics-text"))
    assert dict(server.headers)["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")

    server = InProcessServer()
    body = server.call(mw, environ("/metrics", HTTP_ACCEPT_ENCODING="gzip"))
    assert dict(server.headers)["Content-Encoding"] == "gzip"
    assert b"http_requests_total" in gzip.decompress(body)

    server = InProcessServer()
    assert server.call(mw, environ("/metrics", "HEAD")) == b""
    assert int(dict(server.headers)["Content-Length"]) > 0

    assert get(mw, "/metrics", "POST")[0] == "405 Method Not Allowed"


def test_metrics_path_setting() -> None:
    mw = wrap(hello, metrics_path="/internal/metrics")
    assert get(mw, "/metrics") == ("200 OK", b"hello")
    assert requests_by_labels(scrape_samples(mw, "/internal/metrics")) == {
        ("GET", "__unmatched__", "200"): 1
    }
    off = wrap(hello, metrics_path=None)
    assert get(off, "/metrics") == ("200 OK", b"hello")


def test_bad_options_raise_naming_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="buckets"):
        MetricsMiddleware(hello, buckets=[2, 1])
    with pytest.raises(ConfigurationError, match="exclude_pathz"):
        MetricsMiddleware(hello, exclude_pathz=["/x"])
    with pytest.raises(ConfigurationError, match="route_resolver"):
        MetricsMiddleware(hello, route_resolver="/x")  # type: ignore[arg-type]


def test_environment_variables_apply(monkeypatch: Any) -> None:
    monkeypatch.setenv("HTTP_METRICS_NAMESPACE", "shop")
    mw = wrap(hello)
    get(mw, "/")
    assert requests_by_labels(scrape_samples(mw), "shop_") == {("GET", "__unmatched__", "200"): 1}
