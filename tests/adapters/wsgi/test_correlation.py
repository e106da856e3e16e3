"""Correlation IDs and exemplars in the pure WSGI middleware, called the way servers call it
(and under real gunicorn and Werkzeug servers for the unhandled-exception 500)."""

from __future__ import annotations

import contextlib
import http.client
import logging
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
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
from werkzeug.serving import make_server

import wsgi_metrics
from tests.support.correlation import INVALID_IDS, captured_logs
from tests.support.otel import SPAN_FAILURES, broken_span
from tests.support.paths import ROOT
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
app_log = logging.getLogger("tests.app")


def echo(env: Environ, start_response: StartResponse) -> list[bytes]:
    app_log.info("handling")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [(get_correlation_id() or "-").encode()]


def streamed(env: Environ, start_response: StartResponse) -> Iterator[bytes]:
    # start_response on the first iteration (PEP 3333 allows it): everything here runs
    # while the server consumes the body, after the middleware's call returned.
    start_response("200 OK", [("Content-Type", "text/plain")])
    for part in ("a", "b"):
        app_log.info("chunk %s", part)
        yield f"{part}={get_correlation_id()};".encode()


def boom(env: Environ, start_response: StartResponse) -> list[bytes]:
    app_log.info("about to fail")
    raise RuntimeError("unhandled")


def not_found(env: Environ, start_response: StartResponse) -> list[bytes]:
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"nope"]


def dispatch(env: Environ, start_response: StartResponse) -> Any:
    path = env["PATH_INFO"]
    if path.startswith("/stream"):
        return streamed(env, start_response)
    if path.startswith("/boom"):
        return boom(env, start_response)
    if path.startswith("/missing"):
        return not_found(env, start_response)
    return echo(env, start_response)


def wrap(app: Any = dispatch, **options: Any) -> MetricsMiddleware:
    options.setdefault("registry", CollectorRegistry())
    options.setdefault("route_resolver", lambda env: env["PATH_INFO"].split("/")[1] or None)
    return MetricsMiddleware(app, correlation_id=True, **options)


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


# --- real servers: what reaches the client for an unhandled exception ----------------------


def fetch(port: int, path: str, request_id: str | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"X-Request-ID": request_id} if request_id else {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_werkzeug_server_sends_our_500_and_logs_the_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def peek(env: Environ, start_response: StartResponse) -> list[bytes]:
        # Outside the middleware, in the server's (reused) thread: no ID may be left over.
        if env["PATH_INFO"] == "/peek":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [str(get_correlation_id()).encode()]
        return app(env, start_response)

    app = wrap()
    server = make_server("127.0.0.1", 0, peek)  # one thread, serving request after request
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with caplog.at_level(logging.ERROR, logger="werkzeug"):
            status, headers, body = fetch(server.port, "/boom", "srv-1")
            # The server logs after the response went out (it is complete: Content-Length).
            deadline = time.monotonic() + 5
            while "RuntimeError: unhandled" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.01)
        assert (status, headers["x-request-id"], body) == (500, "srv-1", b"Internal Server Error")
        assert "Error on request" in caplog.text and "RuntimeError: unhandled" in caplog.text
        assert fetch(server.port, "/stream", "srv-2")[2] == b"a=srv-2;b=srv-2;"
        assert fetch(server.port, "/peek")[2] == b"None"
    finally:
        server.shutdown()
        thread.join(5)


def test_gunicorn_gthread_sends_our_500_logs_it_and_leaks_no_id(tmp_path: Path) -> None:
    """gunicorn with one reused pool thread: the client gets our 500 with the header, the
    server logs the traceback, and the next request on that thread sees no leftover ID."""
    log = tmp_path / "gunicorn.log"
    with _gunicorn("-w", "1", "-k", "gthread", "--threads", "1",
                   "--error-logfile", str(log)) as port:
        status, headers, body = fetch(port, "/boom", "gu-1")
        assert (status, headers["x-request-id"], body) == (500, "gu-1", b"Internal Server Error")
        assert fetch(port, "/peek")[2] == b"None"
        assert fetch(port, "/stream", "gu-2")[2] == b"a=gu-2;b=gu-2;"
        assert fetch(port, "/peek")[2] == b"None"
        deadline = time.monotonic() + 5
        while "RuntimeError: unhandled in plain WSGI" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert "Error handling request" in log.read_text()


def test_gunicorn_preforked_workers_never_share_generated_ids() -> None:
    """``--preload``: the master imported the app (which drew an ID, filling the pool) and
    forked three workers from it. Every generated ID is distinct, across workers too."""
    with _gunicorn("--preload", "-w", "3", "-k", "sync") as port, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: fetch(port, "/pid"), range(90)))
    pids = {body for _, _, body in answers}
    ids = [headers["x-request-id"] for _, headers, _ in answers]
    assert len(pids) >= 2, pids  # the requests did spread over the workers
    assert all(HEX32.fullmatch(cid) for cid in ids)
    assert len(set(ids)) == len(ids) == 90


@contextlib.contextmanager
def _gunicorn(*options: str) -> Iterator[int]:
    """gunicorn serving tests.support.apps.wsgi_correlation on a free loopback port, once it
    answers; yields the port."""
    port = _free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "--pythonpath", str(ROOT),
         *options, "-b", f"127.0.0.1:{port}", "tests.support.apps.wsgi_correlation:app"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                fetch(port, "/peek")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "no gunicorn"
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

