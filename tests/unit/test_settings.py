"""Settings: each one's effect on the exposed metrics, env vars, and validation errors."""

from __future__ import annotations

import re
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asgi_metrics import ConfigurationError, MetricsMiddleware
from tests.support.asgi import client, get_all, scrape, scrape_text, wrap
from tests.support.scrape import REQUEST, parse_families, request_count, sample, samples

pytestmark = pytest.mark.anyio


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


async def echo(request: Request) -> Response:
    return PlainTextResponse(b"r" * (len(await request.body()) * 2))


def inner() -> Starlette:
    return Starlette(
        routes=[
            Route("/users/{user_id}", hello),
            Route("/health", hello),
            Route("/healthz", hello),
            Route("/static/{name}", hello),
            Route("/echo", echo, methods=["POST"]),
        ]
    )


async def test_namespace_prefixes_every_name() -> None:
    app = wrap(inner(), namespace="shop")
    await get_all(app, ["/users/1"])
    families = await scrape(app)
    assert sample(families, "shop_http_requests_total",
                  {"method": "GET", "route": "/users/{user_id}", "status": "200"}) == 1
    assert sample(families, "shop_http_request_duration_seconds_count",
                  {"method": "GET", "route": "/users/{user_id}", "status": "200"}) == 1
    assert set(families) == {
        "shop_http_requests", "shop_http_request_duration_seconds",
        "shop_http_requests_in_flight", "shop_http_request_exceptions",
        # The library's own families (self-observation).
        "shop_http_metrics_label_values_folded", "shop_http_metrics_label_sets_overflowed",
        "shop_http_metrics_recording_failures", "shop_http_metrics_scrapes",
        "shop_http_metrics_scrape_render_seconds",
    }


async def test_custom_buckets() -> None:
    app = wrap(inner(), buckets=[0.5, 1, 2.5])
    await get_all(app, ["/users/1", "/users/2"])
    families = await scrape(app)
    les = [labels["le"] for labels, _ in
           samples(families, "http_request_duration_seconds_bucket")]
    assert les == ["0.5", "1.0", "2.5", "+Inf"]
    values = [value for _, value in samples(families, "http_request_duration_seconds_bucket")]
    assert values == [2, 2, 2, 2]


async def test_group_status() -> None:
    app = wrap(inner(), group_status=True)
    await get_all(app, ["/users/1", "/nope", "/nope2"])
    families = await scrape(app)
    assert request_count(families, "/users/{user_id}", status="2xx") == 1
    assert request_count(families, "__unmatched__", status="4xx") == 2
    assert {labels["status"] for labels, _ in samples(families, REQUEST)} == {"2xx", "4xx"}


async def test_exclude_paths_is_exact_and_exclude_patterns_is_a_full_match() -> None:
    app = wrap(inner(), exclude_paths=["/health"], exclude_patterns=[r"/static/.*\.css"])
    statuses = await get_all(
        app, ["/health", "/healthz", "/health/", "/static/a.css", "/static/a.js",
              "/x/static/a.css"])
    assert statuses == [200, 200, 307, 200, 200, 404]
    families = await scrape(app)
    assert request_count(families, "/health") == 0
    assert request_count(families, "/healthz") == 1
    assert request_count(families, "__unmatched__", status="307") == 1
    assert request_count(families, "/static/{name}") == 1
    assert request_count(families, "__unmatched__", status="404") == 1
    assert sum(value for _, value in samples(families, REQUEST)) == 4


async def test_custom_registry_receives_the_metrics() -> None:
    registry = CollectorRegistry()
    # A namespace no other test uses: other tests register in the default registry.
    app = MetricsMiddleware(inner(), registry=registry, namespace="custom_registry_test")
    await get_all(app, ["/users/1"])
    text = generate_latest(registry).decode()
    assert sample(parse_families(text), "custom_registry_test_http_requests_total",
                  {"method": "GET", "route": "/users/{user_id}", "status": "200"}) == 1
    assert "custom_registry_test_" not in generate_latest(REGISTRY).decode()


async def test_const_labels_on_every_series() -> None:
    app = wrap(inner(), const_labels={"service": "shop", "region": "eu"})
    await get_all(app, ["/users/1"])
    async with client(app) as http:
        task_free = await http.get("/metrics")
    families = parse_families(task_free.text)
    labelled = [labels for family in families.values() for s in family.samples
                for labels in [s.labels]]
    assert labelled
    assert all(labels["service"] == "shop" and labels["region"] == "eu" for labels in labelled)
    assert sample(families, REQUEST, {"method": "GET", "route": "/users/{user_id}",
                                      "status": "200", "service": "shop", "region": "eu"}) == 1


