"""Flask through its own test client and WSGI calls: route templates, errors, the
extension and app.config."""

from __future__ import annotations

import gc
import io
import time
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.util import FileWrapper

import pytest
from flask import Blueprint, Flask, Response, abort, send_file
from prometheus_client import CollectorRegistry
from werkzeug.test import Client, EnvironBuilder

from tests.support.scrape import (
    duration_sum,
    exceptions_by_labels,
    in_flight,
    parse_samples,
    requests_by_labels,
)
from tests.support.wsgi import InProcessServer
from wsgi_metrics import ConfigurationError, MetricsMiddleware, get_correlation_id
from wsgi_metrics.flask import Metrics


def make_app(propagate: bool = False) -> Flask:
    app = Flask(__name__)
    app.config["PROPAGATE_EXCEPTIONS"] = propagate
    api = Blueprint("api", __name__, url_prefix="/api")

    @api.get("/users/<int:user_id>")
    def user(user_id: int) -> dict[str, int]:
        if user_id > 100:
            abort(404)
        return {"id": user_id}

    @api.route("/teapot")
    def teapot() -> tuple[str, int]:
        return "short and stout", 418

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    class Handled(Exception):
        pass

    @app.errorhandler(Handled)
    def handled(exc: Handled) -> tuple[str, int]:
        return "handled", 409

    @app.get("/handled")
    def raises_handled() -> str:
        raise Handled

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[bytes]:
            yield b"a"
            yield b"b"

        return Response(chunks())

    @app.get("/file")
    def file() -> Response:
        return send_file(io.BytesIO(b"0123456789"), mimetype="application/octet-stream")

    app.register_blueprint(api)
    return app


def metrics(app: Flask) -> dict[Any, float]:
    with app.test_client().get("/metrics") as response:
        assert response.status_code == 200
        return parse_samples(response.get_data(as_text=True))


def fetch(app: Flask, path: str, method: str = "GET") -> int:
    with app.test_client().open(path, method=method) as response:
        response.get_data()
        return response.status_code


@pytest.fixture
def app() -> Flask:
    app = make_app()
    app.wsgi_app = MetricsMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, registry=CollectorRegistry()
    )
    return app


def test_route_templates_including_blueprint_prefix(app: Flask) -> None:
    assert fetch(app, "/api/users/1") == 200
    assert fetch(app, "/api/users/2") == 200
    assert fetch(app, "/api/users/101") == 404  # abort() in a matched route
    assert fetch(app, "/api/teapot") == 418
    samples = metrics(app)
    assert requests_by_labels(samples) == {
        ("GET", "/api/users/<int:user_id>", "200"): 2,
        ("GET", "/api/users/<int:user_id>", "404"): 1,
        ("GET", "/api/teapot", "418"): 1,
    }
    assert exceptions_by_labels(samples) == {}
    assert in_flight(samples) == 0


def test_unmatched_404_and_405_and_redirects(app: Flask) -> None:
    assert fetch(app, "/no/such/path") == 404
    assert fetch(app, "/api/users/1", "POST") == 405  # Werkzeug does not say which rule
    assert fetch(app, "/api/users/x") == 404
    assert requests_by_labels(metrics(app)) == {
        ("GET", "__unmatched__", "404"): 2,
        ("POST", "__unmatched__", "405"): 1,
    }


def test_head_and_automatic_options_use_the_rule(app: Flask) -> None:
    assert fetch(app, "/api/users/1", "HEAD") == 200
    assert fetch(app, "/api/users/1", "OPTIONS") == 200
    assert requests_by_labels(metrics(app)) == {
        ("HEAD", "/api/users/<int:user_id>", "200"): 1,
        ("OPTIONS", "/api/users/<int:user_id>", "200"): 1,
    }


def test_unhandled_exception_is_500_and_counted_once(app: Flask) -> None:
    assert fetch(app, "/boom") == 500
    samples = metrics(app)
    assert requests_by_labels(samples) == {("GET", "/boom", "500"): 1}
    assert exceptions_by_labels(samples) == {("GET", "/boom", "RuntimeError"): 1}


def test_propagated_exception_is_reraised_recorded_with_its_route() -> None:
    # start_response is never called and the request context is gone when the exception
    # reaches the middleware: the route comes from got_request_exception.
    app = make_app(propagate=True)
    app.wsgi_app = MetricsMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, registry=CollectorRegistry()
    )
    with pytest.raises(RuntimeError, match="boom"):
        app.test_client().get("/boom")
    samples = metrics(app)
    assert requests_by_labels(samples) == {("GET", "/boom", "500"): 1}
    assert exceptions_by_labels(samples) == {("GET", "/boom", "RuntimeError"): 1}
    assert in_flight(samples) == 0


