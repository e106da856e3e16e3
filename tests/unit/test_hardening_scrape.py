"""Protecting /metrics: credentials, the separate listener, scrape storms."""

from __future__ import annotations

import asyncio
import base64
import gzip
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from asgi_metrics import (
    ConfigurationError,
    MetricsMiddleware,
    Settings,
    metrics_app,
    start_metrics_server,
)
from asgi_metrics.exposition.auth import MetricsAuth
from asgi_metrics.exposition.scrape import Exposition
from tests.support.asgi import call_asgi, fetch_metrics, uvicorn_scope
from tests.support.scrape import series_of

TOKEN = "tok-3f9a"  # not a real secret


async def _hello(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hi"})


def _basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


# --- credentials ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "good", "challenge"),
    [
        ({"metrics_bearer_token": TOKEN}, b"Bearer " + TOKEN.encode(),
         'Bearer realm="metrics"'),
        ({"metrics_basic_auth": ("prom", "pä55")}, _basic("prom", "pä55"),
         'Basic realm="metrics", charset="UTF-8"'),
        ({"metrics_basic_auth": "prom:pa:ss"}, _basic("prom", "pa:ss"),
         'Basic realm="metrics", charset="UTF-8"'),
    ],
)
def test_credentials_are_required_and_failures_are_not_app_traffic(
    options: dict[str, Any], good: bytes, challenge: str
) -> None:
    app = MetricsMiddleware(_hello, registry=CollectorRegistry(), **options)
    bad_values = [
        None, b"", b"Bearer", b"Bearer wrong", b"Bearer " + TOKEN.encode() + b"x",
        _basic("prom", "wrong"), _basic("other", "pä55"), b"Basic !!notbase64!!",
        b"Digest abc", good.swapcase(),  # the scheme is case-insensitive, the secret not
    ]

    async def go() -> None:
        sent, _ = await call_asgi(app, uvicorn_scope("/hello"))
        assert sent[0]["status"] == 200
        for bad in bad_values:
            headers = [] if bad is None else [(b"authorization", bad)]
            sent, exc = await call_asgi(app, uvicorn_scope("/metrics", headers=headers))
            assert exc is None
            assert sent[0]["status"] == 401, bad
            assert (b"www-authenticate", challenge.encode()) in sent[0]["headers"]
            body = sent[1]["body"]
            assert b"http_requests_total" not in body
        status, text = await fetch_metrics(app, [(b"authorization", good)])
        assert status == 200
        # Only the one app request: neither the 401s nor the scrapes are counted.
        assert sum(series_of(text, "http_requests_total").values()) == 1

    asyncio.run(go())


def test_scheme_is_case_insensitive_and_both_kinds_can_be_on() -> None:
    auth = MetricsAuth(TOKEN, ("u", "p"))
    assert auth.allows("bearer " + TOKEN)
    assert auth.allows("BEARER  " + TOKEN)
    assert auth.allows(_basic("u", "p").decode())
    assert not auth.allows("Bearer " + TOKEN[:-1])
    assert len(auth.challenge()) == 2
    assert TOKEN not in repr(auth) and "'p'" not in repr(auth)
    assert MetricsAuth().allows(None)


def test_secrets_come_from_the_environment_and_never_show() -> None:
    env = {
        "HTTP_METRICS_METRICS_BEARER_TOKEN": TOKEN,
        "HTTP_METRICS_METRICS_BASIC_AUTH": "prom:s3cr3t-pw",
    }
    settings = Settings.build({}, env)
    assert settings.metrics_bearer_token == TOKEN
    assert settings.metrics_basic_auth == ("prom", "s3cr3t-pw")
    assert TOKEN not in repr(settings) and "s3cr3t-pw" not in repr(settings)
    assert TOKEN not in str(settings)


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"metrics_bearer_token": ""}, "metrics_bearer_token"),
        ({"metrics_bearer_token": "   "}, "metrics_bearer_token"),
        ({"metrics_bearer_token": " padded-s3cret "}, "metrics_bearer_token"),
        ({"metrics_bearer_token": 12345}, "metrics_bearer_token"),
        ({"metrics_basic_auth": ("prom", "")}, "metrics_basic_auth"),
        ({"metrics_basic_auth": "nocolon-s3cret"}, "metrics_basic_auth"),
        ({"metrics_basic_auth": ("a:b", "s3cret")}, "metrics_basic_auth"),
        ({"metrics_basic_auth": ("prom", "s3cret", "x")}, "metrics_basic_auth"),
        ({"max_concurrent_scrapes": 0}, "max_concurrent_scrapes"),
    ],
)
def test_bad_secrets_fail_at_start_without_showing_them(
    options: dict[str, Any], setting: str
) -> None:
    with pytest.raises(ConfigurationError, match=setting) as caught:
        MetricsMiddleware(_hello, registry=CollectorRegistry(), **options)
    assert "s3cret" not in str(caught.value)


