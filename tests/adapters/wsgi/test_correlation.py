"""Correlation IDs and exemplars in the pure WSGI middleware, called the way servers call it
(under real gunicorn and Werkzeug servers: tests/e2e/test_correlation_wsgi_servers.py)."""

from __future__ import annotations

import logging
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from werkzeug.debug import DebuggedApplication

import wsgi_metrics
from tests.support.apps.wsgi_echo import boom, dispatch, echo, wrap
from tests.support.correlation import INVALID_IDS, captured_logs
from tests.support.otel import SPAN_FAILURES, broken_span
from tests.support.scrape import exceptions_by_labels, requests_by_labels
from tests.support.wsgi import InProcessServer, environ, get, scrape_samples
from wsgi_metrics import (
    EXCEPTION_KEY,
    CorrelationIdFilter,
    MetricsMiddleware,
    get_correlation_id,
)
from wsgi_metrics.middleware import Environ, StartResponse

HEX32 = re.compile(r"[0-9a-f]{32}")


def call(app: Any, path: str = "/echo", **extra: Any) -> tuple[InProcessServer, bytes]:
    server = InProcessServer()
    body = server.call(app, environ(path, **extra))
    return server, body


def header(server: InProcessServer, name: str = "x-request-id") -> list[str]:
    return [v for k, v in server.headers if k.lower() == name]


def test_exported_from_wsgi_metrics() -> None:
    # The same objects as the core's: one ContextVar whichever middleware sets it.
    import asgi_metrics

    assert wsgi_metrics.get_correlation_id is asgi_metrics.get_correlation_id
    assert wsgi_metrics.CorrelationIdFilter is asgi_metrics.CorrelationIdFilter


def test_valid_id_echoed_and_seen_by_app_and_logs() -> None:
    with captured_logs() as records:
        server, body = call(wrap(), HTTP_X_REQUEST_ID="req-1.A_b")
    assert header(server) == ["req-1.A_b"]
    assert body == b"req-1.A_b"
    assert records.ids_of("handling") == ["req-1.A_b"]
    [record] = [r for r in records.records if r.getMessage() == "handling"]
    assert records.format(record) == "req-1.A_b INFO handling"
    assert get_correlation_id() is None


def test_missing_id_generated_uuid4_form_and_distinct() -> None:
    app = wrap()
    (s1, b1), (s2, b2) = call(app), call(app)
    for server, body in ((s1, b1), (s2, b2)):
        [cid] = header(server)
        assert HEX32.fullmatch(cid) and uuid.UUID(cid).version == 4
        assert body == cid.encode()
    assert b1 != b2


@pytest.mark.parametrize("raw", INVALID_IDS.values(), ids=INVALID_IDS.keys())
def test_invalid_ids_replaced_and_logged_without_raw_value(raw: str) -> None:
    with captured_logs() as records:
        server, body = call(wrap(), HTTP_X_REQUEST_ID=raw)
    [cid] = header(server)
    assert HEX32.fullmatch(cid)
    assert body == cid.encode()
    assert records.ids_of("handling") == [cid]
    [line] = [r for r in records.records if r.name == "asgi_metrics.correlation"]
    assert cid in line.getMessage()
    if raw:
        assert raw not in line.getMessage()


def test_64_chars_still_valid() -> None:
    server, _ = call(wrap(), HTTP_X_REQUEST_ID="y" * 64)
    assert header(server) == ["y" * 64]


def test_streamed_body_sees_the_id_and_it_is_reset_at_close() -> None:
    seen_before_close: list[str | None] = []

    class Spy(InProcessServer):
        def call(self, app: Any, env: dict[str, Any]) -> bytes:
            result = app(env, self.start_response)
            body = b"".join(result)
            # Between the last chunk and close() the request is not over yet.
            seen_before_close.append(get_correlation_id())
            result.close()
            return body

    with captured_logs() as records:
        server = Spy()
        body = server.call(wrap(), environ("/stream", HTTP_X_REQUEST_ID="s-1"))
    assert body == b"a=s-1;b=s-1;"
    assert header(server) == ["s-1"]
    assert records.ids_of("chunk a") == ["s-1"] and records.ids_of("chunk b") == ["s-1"]
    assert seen_before_close == ["s-1"]
    assert get_correlation_id() is None