async def test_size_and_ttfb_histograms_are_off_by_default() -> None:
    app = wrap(inner())
    async with client(app) as http:
        await http.post("/echo", content=b"x" * 10)
    families = await scrape(app)
    assert not [name for name in families if "size" in name or "first_byte" in name]


async def test_size_and_ttfb_histograms_when_on() -> None:
    app = wrap(inner(), request_size=True, response_size=True, time_to_first_byte=True)
    async with client(app) as http:
        await http.post("/echo", content=b"x" * 150)
        await http.post("/echo", content=b"x" * 60)
    families = await scrape(app)
    labels = {"method": "POST", "route": "/echo", "status": "200"}
    assert sample(families, "http_request_size_bytes_sum", labels) == 210
    assert sample(families, "http_request_size_bytes_count", labels) == 2
    assert sample(families, "http_response_size_bytes_sum", labels) == 420
    assert sample(families, "http_response_size_bytes_bucket", {**labels, "le": "100.0"}) == 0
    assert sample(families, "http_response_size_bytes_bucket", {**labels, "le": "1000.0"}) == 2
    assert sample(families, "http_request_size_bytes_bucket", {**labels, "le": "100.0"}) == 1
    assert sample(families, "http_request_time_to_first_byte_seconds_count", labels) == 2
    ttfb = sample(families, "http_request_time_to_first_byte_seconds_sum", labels)
    assert 0 < ttfb <= sample(families, "http_request_duration_seconds_sum", labels)


async def test_otel_naming_preset() -> None:
    app = wrap(inner(), naming="otel")
    await get_all(app, ["/users/1", "/users/2"])
    families = await scrape(app)
    own = {name for name in families if name.startswith("http_server_metrics_")}
    assert own == {
        "http_server_metrics_label_values_folded", "http_server_metrics_label_sets_overflowed",
        "http_server_metrics_recording_failures", "http_server_metrics_scrapes",
        "http_server_metrics_scrape_render_seconds",
    }
    assert set(families) - own == {
        "http_server_request_duration_seconds",
        "http_server_active_requests",
        "http_server_request_exceptions",
    }
    labels = {"http_request_method": "GET", "http_route": "/users/{user_id}",
              "http_response_status_code": "200"}
    assert sample(families, "http_server_request_duration_seconds_count", labels) == 2
    assert samples(families, "http_server_active_requests") == [
        ({"http_request_method": "GET"}, 0.0)
    ]


async def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_METRICS_NAMESPACE", "envns")
    monkeypatch.setenv("HTTP_METRICS_BUCKETS", "0.25, 1")
    monkeypatch.setenv("HTTP_METRICS_GROUP_STATUS", "true")
    monkeypatch.setenv("HTTP_METRICS_EXCLUDE_PATHS", "/health,/healthz")
    monkeypatch.setenv("HTTP_METRICS_EXCLUDE_PATTERNS", r"/static/.*")
    monkeypatch.setenv("HTTP_METRICS_CONST_LABELS", "service=shop, region=eu")
    monkeypatch.setenv("HTTP_METRICS_METRICS_PATH", "/prom")
    monkeypatch.setenv("HTTP_METRICS_REQUEST_SIZE", "yes")
    app = wrap(inner())
    await get_all(app, ["/users/1", "/health", "/healthz", "/static/a"])
    families = await scrape(app, "/prom")
    labels = {"method": "GET", "route": "/users/{user_id}", "status": "2xx",
              "service": "shop", "region": "eu"}
    assert sample(families, "envns_http_requests_total", labels) == 1
    assert sum(value for _, value in samples(families, "envns_http_requests_total")) == 1
    les = {lab["le"] for lab, _ in samples(families, "envns_http_request_duration_seconds_bucket")}
    assert les == {"0.25", "1.0", "+Inf"}
    assert sample(families, "envns_http_request_size_bytes_count", labels) == 1
    # Explicit options win over the environment.
    explicit = wrap(inner(), namespace="mine", metrics_path="/metrics")
    await get_all(explicit, ["/users/1"])
    assert "mine_http_requests_total" in await scrape_text(explicit)


