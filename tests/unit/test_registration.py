"""App after app in one process: the latest store of ours replaces earlier ones whose metric
names overlap, whatever their other options; disjoint ones stay; others' collectors clash.

Through the real frameworks (Starlette, plain WSGI, the Flask extension) on prometheus_client's
default registry, read back with ``generate_latest`` and prometheus_client's parser. Django's
``recorder()`` path is in ``tests/adapters/django/test_middleware.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import wsgi_metrics
from asgi_metrics import ConfigurationError, MetricsMiddleware
from asgi_metrics.exposition.collector import iter_registered
from tests.support.asgi import get_all
from tests.support.scrape import parse_families, sample
from wsgi_metrics.flask import Metrics

pytestmark = pytest.mark.anyio

PING = {"method": "GET", "route": "/ping", "status": "200"}


@pytest.fixture
def default_registry() -> Iterator[CollectorRegistry]:
    """prometheus_client's REGISTRY, without the stores a test leaves in it."""
    before = set(iter_registered(REGISTRY))
    yield REGISTRY
    for collector in set(iter_registered(REGISTRY)) - before:
        REGISTRY.unregister(collector)


async def ping(request: Request) -> Response:
    return PlainTextResponse("pong")


def starlette_app(**options: Any) -> Starlette:
    app = Starlette(routes=[Route("/ping", ping)])
    app.add_middleware(MetricsMiddleware, **options)
    return app


def exposed(registry: CollectorRegistry) -> Any:
    return parse_families(generate_latest(registry).decode())


# Pairs of option sets for two apps built one after the other: every name of the first
# is also a name of the second (or the other way round), the rest differs.
OVERLAPPING = [
    ({}, {"request_size": True}),
    ({"request_size": True, "response_size": True}, {}),
    ({}, {"buckets": [0.1, 1.0]}),
    ({}, {"time_to_first_byte": True, "size_buckets": [10, 100]}),
    ({}, {"const_labels": {"region": "eu"}}),
    ({"const_labels": {"region": "eu"}}, {"const_labels": {"region": "us", "tier": "web"}}),
    ({"naming": "otel"}, {"naming": "otel", "request_size": True}),
    ({"namespace": "shop"}, {"namespace": "shop", "group_status": True}),
]


@pytest.mark.parametrize(("first", "second"), OVERLAPPING)
async def test_asgi_app_after_app_replaces_the_earlier_store(
    default_registry: CollectorRegistry, first: dict[str, Any], second: dict[str, Any]
) -> None:
    one = starlette_app(**first)
    two = starlette_app(**second)
    # Starlette builds its middleware stack (and so ours) on the first request.
    assert await get_all(one, ["/ping"] * 2) == [200, 200]
    assert await get_all(two, ["/ping"] * 3) == [200] * 3
    # The registry shows the latest app's store, and only it: one request count, 3.
    counts = [
        s.value
        for family in exposed(default_registry).values()
        for s in family.samples
        if s.name.endswith("_duration_seconds_count")
        and "/ping" in (s.labels.get("route"), s.labels.get("http_route"))
    ]
    assert counts == [3.0]


async def test_the_reported_case_request_size_on_the_second_app(
    default_registry: CollectorRegistry,
) -> None:
    MetricsMiddleware(Starlette())
    app = MetricsMiddleware(Starlette(routes=[Route("/ping", ping)]), request_size=True)
    assert await get_all(app, ["/ping"]) == [200]
    families = exposed(default_registry)
    assert sample(families, "http_requests_total", PING) == 1
    assert sample(families, "http_request_size_bytes_count", PING) == 1


async def test_disjoint_names_stay_side_by_side(default_registry: CollectorRegistry) -> None:
    plain = starlette_app()
    shop = starlette_app(namespace="shop", request_size=True)
    otel = starlette_app(naming="otel")  # its names are all http_server_*: disjoint too
    assert await get_all(plain, ["/ping"]) == [200]
    assert await get_all(shop, ["/ping"] * 2) == [200] * 2
    assert await get_all(otel, ["/ping"] * 3) == [200] * 3
    # A later plain app with other options replaces only the plain one.
    later = starlette_app(const_labels={"tier": "web"})
    assert await get_all(later, ["/ping"] * 4) == [200] * 4
    families = exposed(default_registry)
    assert sample(families, "http_requests_total", {**PING, "tier": "web"}) == 4
    assert sample(families, "http_requests_total", PING) == 0  # the replaced one is gone
    assert sample(families, "shop_http_requests_total", PING) == 2
    otel_labels = {"http_request_method": "GET", "http_route": "/ping",
                   "http_response_status_code": "200"}
    assert sample(families, "http_server_request_duration_seconds_count", otel_labels) == 3


async def test_a_collector_not_ours_still_clashes() -> None:
    registry = CollectorRegistry()
    ours = MetricsMiddleware(Starlette(routes=[Route("/ping", ping)]), registry=registry)
    assert await get_all(ours, ["/ping"]) == [200]
    # Someone else's counter taking one of the names of the request_size store only.
    Counter("http_request_size_bytes_count", "not ours", registry=registry)
    with pytest.raises(ConfigurationError, match="Duplicated timeseries") as raised:
        MetricsMiddleware(Starlette(), registry=registry, request_size=True)
    assert "set 'namespace' or pass a separate 'registry'" in str(raised.value)
    # The failed build took nothing away: the first app's store is still the registered one.
    assert sample(exposed(registry), "http_requests_total", PING) == 1
    assert list(iter_registered(registry)) == [ours.exposition.own]


def wsgi_ping(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"pong"]


def flask_app() -> Flask:
    app = Flask(__name__)
    app.add_url_rule("/ping", "ping", lambda: "pong")
    return app


@pytest.mark.parametrize(("first", "second"), OVERLAPPING[:5])
def test_wsgi_and_flask_app_after_app(
    default_registry: CollectorRegistry, first: dict[str, Any], second: dict[str, Any]
) -> None:
    def route(environ: dict[str, Any]) -> str:
        return "/ping"

    wsgi_metrics.MetricsMiddleware(wsgi_ping, route_resolver=route, **first)
    plain = wsgi_metrics.MetricsMiddleware(wsgi_ping, route_resolver=route, **second)
    extension_app = flask_app()
    extension_app.config["HTTP_METRICS"] = first
    Metrics(extension_app)
    flask = flask_app()
    Metrics(flask, **second)  # the latest of all: the one registered
    assert plain.exposition.own not in set(iter_registered(default_registry))
    for _ in range(2):
        assert flask.test_client().get("/ping").status_code == 200
    families = exposed(default_registry)
    labels = {**PING, **second.get("const_labels", {})}
    assert sample(families, "http_request_duration_seconds_count", labels) == 2