def test_thread_pool_worker_does_not_leak_the_id_into_its_next_task() -> None:
    # A pool thread keeps its context across tasks (gunicorn's gthread worker is one):
    # what the middleware set must be gone once the server closed the response.
    app = wrap()
    with ThreadPoolExecutor(max_workers=1) as pool:
        for path in ("/echo", "/stream"):
            server, _ = pool.submit(call, app, path, HTTP_X_REQUEST_ID="leak-1").result()
            assert header(server) == ["leak-1"]
            assert pool.submit(get_correlation_id).result() is None
        with pytest.raises(RuntimeError):
            pool.submit(call, app, "/boom", HTTP_X_REQUEST_ID="leak-2").result()
        assert pool.submit(get_correlation_id).result() is None


def test_unhandled_exception_gets_our_500_with_the_header_then_is_reraised() -> None:
    app = wrap()
    with captured_logs() as records:
        server = InProcessServer()
        result = app(environ("/boom", HTTP_X_REQUEST_ID="err-1"), server.start_response)
        # The response is there before anything is raised: that is what goes on the wire.
        assert server.status == "500 Internal Server Error"
        assert header(server) == ["err-1"]
        assert dict(server.headers)["Content-Length"] == "21"
        assert get_correlation_id() == "err-1"  # until the server closes the response
        chunks = []
        with pytest.raises(RuntimeError, match="unhandled"):
            for chunk in result:
                chunks.append(chunk)
        result.close()  # raised once only: close() after the iteration raised is quiet
    assert chunks == [b"Internal Server Error"]
    assert records.ids_of("about to fail") == ["err-1"]
    assert get_correlation_id() is None
    samples = scrape_samples(app)
    assert requests_by_labels(samples) == {("GET", "boom", "500"): 1}
    assert exceptions_by_labels(samples) == {("GET", "boom", "RuntimeError"): 1}


def test_exception_is_raised_at_close_if_the_body_was_not_consumed() -> None:
    server = InProcessServer()
    result = wrap()(environ("/boom"), server.start_response)
    with pytest.raises(RuntimeError, match="unhandled"):
        result.close()  # the client went away before the body: the server still hears of it
    assert get_correlation_id() is None