def test_exception_with_an_error_handler_counts_by_status(app: Flask) -> None:
    assert fetch(app, "/handled") == 409
    samples = metrics(app)
    assert requests_by_labels(samples) == {("GET", "/handled", "409"): 1}
    assert exceptions_by_labels(samples) == {}


def test_streaming_response_read_but_not_closed_counted_by_the_next_scrape_once(
    app: Flask,
) -> None:
    response = app.test_client().get("/stream")
    assert response.get_data() == b"ab"
    # Not closed yet, but the test client has the whole response: the scrape counts it.
    assert requests_by_labels(metrics(app)) == {("GET", "/stream", "200"): 1}
    response.close()
    samples = metrics(app)
    assert requests_by_labels(samples) == {("GET", "/stream", "200"): 1}
    assert in_flight(samples) == 0


def test_unclosed_test_client_response_counted_when_collected(app: Flask) -> None:
    app.test_client().get("/api/users/5").get_data()
    gc.collect()
    assert requests_by_labels(metrics(app)) == {("GET", "/api/users/<int:user_id>", "200"): 1}


@pytest.fixture
def no_gc() -> Iterator[None]:
    """The cyclic garbage collector off: what the test client leaves behind is checked
    before any collection (a 404's traceback holds its response in a reference cycle, so
    only a collection would free it)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def with_extension() -> Flask:
    app = make_app()
    Metrics(app, registry=CollectorRegistry())
    return app


def with_middleware() -> Flask:
    app = make_app()
    app.wsgi_app = MetricsMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, registry=CollectorRegistry()
    )
    return app


WRAPPINGS = pytest.mark.parametrize(
    "build", [with_extension, with_middleware], ids=["Metrics(app)", "MetricsMiddleware"]
)


def scrape_with(client: Any) -> dict[Any, float]:
    return parse_samples(client.get("/metrics").get_data(as_text=True))


@WRAPPINGS
@pytest.mark.usefixtures("no_gc")
def test_test_client_responses_are_counted_by_the_next_scrape(
    build: Callable[[], Flask],
) -> None:
    # How tests are written: no ``with``, no close(), the responses dropped at once.
    client = build().test_client()
    assert client.get("/missing").status_code == 404
    assert client.get("/api/users/1").status_code == 200
    samples = scrape_with(client)
    assert requests_by_labels(samples) == {
        ("GET", "__unmatched__", "404"): 1,
        ("GET", "/api/users/<int:user_id>", "200"): 1,
    }
    assert in_flight(samples) == 0


@WRAPPINGS
@pytest.mark.usefixtures("no_gc")
def test_kept_test_client_responses_counted_once_timed_to_hand_over(
    build: Callable[[], Flask],
) -> None:
    client = build().test_client()
    missing = client.get("/missing")  # never read: the client took its first chunk only
    user = client.get("/api/users/1")
    assert user.get_json() == {"id": 1}  # read to the end, not closed
    stream = client.get("/stream")  # a generator, never read
    time.sleep(0.25)
    samples = scrape_with(client)
    expected = {
        ("GET", "__unmatched__", "404"): 1,
        ("GET", "/api/users/<int:user_id>", "200"): 1,
        ("GET", "/stream", "200"): 1,
    }
    assert requests_by_labels(samples) == expected
    assert in_flight(samples) == 0
    # Timed to the end of the iteration, or to when the app handed the response to the
    # test client: not to the scrape.
    for method, route, status in expected:
        assert duration_sum(samples, method, route, status) < 0.25
    # Read and closed later: the app's iterables are closed, nothing is counted again.
    assert stream.get_data() == b"ab"
    for response in (missing, user, stream):
        response.close()
    samples = scrape_with(client)
    assert requests_by_labels(samples) == expected
    assert in_flight(samples) == 0


USER_200 = ("GET", "/api/users/<int:user_id>", "200")


@pytest.mark.usefixtures("no_gc")
def test_scrape_leaves_the_correlation_id_to_close() -> None:
    app = make_app()
    Metrics(app, registry=CollectorRegistry(), correlation_id=True)
    client = app.test_client()
    response = client.get("/api/users/1")
    cid = response.headers["X-Request-ID"]
    # The test client serves in the test's own context: the ID is set until close().
    assert get_correlation_id() == cid
    assert requests_by_labels(scrape_with(client)) == {USER_200: 1}
    assert get_correlation_id() == cid
    response.close()
    assert get_correlation_id() is None
    assert requests_by_labels(scrape_with(client)) == {USER_200: 1}


@pytest.mark.usefixtures("no_gc")
def test_plain_werkzeug_client_responses_counted_by_the_next_scrape() -> None:
    def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    client = Client(MetricsMiddleware(hello, registry=CollectorRegistry()))
    kept = client.get("/a")
    read = client.get("/b")
    assert read.get_data() == b"hello"
    samples = parse_samples(client.get("/metrics").get_data(as_text=True))
    assert requests_by_labels(samples) == {("GET", "__unmatched__", "200"): 2}
    assert in_flight(samples) == 0
    kept.close()
    read.close()
    assert requests_by_labels(parse_samples(client.get("/metrics").get_data(as_text=True))) == {
        ("GET", "__unmatched__", "200"): 2
    }


def test_send_file_keeps_the_servers_file_wrapper(app: Flask) -> None:
    env = EnvironBuilder(path="/file").get_environ()
    env["wsgi.file_wrapper"] = FileWrapper
    result = app.wsgi_app(env, InProcessServer().start_response)
    assert isinstance(result, FileWrapper)
    assert b"".join(result) == b"0123456789"
    result.close()
    assert requests_by_labels(metrics(app)) == {("GET", "/file", "200"): 1}


def test_metrics_endpoint_through_flask(app: Flask) -> None:
    client = app.test_client()
    fetch(app, "/api/teapot")
    with client.get("/metrics", headers={"Accept": "application/openmetrics-text"}) as r:
        assert r.headers["Content-Type"].startswith("application/openmetrics-text")
    with client.get("/metrics", headers={"Accept-Encoding": "gzip"}) as r:
        assert r.headers["Content-Encoding"] == "gzip"
    assert requests_by_labels(metrics(app)) == {("GET", "/api/teapot", "418"): 1}


def test_extension_reads_app_config() -> None:
    app = make_app()
    registry = CollectorRegistry()
    app.config["HTTP_METRICS"] = {
        "namespace": "shop", "registry": registry, "exclude_paths": ["/api/teapot"],
    }
    Metrics(app)
    assert isinstance(app.extensions["http_metrics"], MetricsMiddleware)
    fetch(app, "/api/users/3")
    fetch(app, "/api/teapot")
    assert requests_by_labels(metrics(app), "shop_") == {
        ("GET", "/api/users/<int:user_id>", "200"): 1
    }


def test_init_app_options_win_over_config() -> None:
    app = make_app()
    app.config["HTTP_METRICS"] = {"namespace": "fromconfig", "registry": CollectorRegistry()}
    metrics_ext = Metrics(namespace="fromcode")
    metrics_ext.init_app(app)
    fetch(app, "/api/users/3")
    assert requests_by_labels(metrics(app), "fromcode_") == {
        ("GET", "/api/users/<int:user_id>", "200"): 1
    }


def test_extension_finds_routes_behind_other_middleware() -> None:
    app = make_app()
    inner = app.wsgi_app
    app.wsgi_app = lambda env, sr: inner(env, sr)  # type: ignore[method-assign]
    Metrics(app, registry=CollectorRegistry())
    fetch(app, "/api/users/3")
    assert requests_by_labels(metrics(app)) == {("GET", "/api/users/<int:user_id>", "200"): 1}


def test_bad_config_raises_naming_the_setting() -> None:
    app = make_app()
    app.config["HTTP_METRICS"] = {"buckets": "fast"}
    with pytest.raises(ConfigurationError, match="buckets"):
        Metrics(app)
    app.config["HTTP_METRICS"] = ["not", "a", "dict"]
    with pytest.raises(ConfigurationError, match="HTTP_METRICS"):
        Metrics(app)


def test_hostile_requests_served_as_without_us(app: Flask) -> None:
    bare = make_app()
    for path, method in [("/api/users/%FF", "GET"), ("/caf\xe9", "FOO"), ("/boom", "get")]:
        env = EnvironBuilder(path="/", method=method).get_environ()
        env["PATH_INFO"] = path
        plain, observed = InProcessServer(), InProcessServer()
        body = plain.call(bare.wsgi_app, dict(env))
        assert observed.call(app.wsgi_app, dict(env)) == body
        assert observed.status == plain.status
    assert requests_by_labels(metrics(app)) == {
        ("GET", "__unmatched__", "404"): 1,
        ("_OTHER", "__unmatched__", "404"): 1,
        # Werkzeug upper-cases the method and serves it; the label policy is
        # case-sensitive, as in ASGI, so the method label stays in the closed set.
        ("_OTHER", "/boom", "500"): 1,
    }
