"""Correlation IDs, exemplars and OpenTelemetry metrics with Flask (its test client)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, Response, abort
from flask.testing import FlaskClient
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.support.correlation import INVALID_IDS, captured_logs
from tests.support.otel import otel_http_points
from tests.support.scrape import exceptions_by_labels, parse_samples, requests_by_labels
from wsgi_metrics import get_correlation_id
from wsgi_metrics.flask import Metrics

HEX32 = re.compile(r"[0-9a-f]{32}")
app_log = logging.getLogger("tests.flask_app")


def make_app(propagate: bool = False, **options: Any) -> Flask:
    app = Flask(__name__)
    app.config["PROPAGATE_EXCEPTIONS"] = propagate

    @app.get("/echo/<int:n>")
    def echo(n: int) -> str:
        app_log.info("handling")
        return get_correlation_id() or "-"

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[str]:
            for part in ("a", "b"):
                app_log.info("chunk %s", part)
                yield f"{part}={get_correlation_id()};"

        return Response(chunks())

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    @app.get("/gone")
    def gone() -> str:
        abort(404)

    options.setdefault("registry", CollectorRegistry())
    options.setdefault("correlation_id", True)
    Metrics(app, **options)
    return app


class Client(FlaskClient):
    """Flask's test client, buffered: the response is consumed and closed at once, as a
    server does. (Unbuffered, Werkzeug never calls close(): the request is recorded, and
    its ID reset, only when a ``with`` block or ``close()`` ends it.)"""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


def client_of(app: Flask) -> Client:
    app.test_client_class = Client
    return app.test_client()  # type: ignore[return-value]


def test_valid_id_echoed_and_seen_by_view_and_logs() -> None:
    with captured_logs() as records:
        r = client_of(make_app()).get("/echo/1", headers={"X-Request-ID": "fl-1"})
    assert (r.status_code, r.headers.getlist("X-Request-ID"), r.text) == (200, ["fl-1"], "fl-1")
    assert records.ids_of("handling") == ["fl-1"]
    assert get_correlation_id() is None


@pytest.mark.parametrize("raw", [None, *INVALID_IDS.values()], ids=["missing", *INVALID_IDS])
def test_missing_and_invalid_ids_replaced_and_echoed(raw: str | None) -> None:
    # environ_overrides: Werkzeug's header builder refuses CR/LF, a server hands them over.
    overrides = {} if raw is None else {"HTTP_X_REQUEST_ID": raw}
    with captured_logs() as records:
        r = client_of(make_app()).get("/echo/2", environ_overrides=overrides)
    cid = r.headers["X-Request-ID"]
    assert HEX32.fullmatch(cid) and r.text == cid
    assert records.ids_of("handling") == [cid]
    replaced = [rec.getMessage() for rec in records.records
                if rec.name == "asgi_metrics.correlation"]
    if raw is None:
        assert replaced == []
    else:
        [line] = replaced
        assert cid in line and (not raw or raw not in line)


def test_streamed_generator_sees_the_id_until_the_response_is_closed() -> None:
    client = client_of(make_app())
    with captured_logs() as records, client.get(
        "/stream", headers={"X-Request-ID": "st-1"}, buffered=False
    ) as r:
        assert r.get_data() == b"a=st-1;b=st-1;"
        assert r.headers["X-Request-ID"] == "st-1"
    assert records.ids_of("chunk a") == ["st-1"] and records.ids_of("chunk b") == ["st-1"]
    assert get_correlation_id() is None


def test_flask_500_and_404_carry_the_header_and_flask_logs_with_the_id() -> None:
    app = make_app()
    client = client_of(app)
    with captured_logs() as records:
        r500 = client.get("/boom", headers={"X-Request-ID": "e-1"})
    assert (r500.status_code, r500.headers.getlist("X-Request-ID")) == (500, ["e-1"])
    # Flask's own "Exception on ..." line is written inside the request: it has the ID.
    assert records.ids_of("Exception on /boom [GET]") == ["e-1"]
    missing = client.get("/nowhere", headers={"X-Request-ID": "nf-1"})
    aborted = client.get("/gone")
    assert (missing.status_code, missing.headers["X-Request-ID"]) == (404, "nf-1")
    assert aborted.status_code == 404 and HEX32.fullmatch(aborted.headers["X-Request-ID"])
    samples = parse_samples(client.get("/metrics").text)
    assert requests_by_labels(samples)[("GET", "/boom", "500")] == 1
    assert exceptions_by_labels(samples) == {("GET", "/boom", "RuntimeError"): 1}
    assert "e-1" not in client.get("/metrics").text  # never a label
    assert get_correlation_id() is None


def test_propagating_flask_gets_its_exception_and_the_id_is_reset() -> None:
    # Testing/debug mode: Flask hands the exception outward on purpose (to the test client,
    # to the debugger); the middleware does not turn it into its own 500.
    client = client_of(make_app(propagate=True))
    with pytest.raises(RuntimeError, match="boom"):
        client.get("/boom", headers={"X-Request-ID": "p-1"})
    assert get_correlation_id() is None


def test_exemplars_from_opentelemetry_wsgi_middleware_and_a_span_around_the_call() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = make_app()
    app.wsgi_app = OpenTelemetryMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, tracer_provider=provider
    )
    client = client_of(app)
    client.get("/echo/3")
    [span] = exporter.get_finished_spans()
    expected = {(format(span.context.trace_id, "032x"), format(span.context.span_id, "016x"))}
    assert exemplars(client, "/echo/<int:n>") == expected

    plain = make_app(correlation_id=False)
    with provider.get_tracer("tests").start_as_current_span("around") as around:
        client_of(plain).get("/echo/4")
    context = around.get_span_context()
    expected = {(format(context.trace_id, "032x"), format(context.span_id, "016x"))}
    assert exemplars(client_of(plain), "/echo/<int:n>") == expected


def exemplars(client: Any, route: str) -> set[tuple[str, str]]:
    body = client.get("/metrics", headers={"Accept": "application/openmetrics-text"}).text
    found = set()
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.exemplar is not None and sample.labels.get("route") == route:
                found.add((sample.exemplar.labels["trace_id"], sample.exemplar.labels["span_id"]))
    return found


def test_opentelemetry_metrics_with_url_scheme() -> None:
    reader = InMemoryMetricReader()
    app = make_app(meter_provider=MeterProvider(metric_readers=[reader]))
    https = client_of(app)
    for n in (1, 2):
        assert https.get(f"/echo/{n}", base_url="https://localhost").status_code == 200
    assert https.get("/boom").status_code == 500
    assert https.get("/nowhere").status_code == 404

    points, active = otel_http_points(reader)
    get = {("http.request.method", "GET")}
    assert points == {
        frozenset(get | {("url.scheme", "https"), ("http.route", "/echo/<int:n>"),
                         ("http.response.status_code", 200)}): 2,
        frozenset(get | {("url.scheme", "http"), ("http.route", "/boom"),
                         ("http.response.status_code", 500), ("error.type", "RuntimeError")}): 1,
        frozenset(get | {("url.scheme", "http"), ("http.response.status_code", 404)}): 1,
    }
    assert active == {frozenset(get | {("url.scheme", "https")}): 0,
                      frozenset(get | {("url.scheme", "http")}): 0}