def test_bad_secret_in_environment_is_not_echoed() -> None:
    with pytest.raises(ConfigurationError, match="HTTP_METRICS_METRICS_BASIC_AUTH") as caught:
        Settings.build({}, {"HTTP_METRICS_METRICS_BASIC_AUTH": "s3cret-without-colon"})
    assert "s3cret" not in str(caught.value)


def test_mounted_metrics_app_takes_credentials() -> None:
    app = metrics_app(CollectorRegistry(), bearer_token=TOKEN)

    async def go() -> None:
        assert (await fetch_metrics(app))[0] == 401
        bearer = [(b"authorization", b"Bearer " + TOKEN.encode())]
        assert (await fetch_metrics(app, bearer))[0] == 200

    asyncio.run(go())


# --- the separate listener --------------------------------------------------------------


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_separate_listener_serves_the_middleware_store_only_there() -> None:
    registry = CollectorRegistry()
    app = MetricsMiddleware(_hello, registry=registry, metrics_path=None)
    asyncio.run(call_asgi(app, uvicorn_scope("/hello")))
    # The public app has no /metrics at all.
    sent, _ = asyncio.run(call_asgi(app, uvicorn_scope("/metrics")))
    assert sent[1]["body"] == b"hi"
    with start_metrics_server(0, registry=registry) as server:
        assert server.port > 0 and server.addr == "127.0.0.1"
        status, headers, body = _get(server.url)
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = body.decode()
        totals = series_of(text, "http_requests_total")
        # the app request and the /metrics request that the public app passed through
        assert sum(totals.values()) == 2
        status, headers, body = _get(server.url, {"Accept-Encoding": "gzip"})
        assert headers["Content-Encoding"] == "gzip"
        assert b"http_requests_total" in gzip.decompress(body)
        status, headers, _ = _get(
            server.url, {"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        assert headers["Content-Type"].startswith("application/openmetrics-text")
        assert _get(server.url.replace("/metrics", "/other"))[0] == 404
    with pytest.raises(OSError):
        _get(server.url)  # closed: the port is released


def test_separate_listener_with_credentials() -> None:
    registry = CollectorRegistry()
    Counter("jobs", "Jobs.", registry=registry).inc()
    with start_metrics_server(0, registry=registry, basic_auth=("prom", "pw")) as server:
        status, headers, _ = _get(server.url)
        assert status == 401
        assert headers["WWW-Authenticate"] == 'Basic realm="metrics", charset="UTF-8"'
        auth = {"Authorization": _basic("prom", "pw").decode()}
        status, _, body = _get(server.url, auth)
        assert status == 200 and b"jobs_total 1.0" in body


def test_separate_listener_takes_credentials_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_METRICS_METRICS_BEARER_TOKEN", TOKEN)
    with start_metrics_server(0, registry=CollectorRegistry()) as server:
        assert _get(server.url)[0] == 401
        assert _get(server.url, {"Authorization": f"Bearer {TOKEN}"})[0] == 200


# --- scrape storms ----------------------------------------------------------------------


class _SlowExposition(Exposition):
    """Counts renderings and makes each one slow, so scrapes overlap."""

    def __init__(self, delay: float, **kwargs: Any) -> None:
        super().__init__(CollectorRegistry(), **kwargs)
        self.delay = delay
        self.renders = 0
        self._count_lock = threading.Lock()

    def render(self, openmetrics: bool) -> bytes:
        with self._count_lock:
            self.renders += 1
        time.sleep(self.delay)
        return b"# rendered\n"


def test_threaded_scrape_storm_shares_renderings_and_sheds_load() -> None:
    exposition = _SlowExposition(0.3, max_concurrent_scrapes=4)
    results: list[int] = []
    lock = threading.Lock()

    def scrape_once() -> None:
        status, _, _ = exposition.respond("GET", None, None)
        with lock:
            results.append(status)

    threads = [threading.Thread(target=scrape_once) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(200) == 4 and results.count(503) == 16
    assert exposition.renders == 1  # the four admitted scrapes shared one rendering
    status, headers, _ = exposition.busy()
    assert status == 503 and ("Retry-After", "1") in headers
    # Afterwards: slots are free again, and a new scrape renders afresh.
    assert exposition.respond("GET", None, None)[0] == 200
    assert exposition.renders == 2


def test_asgi_scrape_storm_shares_renderings_and_does_not_block_the_loop() -> None:
    from asgi_metrics.asgi.endpoint import MetricsEndpoint

    exposition = _SlowExposition(0.3, max_concurrent_scrapes=4)
    endpoint = MetricsEndpoint(exposition)

    async def go() -> tuple[list[int], float]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick_task = asyncio.create_task(ticker())
        calls = [call_asgi(endpoint, uvicorn_scope("/metrics")) for _ in range(10)]
        calls += [call_asgi(endpoint, uvicorn_scope(
            "/metrics", headers=[(b"accept-encoding", b"gzip")]))]
        started = time.perf_counter()
        outcomes = await asyncio.gather(*calls)
        elapsed = time.perf_counter() - started
        tick_task.cancel()
        assert ticks > 0.5 * elapsed / 0.01  # the loop kept running while rendering
        return [sent[0]["status"] for sent, _ in outcomes], elapsed

    statuses, elapsed = asyncio.run(go())
    assert statuses.count(200) == 4 and statuses.count(503) == 7
    assert exposition.renders == 1
    assert elapsed < 2.0  # four overlapping 0.3 s scrapes rendered once, not 4 x 0.3 s


def test_asgi_scrapes_of_different_formats_render_separately() -> None:
    from asgi_metrics.asgi.endpoint import MetricsEndpoint

    exposition = _SlowExposition(0.1, max_concurrent_scrapes=10)
    endpoint = MetricsEndpoint(exposition)

    async def go() -> None:
        openmetrics = [(b"accept", b"application/openmetrics-text; version=1.0.0")]
        calls = [call_asgi(endpoint, uvicorn_scope("/metrics")) for _ in range(3)]
        calls += [call_asgi(endpoint, uvicorn_scope("/metrics", headers=openmetrics))
                  for _ in range(3)]
        outcomes = await asyncio.gather(*calls)
        assert all(sent[0]["status"] == 200 for sent, _ in outcomes)

    asyncio.run(go())
    assert exposition.renders == 2


def test_a_failed_rendering_reaches_every_waiting_scrape() -> None:
    class Failing(_SlowExposition):
        def render(self, openmetrics: bool) -> bytes:
            super().render(openmetrics)
            raise RuntimeError("collector broke")

    exposition = Failing(0.2, max_concurrent_scrapes=4)
    errors: list[BaseException] = []

    def scrape_once() -> None:
        try:
            exposition.respond("GET", None, None)
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=scrape_once) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 3 and exposition.renders == 1
    # Slots were released despite the failure.
    assert exposition.admit() and exposition.admit()


def test_separate_listener_renders_the_multiprocess_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with start_metrics_server(0, registry=CollectorRegistry(), bearer_token=TOKEN) as server:
        # Through the shared Exposition: multiprocess aggregation and credentials both apply.
        assert server._server.exposition.multiprocess_dir is not None
        assert _get(server.url)[0] == 401
        assert _get(server.url, {"Authorization": f"Bearer {TOKEN}"})[0] == 200