def test_exception_after_start_response_replaces_the_unsent_status() -> None:
    def half(env: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/json")])
        raise KeyError("late")

    app = wrap(half)
    server = InProcessServer()
    with pytest.raises(KeyError):
        server.call(app, environ("/half", HTTP_X_REQUEST_ID="late-1"))
    assert server.status == "500 Internal Server Error"
    assert header(server) == ["late-1"]
    assert requests_by_labels(scrape_samples(app)) == {("GET", "half", "500"): 1}


def test_without_correlation_the_exception_propagates_from_the_call() -> None:
    app = MetricsMiddleware(boom, registry=CollectorRegistry())
    server = InProcessServer()
    with pytest.raises(RuntimeError):
        app(environ("/boom"), server.start_response)
    assert server.status is None  # the server's own 500, as before


def test_steps_aside_for_a_propagating_framework_and_the_werkzeug_debugger() -> None:
    def propagating(env: Environ, start_response: StartResponse) -> list[bytes]:
        error = ValueError("for the debugger")
        env[EXCEPTION_KEY] = error  # reported, and raised anyway: propagated on purpose
        raise error

    server = InProcessServer()
    with pytest.raises(ValueError):
        wrap(propagating)(environ("/p", HTTP_X_REQUEST_ID="p-1"), server.start_response)
    assert server.status is None
    assert get_correlation_id() is None

    debugged = DebuggedApplication(wrap(), evalex=False)
    server, body = call(debugged, "/boom", HTTP_X_REQUEST_ID="d-1")
    assert server.status is not None and server.status.startswith("500")
    assert b"RuntimeError: unhandled" in body and b"Traceback" in body  # the debugger's page
    assert get_correlation_id() is None


def test_header_on_404_and_excluded_paths_which_are_not_counted() -> None:
    app = wrap(exclude_paths=["/echo"])
    server404, _ = call(app, "/missing", HTTP_X_REQUEST_ID="nf-1")
    assert server404.status == "404 Not Found" and header(server404) == ["nf-1"]
    excluded, body = call(app, "/echo", HTTP_X_REQUEST_ID="h-1")
    assert (header(excluded), body) == (["h-1"], b"h-1")
    assert get_correlation_id() is None
    assert requests_by_labels(scrape_samples(app)) == {("GET", "missing", "404"): 1}


@pytest.mark.parametrize("name", ["x-request-id", "X-REQUEST-ID", "X-Request-Id"])
def test_app_set_header_wins_and_headers_list_not_mutated(name: str) -> None:
    # A decoy as long as the name must not count as the app's own.
    own_headers = [("Content-Type", "text/plain"), ("X-Request-IX", "decoy"),
                   (name, "app-chosen")]
    plain_headers = [("Content-Type", "text/plain")]

    def own(env: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", own_headers if env["PATH_INFO"] == "/own" else plain_headers)
        return [b"x"]

    app = wrap(own)
    server, _ = call(app, "/own", HTTP_X_REQUEST_ID="in-1")
    assert header(server) == ["app-chosen"]
    server, _ = call(app, "/plain", HTTP_X_REQUEST_ID="in-2")
    assert header(server) == ["in-2"]
    assert plain_headers == [("Content-Type", "text/plain")]


def test_configurable_header_validator_and_trusted_proxies() -> None:
    app = wrap(
        correlation_header="X-Correlation-ID",
        correlation_id_validator=lambda value: value.startswith("ok-"),
    )
    good, _ = call(app, HTTP_X_CORRELATION_ID="ok-" + "z" * 100)
    assert header(good, "x-correlation-id") == ["ok-" + "z" * 100] and header(good) == []
    bad, _ = call(app, HTTP_X_CORRELATION_ID="nope")
    assert HEX32.fullmatch(header(bad, "x-correlation-id")[0])
    ignored, _ = call(app, HTTP_X_REQUEST_ID="ok-1")
    assert HEX32.fullmatch(header(ignored, "x-correlation-id")[0])
    lax, _ = call(wrap(correlation_id_validator=lambda v: True), HTTP_X_REQUEST_ID="a\r\nb")
    assert HEX32.fullmatch(header(lax)[0])

    proxied = wrap(trusted_proxies=["10.0.0.0/8"])
    trusted, _ = call(proxied, HTTP_X_REQUEST_ID="proxy-1", REMOTE_ADDR="10.1.2.3")
    untrusted, _ = call(proxied, HTTP_X_REQUEST_ID="proxy-1", REMOTE_ADDR="192.0.2.7")
    unknown, _ = call(proxied, HTTP_X_REQUEST_ID="proxy-1")  # no REMOTE_ADDR at all
    assert header(trusted) == ["proxy-1"]
    assert HEX32.fullmatch(header(untrusted)[0]) and HEX32.fullmatch(header(unknown)[0])


def test_id_is_never_a_label_and_feature_off_by_default() -> None:
    app = wrap()
    call(app, HTTP_X_REQUEST_ID="label-check-1")
    assert "label-check-1" not in get(app, "/metrics")[1].decode()
    om = get(app, "/metrics", HTTP_ACCEPT="application/openmetrics-text")[1].decode()
    assert "label-check-1" not in om

    plain = MetricsMiddleware(echo, registry=CollectorRegistry())
    server, body = call(plain, HTTP_X_REQUEST_ID="x")
    assert header(server) == [] and body == b"-"


def test_filter_on_the_server_side_outside_requests() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    assert CorrelationIdFilter().filter(record)
    assert record.correlation_id == "-"  # type: ignore[attr-defined]


# --- exemplars ----------------------------------------------------------------------------

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def tracing() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def exemplar_ids(mw: MetricsMiddleware, route: str) -> set[tuple[str, str]]:
    """(trace_id, span_id) of the exemplars on the duration buckets of ``route``."""
    body = get(mw, "/metrics", HTTP_ACCEPT=OPENMETRICS)[1].decode()
    found = set()
    for family in text_string_to_metric_families(body):
        if family.name == "http_request_duration_seconds":
            for sample in family.samples:
                if sample.exemplar is not None and sample.labels.get("route") == route:
                    labels = sample.exemplar.labels
                    found.add((labels["trace_id"], labels["span_id"]))
    return found


def server_span_ids(exporter: InMemorySpanExporter) -> tuple[str, str]:
    [span] = [s for s in exporter.get_finished_spans() if s.kind.name == "SERVER"]
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


@pytest.mark.parametrize("path", ["/echo", "/stream", "/boom"])
@pytest.mark.parametrize("correlation", [False, True])
def test_exemplar_is_the_outer_opentelemetry_server_span(path: str, correlation: bool) -> None:
    provider, exporter = tracing()
    mw = MetricsMiddleware(
        dispatch, registry=CollectorRegistry(), correlation_id=correlation,
        route_resolver=lambda env: env["PATH_INFO"],
    )
    app = OpenTelemetryMiddleware(mw, tracer_provider=provider)
    # A sampled remote parent: its context is what is current again when the server closes
    # the body, so a span read at close() time would name the parent's span, not ours.
    parent_trace, parent_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    env = environ(path, HTTP_TRACEPARENT=f"00-{parent_trace}-{parent_span}-01")
    server = InProcessServer()
    try:
        server.call(app, env)
    except RuntimeError:
        assert path == "/boom"
    trace_id, span_id = server_span_ids(exporter)
    assert trace_id == parent_trace and span_id != parent_span
    assert exemplar_ids(mw, path) == {(trace_id, span_id)}
    # The same span read once carries the correlation ID (also when the app raised
    # before starting its response).
    [span] = [s for s in exporter.get_finished_spans() if s.kind.name == "SERVER"]
    attributes = span.attributes or {}
    if correlation:
        [cid] = header(server)
        assert attributes.get("correlation.id") == cid
    else:
        assert "correlation.id" not in attributes


@pytest.mark.parametrize("broken", SPAN_FAILURES)
def test_span_failures_keep_the_id_and_the_count(
    broken: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    mw = wrap()
    with broken_span(broken):
        for _ in range(3):
            server, body = call(mw, HTTP_X_REQUEST_ID="kept-1")
            assert server.status.startswith("200") and body == b"kept-1"
            assert header(server) == ["kept-1"]
    assert requests_by_labels(scrape_samples(mw))[("GET", "echo", "200")] == 3
    failures = [r.getMessage() for r in caplog.records if r.name == "asgi_metrics"]
    assert len(failures) == 1 and failures[0].startswith(f"HTTP metrics: {broken} failed")


def test_exemplar_with_opentelemetry_inside_and_with_a_span_started_around_the_call() -> None:
    provider, exporter = tracing()
    mw = MetricsMiddleware(
        OpenTelemetryMiddleware(echo, tracer_provider=provider),
        registry=CollectorRegistry(), route_resolver=lambda env: "/inner",
    )
    get(mw, "/echo")
    assert exemplar_ids(mw, "/inner") == {server_span_ids(exporter)}

    tracer = provider.get_tracer("tests")
    plain = MetricsMiddleware(echo, registry=CollectorRegistry(), route_resolver=lambda e: "/x")
    with tracer.start_as_current_span("around") as span:
        get(plain, "/echo")
    context = span.get_span_context()
    expected = (format(context.trace_id, "032x"), format(context.span_id, "016x"))
    assert exemplar_ids(plain, "/x") == {expected}


def test_no_exemplar_without_sampled_span_and_span_attribute_with_correlation() -> None:
    unsampled = TracerProvider(sampler=ALWAYS_OFF)
    mw = wrap()
    call(OpenTelemetryMiddleware(mw, tracer_provider=unsampled))
    assert exemplar_ids(mw, "echo") == set()

    provider, exporter = tracing()
    mw = wrap(trace_id_as_correlation_id=True)
    server, body = call(OpenTelemetryMiddleware(mw, tracer_provider=provider))
    trace_id, _ = server_span_ids(exporter)
    [span] = exporter.get_finished_spans()
    assert header(server) == [trace_id] and body == trace_id.encode()
    assert span.attributes is not None and span.attributes["correlation.id"] == trace_id
    assert trace.get_current_span().get_span_context().is_valid is False