async def test_environment_can_turn_the_endpoint_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_METRICS_METRICS_PATH", "off")
    app = wrap(inner())
    assert await get_all(app, ["/metrics"]) == [404]


def error_for(**options: Any) -> str:
    with pytest.raises(ConfigurationError) as raised:
        MetricsMiddleware(inner(), **options)
    return str(raised.value)


def test_unknown_setting_with_a_suggestion() -> None:
    message = error_for(namspace="x")
    assert "namspace" in message and "did you mean 'namespace'" in message
    assert "buckets" in error_for(bukets=[1])


@pytest.mark.parametrize(
    "buckets",
    [[], [2, 1], [1, 1], ["a"], "0.1,1", [float("nan")], [True, 2], None, [1, float("-inf")]],
)
def test_bad_buckets(buckets: Any) -> None:
    assert "'buckets'" in error_for(buckets=buckets)


def test_bad_regex() -> None:
    message = error_for(exclude_patterns=["/static/("])
    assert "'exclude_patterns'" in message and "/static/(" in message
    assert "'exclude_patterns'" in error_for(exclude_patterns="/static/.*")


@pytest.mark.parametrize("namespace", ["1shop", "my-app", "a b", 3, None])
def test_bad_namespace(namespace: Any) -> None:
    assert "'namespace'" in error_for(namespace=namespace)


@pytest.mark.parametrize(
    ("options", "clash"),
    [
        ({"const_labels": {"route": "x"}}, "route"),
        ({"const_labels": {"le": "x"}}, "le"),
        ({"const_labels": {"exception_type": "x"}}, "exception_type"),
        ({"const_labels": {"http_route": "x"}, "naming": "otel"}, "http_route"),
    ],
)
def test_const_label_clash(options: dict[str, Any], clash: str) -> None:
    message = error_for(**options)
    assert "'const_labels'" in message and clash in message


@pytest.mark.parametrize("labels", [{"bad-name": "x"}, {"__reserved": "x"}, {"ok": 1}, ["a"]])
def test_bad_const_labels(labels: Any) -> None:
    assert "'const_labels'" in error_for(const_labels=labels)


@pytest.mark.parametrize(
    ("value", "type_name"), [(1, "int"), (None, "NoneType"), (b"eu", "bytes"), (["eu"], "list")]
)
def test_const_label_value_not_a_string_says_so(value: Any, type_name: str) -> None:
    message = error_for(const_labels={"service": "shop", "region": value})
    assert message.startswith("setting 'const_labels': ")
    assert "values must be strings" in message
    assert "'region'" in message and "'service'" not in message
    assert f"of type {type_name}" in message


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"naming": "prometheus"}, "naming"),
        ({"group_status": "yes"}, "group_status"),
        ({"exclude_paths": ["health"]}, "exclude_paths"),
        ({"exclude_paths": "/health"}, "exclude_paths"),
        ({"metrics_path": "metrics"}, "metrics_path"),
        ({"registry": "default"}, "registry"),
        ({"request_size": 1}, "request_size"),
        ({"size_buckets": [10, 5]}, "size_buckets"),
        ({"route_resolver": "/users/{id}"}, "route_resolver"),
    ],
)
def test_other_bad_settings_name_the_setting(options: dict[str, Any], setting: str) -> None:
    assert f"'{setting}'" in error_for(**options)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HTTP_METRICS_GROUP_STATUS", "maybe"),
        ("HTTP_METRICS_BUCKETS", "0.1,fast"),
        ("HTTP_METRICS_BUCKETS", "1,0.5"),
        ("HTTP_METRICS_NAMESPACE", "my-app"),
        ("HTTP_METRICS_CONST_LABELS", "service"),
        ("HTTP_METRICS_EXCLUDE_PATTERNS", "("),
        ("HTTP_METRICS_NAMSPACE", "x"),
        ("HTTP_METRICS_REGISTRY", "x"),
    ],
)
def test_bad_environment_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as raised:
        MetricsMiddleware(inner(), registry=CollectorRegistry())
    assert variable in str(raised.value)


def test_configuration_error_is_raised_by_add_middleware_at_startup() -> None:
    app = inner()
    app.add_middleware(MetricsMiddleware, buckets=[3, 2])
    with pytest.raises(ConfigurationError, match=re.escape("'buckets'")):
        app.build_middleware_stack()
