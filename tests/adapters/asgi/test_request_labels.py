"""Issue 13 through real Starlette and FastAPI: labels from the request (headers, response
headers, callables, set_label), always bounded; exclude_methods, do_not_track,
in_flight_by_route, count_unmatched and the enabled switch."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Mount, Route

from asgi_metrics import (
    ConfigurationError,
    MetricsMiddleware,
    RequestView,
    do_not_track,
    from_header,
    from_response_header,
    set_label,
)
from tests.support.asgi import client, scrape, scrape_text
from tests.support.scrape import (
    DURATION,
    EXCEPTIONS,
    IN_FLIGHT,
    REQUEST,
    parse_families,
    sample,
    samples,
)

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


def labelled(app: Any, **options: Any) -> Any:
    options.setdefault("registry", CollectorRegistry())
    app.add_middleware(MetricsMiddleware, **options)
    return app


def fastapi_app() -> FastAPI:
    app = FastAPI()

    def tenant_from_auth(request: Request) -> None:
        # An auth dependency that knows the tenant.
        token = request.headers.get("authorization", "")
        if token.startswith("Bearer "):
            set_label("tenant", token.removeprefix("Bearer "))

    @app.get("/users/{user_id}", dependencies=[Depends(tenant_from_auth)])
    async def user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    @app.get("/sync")
    def sync_view() -> dict[str, str]:  # runs in Starlette's thread pool
        set_label("tenant", "pool")
        return {}

    @app.get("/cached")
    async def cached() -> PlainTextResponse:
        return PlainTextResponse("x", headers={"X-Cache": "HIT"})

    @app.get("/boom")
    async def boom() -> None:
        raise Boom

    @do_not_track
    @app.get("/health")
    async def health() -> dict[str, str]:
        return {}

    @app.get("/ready")
    @do_not_track
    async def ready() -> dict[str, str]:
        return {}

    return app


def request_samples(families: Any, name: str = REQUEST) -> dict[tuple[str, ...], float]:
    return {
        tuple(sorted(labels.items())): value for labels, value in samples(families, name)
    }


def key(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


async def test_header_label_allowed_and_folded() -> None:
    app = labelled(
        fastapi_app(), labels={"tenant": from_header("X-Tenant", allowed=["acme", "globex"])}
    )
    async with client(app) as http:
        for tenant in ("acme", "acme", "globex", "initech"):
            assert (await http.get("/users/1", headers={"x-tenant": tenant})).status_code == 200
        await http.get("/users/2")  # no header: the default
    families = await scrape(app)
    common = {"method": "GET", "route": "/users/{user_id}", "status": "200"}
    assert request_samples(families) == {
        key(**common, tenant="acme"): 2.0,
        key(**common, tenant="globex"): 1.0,
        key(**common, tenant="__other__"): 1.0,
        key(**common, tenant=""): 1.0,
    }
    # The duration histogram has the label too, with the same counts.
    assert sample(families, f"{DURATION}_count", {**common, "tenant": "acme"}) == 2.0


async def test_set_label_from_a_dependency_and_a_sync_view_wins_and_is_forgotten() -> None:
    app = labelled(
        fastapi_app(), labels={"tenant": from_header("X-Tenant", default="anonymous")}
    )
    async with client(app) as http:
        await http.get("/users/1", headers={"authorization": "Bearer acme", "x-tenant": "no"})
        await http.get("/users/1")  # the same task: nothing left over from the first
        await http.get("/sync")
    families = await scrape(app)
    route = {"method": "GET", "route": "/users/{user_id}", "status": "200"}
    assert sample(families, REQUEST, {**route, "tenant": "acme"}) == 1.0
    assert sample(families, REQUEST, {**route, "tenant": "anonymous"}) == 1.0
    assert sample(
        families, REQUEST, {"method": "GET", "route": "/sync", "status": "200", "tenant": "pool"}
    ) == 1.0


async def test_set_label_outside_a_request_or_undeclared_does_nothing() -> None:
    set_label("tenant", "nobody")  # no request: no error, no effect
    app = labelled(fastapi_app(), labels={"plan": from_header("X-Plan")})
    async with client(app) as http:
        await http.get("/sync")  # sets "tenant", which is not declared
    families = await scrape(app)
    assert sample(
        families, REQUEST, {"method": "GET", "route": "/sync", "status": "200", "plan": ""}
    ) == 1.0


async def test_capped_label_keeps_max_label_values_then_folds_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = labelled(fastapi_app(), labels={"client": from_header("X-Client")}, max_label_values=3)
    with caplog.at_level(logging.WARNING, logger="asgi_metrics"):
        async with client(app) as http:
            for index in range(10):
                await http.get("/users/1", headers={"x-client": f"app{index}"})
            await http.get("/users/1", headers={"x-client": "app1"})  # kept: still its own
    families = await scrape(app)
    values = {labels["client"]: value for labels, value in samples(families, REQUEST)}
    assert values == {"app0": 1.0, "app1": 2.0, "app2": 1.0, "__other__": 7.0}
    warnings = [r for r in caplog.records if "max_label_values=3" in r.getMessage()]
    assert len(warnings) == 1 and "'client'" in warnings[0].getMessage()


async def test_paths_and_long_values_are_never_label_values() -> None:
    app = labelled(fastapi_app(), labels={"origin": from_header("X-Origin")})
    async with client(app) as http:
        await http.get("/users/1", headers={"x-origin": "/users/42"})
        await http.get("/users/1", headers={"x-origin": "x" * 129})
        await http.get("/users/1", headers={"x-origin": "x" * 128})
    families = await scrape(app)
    values = {labels["origin"]: value for labels, value in samples(families, REQUEST)}
    assert values == {"__other__": 2.0, "x" * 128: 1.0}


async def test_response_header_and_callable_sources() -> None:
    seen: list[RequestView] = []

    def api_version(view: RequestView) -> str:
        seen.append(view)
        return view.request_headers.get("accept-version", "v1")

    app = labelled(
        fastapi_app(),
        labels={
            "cache": from_response_header("X-Cache", allowed=["HIT", "MISS"], default="none"),
            "version": api_version,
        },
    )
    async with client(app) as http:
        await http.get("/cached", headers={"Accept-Version": "v2"})
        await http.get("/users/3")
    families = await scrape(app)
    assert sample(families, REQUEST, {
        "method": "GET", "route": "/cached", "status": "200", "cache": "HIT", "version": "v2",
    }) == 1.0
    assert sample(families, REQUEST, {
        "method": "GET", "route": "/users/{user_id}", "status": "200", "cache": "none",
        "version": "v1",
    }) == 1.0
    view = seen[0]
    assert (view.method, view.route, view.status) == ("GET", "/cached", 200)
    assert view.response_headers["x-cache"] == "HIT"
    assert view.raw["type"] == "http"


async def test_a_failing_source_records_the_default_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(view: RequestView) -> str:
        raise RuntimeError("no")

    app = labelled(fastapi_app(), labels={"tenant": broken})
    with caplog.at_level(logging.ERROR, logger="asgi_metrics"):
        async with client(app) as http:
            for _ in range(3):
                assert (await http.get("/users/1")).status_code == 200
    families = await scrape(app)
    assert sample(families, REQUEST, {
        "method": "GET", "route": "/users/{user_id}", "status": "200", "tenant": "",
    }) == 3.0
    assert len([r for r in caplog.records if "label 'tenant'" in r.getMessage()]) == 1


async def test_labels_on_exceptions_and_optional_histograms_in_both_presets() -> None:
    for naming, exceptions, size in (
        ("default", EXCEPTIONS, "http_response_size_bytes_count"),
        ("otel", "http_server_request_exceptions_total",
         "http_server_response_body_size_bytes_count"),
    ):
        app = labelled(
            fastapi_app(), naming=naming, response_size=True, request_size=True,
            time_to_first_byte=True, labels={"tenant": from_header("X-Tenant")},
        )
        async with client(app) as http:
            with pytest.raises(Boom):
                await http.get("/boom", headers={"x-tenant": "acme"})
            await http.get("/cached", headers={"x-tenant": "acme"})
        families = await scrape(app)
        for name in (exceptions, size):
            found = samples(families, name)
            assert found and all(labels["tenant"] == "acme" for labels, _ in found), name
        ttfb = [n for n in families if "first_byte" in n]
        assert ttfb and all(
            labels["tenant"] == "acme"
            for labels, _ in samples(families, f"{ttfb[0]}_count")
        )


async def test_the_family_cap_holds_on_top_of_the_label_bounds() -> None:
    app = labelled(
        fastapi_app(), labels={"a": from_header("X-A"), "b": from_header("X-B")},
        max_label_values=50, max_label_sets=10,
    )
    async with client(app) as http:
        for index in range(30):
            await http.get("/users/1", headers={"x-a": f"a{index}", "x-b": f"b{index}"})
    families = await scrape(app)
    found = samples(families, REQUEST)
    assert len(found) == 10
    assert sum(value for _, value in found) == 30.0
    assert {"a": "__overflow__", "b": "__overflow__"}.items() <= dict(
        next(labels for labels, _ in found if labels["route"] == "__overflow__")
    ).items()


@pytest.mark.parametrize("name", ["route", "le", "__tenant", "1tenant", "method", "status"])
def test_bad_label_names_fail_at_start_up(name: str) -> None:
    with pytest.raises(ConfigurationError, match="labels"):
        MetricsMiddleware(
            Starlette(), registry=CollectorRegistry(), labels={name: from_header("X-T")}
        )


def test_a_label_clashing_with_const_labels_or_a_bad_source_fails() -> None:
    with pytest.raises(ConfigurationError, match="const_labels"):
        MetricsMiddleware(
            Starlette(), registry=CollectorRegistry(), labels={"region": from_header("X")},
            const_labels={"region": "eu"},
        )
    with pytest.raises(ConfigurationError, match="'tenant'"):
        MetricsMiddleware(Starlette(), registry=CollectorRegistry(), labels={"tenant": 3})
    with pytest.raises(ConfigurationError, match="header name"):
        MetricsMiddleware(
            Starlette(), registry=CollectorRegistry(), labels={"t": from_header("X Tenant")}
        )
    with pytest.raises(ConfigurationError, match="http_request_method"):
        MetricsMiddleware(
            Starlette(), registry=CollectorRegistry(), naming="otel",
            labels={"http_request_method": from_header("X")},
        )


async def test_exclude_methods() -> None:
    app = labelled(fastapi_app(), exclude_methods=["OPTIONS", "HEAD"])
    async with client(app) as http:
        await http.options("/users/1")
        await http.head("/users/1")
        await http.get("/users/1")
    families = await scrape(app)
    assert {labels["method"] for labels, _ in samples(families, REQUEST)} == {"GET"}
    assert {labels["method"] for labels, _ in samples(families, IN_FLIGHT)} == {"GET"}


def test_exclude_methods_refuses_lower_case_standard_methods() -> None:
    with pytest.raises(ConfigurationError, match="exclude_methods"):
        MetricsMiddleware(Starlette(), registry=CollectorRegistry(), exclude_methods=["options"])


async def test_do_not_track_on_functions_classes_in_either_order() -> None:
    class Quiet(HTTPEndpoint):
        async def get(self, request: Request) -> PlainTextResponse:
            return PlainTextResponse("quiet")

    async def loud(request: Request) -> PlainTextResponse:
        return PlainTextResponse("loud")

    starlette = Starlette(routes=[
        Route("/quiet", do_not_track(Quiet)),
        Route("/loud", loud),
        Mount("/sub", routes=[Route("/quiet", do_not_track(Quiet))]),
    ])
    for app, paths, tracked in (
        (labelled(fastapi_app()), ("/health", "/ready", "/users/1"), "/users/{user_id}"),
        (labelled(starlette), ("/quiet", "/sub/quiet", "/loud"), "/loud"),
    ):
        async with client(app) as http:
            for path in paths:
                assert (await http.get(path)).status_code == 200
        families = await scrape(app)
        assert {labels["route"] for labels, _ in samples(families, REQUEST)} == {tracked}
        assert sum(value for _, value in samples(families, IN_FLIGHT)) == 0.0


async def test_count_unmatched() -> None:
    counted = labelled(fastapi_app())
    dropped = labelled(fastapi_app(), count_unmatched=False)
    for app in (counted, dropped):
        async with client(app) as http:
            assert (await http.get("/nowhere")).status_code == 404
            await http.get("/users/1")
    assert {labels["route"] for labels, _ in samples(await scrape(counted), REQUEST)} == {
        "__unmatched__", "/users/{user_id}",
    }
    families = await scrape(dropped)
    assert {labels["route"] for labels, _ in samples(families, REQUEST)} == {"/users/{user_id}"}
    assert sum(value for _, value in samples(families, IN_FLIGHT)) == 0.0


async def test_in_flight_by_route_shows_a_stuck_request_under_its_route() -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    async def stuck(request: Request) -> PlainTextResponse:
        entered.set()
        await release.wait()
        return PlainTextResponse("done")

    async def stream(request: Request) -> StreamingResponse:
        async def body() -> Any:
            yield b"a"
            await release.wait()
            yield b"b"

        return StreamingResponse(body())

    app = labelled(
        Starlette(routes=[Route("/stuck/{n}", stuck), Route("/stream", stream)]),
        in_flight_by_route=True,
    )
    async with client(app) as http:
        tasks = [asyncio.ensure_future(http.get(f"/stuck/{n}")) for n in range(3)]
        tasks.append(asyncio.ensure_future(http.get("/stream")))
        await entered.wait()
        for _ in range(50):
            families = await scrape(app)
            if sample(families, IN_FLIGHT, {"method": "GET", "route": "/stuck/{n}"}) == 3.0:
                break
            await asyncio.sleep(0.01)
        assert sample(families, IN_FLIGHT, {"method": "GET", "route": "/stuck/{n}"}) == 3.0
        assert sample(families, IN_FLIGHT, {"method": "GET", "route": "/stream"}) == 1.0
        release.set()
        responses = [await task for task in tasks]
        assert [response.status_code for response in responses] == [200] * 4
    families = await scrape(app)
    assert samples(families, IN_FLIGHT) == []
    stuck_route = {"method": "GET", "route": "/stuck/{n}", "status": "200"}
    assert sample(families, REQUEST, stuck_route) == 3.0


async def test_enabled_false_is_a_pass_through() -> None:
    registry = CollectorRegistry()
    plain = fastapi_app()
    off = labelled(fastapi_app(), registry=registry, enabled=False)
    async with client(plain) as a, client(off) as b:
        for path in ("/users/1", "/cached", "/metrics", "/nowhere"):
            first, second = await a.get(path), await b.get(path)
            assert (first.status_code, first.content, first.headers.get("x-cache")) == (
                second.status_code, second.content, second.headers.get("x-cache"),
            )
    assert (await httpx.AsyncClient(
        transport=httpx.ASGITransport(app=off), base_url="http://t"
    ).get("/metrics")).status_code == 404
    assert generate_latest(registry) == b""


def test_enabled_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_METRICS_ENABLED", "false")
    registry = CollectorRegistry()
    MetricsMiddleware(Starlette(), registry=registry)
    assert generate_latest(registry) == b""


async def test_self_metrics_count_folds_overflows_failures_and_scrapes() -> None:
    def broken(view: RequestView) -> str:
        raise RuntimeError("no")

    app = labelled(
        fastapi_app(),
        labels={"tenant": from_header("X-Tenant", allowed=["acme"]), "bad": broken},
        max_label_sets=3, metrics_bearer_token="s3cret",
    )
    auth = {"authorization": "Bearer s3cret"}
    async with client(app) as http:
        for index in range(6):
            await http.get(f"/users/{index}", headers={"x-tenant": f"t{index}"})
        for index in range(5):
            await http.get(f"/nowhere/{index}", headers={"x-tenant": "acme"})
            await http.get(f"/sync?{index}")
        assert (await http.get("/metrics")).status_code == 401
        await http.get("/metrics", headers=auth)
        families = parse_families(await scrape_text(app, headers=auth))
    # Six tenants not allowed, and five set_label("tenant", "pool") in /sync.
    assert sample(families, "http_metrics_label_values_folded_total", {"label": "tenant"}) == 11.0
    # (GET, /users/{user_id}, 200, __other__, ""), (GET, __unmatched__, 404, acme, ""), then
    # the cap's last slot is the overflow: every /sync request is folded.
    assert sample(
        families, "http_metrics_label_sets_overflowed_total", {"family": "http_requests"}
    ) == 5.0
    assert sample(
        families, "http_metrics_recording_failures_total", {"stage": "reading the label 'bad'"}
    ) == 16.0
    assert sample(families, "http_metrics_scrapes_total", {"result": "unauthorized"}) == 1.0
    assert sample(families, "http_metrics_scrapes_total", {"result": "answered"}) == 2.0
    assert sample(families, "http_metrics_scrape_render_seconds_count") == 1.0


async def test_requests_never_recorded_take_no_label_value_places() -> None:
    app = labelled(
        fastapi_app(), labels={"tenant": from_header("X-Tenant")}, max_label_values=2,
        count_unmatched=False,
    )
    async with client(app) as http:
        for probe in ("probe1", "probe2"):
            await http.get("/health", headers={"x-tenant": probe})  # do_not_track
            await http.get("/nowhere", headers={"x-tenant": probe})  # unmatched, dropped
        for tenant in ("acme", "beta"):
            await http.get("/users/1", headers={"x-tenant": tenant})
    families = await scrape(app)
    assert {labels["tenant"] for labels, _ in samples(families, REQUEST)} == {"acme", "beta"}
