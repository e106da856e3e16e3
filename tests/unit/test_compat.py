"""Each private name of a dependency we read (asgi_metrics/compat.py) still exists in the
installed versions: an upgrade that moves one fails here, not in a request."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from contextvars import ContextVar

from fastapi import APIRouter, FastAPI
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import Metric

from asgi_metrics import compat


def test_registered_collectors_lists_the_registry() -> None:
    registry = CollectorRegistry()
    counter = Counter("c", "help", registry=registry)
    collectors = compat.registered_collectors(registry)
    assert collectors is not None and counter in collectors


def test_accumulate_and_gauge_mode() -> None:
    gauge = Metric("g", "help", "gauge")
    compat.set_multiprocess_mode(gauge, "livesum")
    gauge.add_sample("g", (("pid", "1"),), 2.0)  # type: ignore[arg-type]
    gauge.add_sample("g", (("pid", "2"),), 3.0)  # type: ignore[arg-type]
    merged = list(compat.accumulate_multiprocess({"g": gauge}))
    assert [(s.name, s.value) for s in merged[0].samples] == [("g", 5.0)]


def test_mmaped_dict_flush_and_read(tmp_path: object) -> None:
    path = f"{tmp_path}/counter_1.db"
    out = compat.MmapedDict(path)
    out.write_value("key", 3.0, 0.0)
    compat.flush_mmaped(out)
    out.close()
    rows = compat.MmapedDict.read_all_values_from_file(path)
    assert [(key, value) for key, value, *_ in rows] == [("key", 3.0)]


def test_value_class_is_multiprocess_in_both_modes(tmp_path: object) -> None:
    assert compat.value_class_is_multiprocess() is False
    code = textwrap.dedent("""
        from asgi_metrics import compat
        print(compat.value_class_is_multiprocess())
    """)
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True, cwd=".")
    assert out.stdout.strip() == "True"


def test_otel_private_names_are_found() -> None:
    from opentelemetry import trace

    key = compat.otel_span_key()
    getter = compat.otel_context_getter()
    assert key is not None and getter is not None
    assert isinstance(getter.__self__, ContextVar)  # type: ignore[attr-defined]
    span = trace.NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)
    with trace.use_span(span):
        assert getter().get(key) is span


def test_fastapi_effective_route() -> None:
    from fastapi import routing

    inner = APIRouter()

    @inner.get("/items/{item_id}")
    def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    app = FastAPI()
    app.include_router(inner, prefix="/api")
    iterate = getattr(routing, "iter_route_contexts", None)
    if iterate is None:  # FastAPI before route contexts: nothing private is read
        return
    contexts = list(iterate(app.router.routes))
    effective = [compat.effective_route(ctx) for ctx in contexts]
    assert any(getattr(route, "path", "").endswith("/items/{item_id}") for route in effective)
    # The private attribute exists (the fallback is not what answered).
    assert all(hasattr(ctx, "_effective_route") for ctx in contexts)


def test_falcon_error_reporter_reads_the_one_set() -> None:
    import falcon
    import falcon.asgi

    def reporter(req: object, error: Exception, params: object, handled: bool) -> None:
        pass

    for app in (falcon.App(), falcon.asgi.App()):
        assert compat.falcon_error_reporter(app) is None
        app.set_error_reporter(reporter)
        assert compat.falcon_error_reporter(app) is reporter
    assert compat.falcon_error_reporter(object()) is compat.UNREADABLE
