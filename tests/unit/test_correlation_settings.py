"""Correlation and tracing settings: validated once, errors name the setting."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import textwrap

import pytest

from asgi_metrics import ConfigurationError, Settings
from tests.support.paths import ROOT


def build(**options: object) -> Settings:
    return Settings.build(options, environ={})


def test_defaults() -> None:
    settings = build()
    assert settings.correlation_id is False
    assert settings.correlation_header == "X-Request-ID"
    assert settings.exemplars is True
    assert settings.trusted_proxies == ()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("correlation_id", "yes"),
        ("correlation_header", "X Request"),
        ("correlation_header", "X-Req\r\n"),
        ("correlation_header", ""),
        ("correlation_id_validator", "not callable"),
        ("trusted_proxies", "10.0.0.1"),
        ("trusted_proxies", ["10.0.0.300"]),
        ("trace_id_as_correlation_id", 1),
        ("exemplars", None),
        ("otel_metrics", "on"),
    ],
)
def test_bad_values_name_the_setting(name: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=f"setting '{name}'"):
        build(**{name: value})


def test_trusted_proxies_parsed() -> None:
    settings = build(trusted_proxies=["10.0.0.0/8", "192.0.2.1", "::1"])
    assert settings.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.1/32"),
        ipaddress.ip_network("::1/128"),
    )


def test_environment_variables() -> None:
    settings = Settings.build({}, environ={
        "HTTP_METRICS_CORRELATION_ID": "true",
        "HTTP_METRICS_CORRELATION_HEADER": "X-Correlation-ID",
        "HTTP_METRICS_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1",
        "HTTP_METRICS_TRACE_ID_AS_CORRELATION_ID": "1",
        "HTTP_METRICS_EXEMPLARS": "off",
    })
    assert settings.correlation_id and settings.trace_id_as_correlation_id
    assert settings.correlation_header == "X-Correlation-ID"
    assert len(settings.trusted_proxies) == 2
    assert settings.exemplars is False
    with pytest.raises(ConfigurationError, match="HTTP_METRICS_CORRELATION_ID_VALIDATOR"):
        Settings.build({}, environ={"HTTP_METRICS_CORRELATION_ID_VALIDATOR": "x"})


BLOCKER = textwrap.dedent('''
    import sys

    class BlockOpenTelemetry:
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, BlockOpenTelemetry())
''')

WITHOUT_OTEL = BLOCKER + textwrap.dedent('''
    import asyncio
    import httpx
    from prometheus_client import CollectorRegistry
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    import asgi_metrics
    from asgi_metrics import ConfigurationError, MetricsMiddleware, get_correlation_id
    from asgi_metrics.otel import spans as exemplars

    assert not exemplars.AVAILABLE and exemplars.sampled_span() is None
    assert exemplars.current_trace_id() is None

    async def hello(request):
        return PlainTextResponse(get_correlation_id())

    app = Starlette(routes=[Route("/hello", hello)])
    app.add_middleware(MetricsMiddleware, registry=CollectorRegistry(), correlation_id=True,
                       trace_id_as_correlation_id=True)

    async def main():
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/hello", headers={"X-Request-ID": "no-otel-1"})
            assert response.text == response.headers["x-request-id"] == "no-otel-1"
            response = await client.get("/hello")
            assert len(response.headers["x-request-id"]) == 32
            metrics = await client.get(
                "/metrics", headers={"Accept": "application/openmetrics-text"})
            assert 'route="/hello"' in metrics.text and "trace_id" not in metrics.text

    asyncio.run(main())
    try:
        MetricsMiddleware(app, registry=CollectorRegistry(), otel_metrics=True)
    except ConfigurationError as exc:
        assert "otel_metrics" in str(exc)
    else:
        raise AssertionError("otel_metrics without opentelemetry-api must be refused")
    assert "opentelemetry" not in " ".join(sys.modules)
    print("ok")
''')


def test_everything_works_without_opentelemetry() -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_OTEL], cwd=ROOT, capture_output=True, text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
