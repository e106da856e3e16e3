"""Hardening of the WSGI side: /metrics credentials, and property-based tests over generated
environs (methods, paths with arbitrary bytes, headers with arbitrary bytes and sizes,
optional keys missing): the middleware raises only where the bare app raises, hands the
server exactly what the bare app does, and /metrics stays valid."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.support.scrape import series_of
from tests.support.wsgi import environ as make_environ
from wsgi_metrics import MetricsMiddleware

TOKEN = "wsgi-tok-1"  # not a real secret


def _bare(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """Reads its body, fails on /fail, answers with what it saw."""
    stream = environ.get("wsgi.input")
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body = stream.read(length) if stream is not None and length > 0 else b""
    path = environ.get("PATH_INFO", "")
    if isinstance(path, str) and path.endswith("/fail"):
        raise ValueError("app failure")
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Len", str(len(body)))])
    return [body, str(len(environ)).encode()]


def _call(app: Any, environ: dict[str, Any]) -> Any:
    """What the server sees: start_response calls, body chunks, or the exception."""
    calls: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        calls.append((status, list(headers)))
        return lambda data: None

    try:
        result = app(environ, start_response)
        try:
            chunks = list(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
    except Exception as exc:
        return calls, None, (type(exc), str(exc))
    return calls, chunks, None



@pytest.mark.parametrize(
    ("options", "good"),
    [
        ({"metrics_bearer_token": TOKEN}, f"Bearer {TOKEN}"),
        ({"metrics_basic_auth": ("prom", "pw")},
         "Basic " + base64.b64encode(b"prom:pw").decode()),
    ],
)
def test_wsgi_metrics_credentials(options: dict[str, Any], good: str) -> None:
    app = MetricsMiddleware(_bare, registry=CollectorRegistry(), **options)
    assert _call(app, make_environ("/hello"))[0][0][0] == "200 OK"
    for bad in (None, "Bearer nope", "Basic bm9wZTpub3Bl", "garbage"):
        extra = {} if bad is None else {"HTTP_AUTHORIZATION": bad}
        calls, chunks, _ = _call(app, make_environ("/metrics", **extra))
        status, headers = calls[0]
        assert status.startswith("401")
        assert any(name == "WWW-Authenticate" for name, _ in headers)
        assert b"http_requests_total" not in b"".join(chunks)
    calls, chunks, _ = _call(app, make_environ("/metrics", HTTP_AUTHORIZATION=good))
    assert calls[0][0] == "200 OK"
    assert sum(series_of(b"".join(chunks).decode(), "http_requests_total").values()) == 1


OPTIONAL = (
    "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME",
    "SERVER_PORT", "SERVER_PROTOCOL", "wsgi.input", "wsgi.url_scheme", "CONTENT_LENGTH",
)
latin1 = st.binary(max_size=80).map(lambda raw: raw.decode("latin-1"))
big_latin1 = st.binary(min_size=1000, max_size=9000).map(lambda raw: raw.decode("latin-1"))


@st.composite
def environs(draw: st.DrawFn) -> dict[str, Any]:
    body = draw(st.binary(max_size=500))
    environ = make_environ(
        draw(latin1.map(lambda p: "/" + p) | st.sampled_from(["/", "/fail", "/x/fail", ""])),
        draw(st.sampled_from(["GET", "POST", "HEAD", "get", "BREW", ""]) | latin1),
        QUERY_STRING=draw(latin1),
        CONTENT_LENGTH=draw(st.sampled_from([str(len(body)), "", "abc", "-1"])),
    )
    environ["wsgi.input"] = io.BytesIO(body)
    headers = draw(st.dictionaries(
        st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ_", min_size=1, max_size=20).map(
            lambda name: "HTTP_" + name),
        latin1 | big_latin1,
        max_size=10,
    ))
    environ.update(headers)
    for key in draw(st.sets(st.sampled_from(OPTIONAL))):
        environ.pop(key, None)
    return environ


WRAPPED = MetricsMiddleware(_bare, registry=CollectorRegistry(), response_size=True,
                            request_size=True, time_to_first_byte=True)


def _copy(environ: dict[str, Any]) -> dict[str, Any]:
    copied = dict(environ)
    if "wsgi.input" in environ:
        copied["wsgi.input"] = io.BytesIO(environ["wsgi.input"].getvalue())
    return copied


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(environ=environs())
def test_wsgi_middleware_behaves_as_bare(environ: dict[str, Any]) -> None:
    if environ.get("PATH_INFO") == "/metrics":
        return
    assert _call(WRAPPED, _copy(environ)) == _call(_bare, _copy(environ))


@settings(max_examples=100, deadline=None)
@given(headers=st.dictionaries(
    st.sampled_from(["HTTP_ACCEPT", "HTTP_ACCEPT_ENCODING", "HTTP_AUTHORIZATION"]),
    latin1 | st.sampled_from(["application/openmetrics-text; version=1.0.0", "gzip"]),
))
def test_wsgi_metrics_stay_valid_under_any_headers(headers: dict[str, str]) -> None:
    calls, chunks, exc = _call(WRAPPED, make_environ("/metrics", **headers))
    assert exc is None and calls[0][0] == "200 OK"
    body = b"".join(chunks)
    if ("Content-Encoding", "gzip") in calls[0][1]:
        import gzip

        body = gzip.decompress(body)
    text = body.decode()
    if text.endswith("# EOF\n"):
        from prometheus_client.openmetrics.parser import (
            text_string_to_metric_families as parse_openmetrics,
        )

        list(parse_openmetrics(text))
    else:
        list(text_string_to_metric_families(text))
