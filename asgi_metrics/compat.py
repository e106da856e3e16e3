"""Every private name of a dependency this package relies on, in one place.

prometheus_client, opentelemetry-api, FastAPI and Falcon keep a few things private that we need
(for speed, or because no public API gives them). Each is read here, behind a function
with a fallback, and each has a test (``tests/unit/test_compat.py``), so an upgrade that
moves one breaks that test, not a request. Nothing else in the package reads a
dependency's private attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, values
from prometheus_client import mmap_dict as _mmap_dict
from prometheus_client import multiprocess as _pc_multiprocess
from prometheus_client.metrics_core import Metric

# -- prometheus_client -------------------------------------------------------------------

#: prometheus_client's mmap file class (untyped).
MmapedDict: Any = _mmap_dict.MmapedDict
#: prometheus_client's own collector for the multiprocess directory (untyped).
MultiProcessCollector: Any = _pc_multiprocess.MultiProcessCollector
#: Removes a dead process's live gauge files (untyped).
mark_process_dead: Callable[[int, str], None] = _pc_multiprocess.mark_process_dead


def registered_collectors(registry: CollectorRegistry) -> list[Any] | None:
    """The collectors registered in ``registry`` (``_collector_to_names`` under its
    ``_lock``), or ``None`` when a prometheus_client version keeps them elsewhere."""
    table = getattr(registry, "_collector_to_names", None)
    lock = getattr(registry, "_lock", None)
    if table is None or lock is None:
        return None
    with lock:
        return list(table)


def accumulate_multiprocess(metrics: dict[str, Metric]) -> Iterable[Metric]:
    """Merge per-file samples as ``MultiProcessCollector`` does (sums, gauge modes,
    cumulative buckets): its ``_accumulate_metrics``."""
    return MultiProcessCollector._accumulate_metrics(metrics, True)  # type: ignore[no-any-return]


def set_multiprocess_mode(metric: Metric, mode: str) -> None:
    """Tell the accumulation a gauge's mode (``livesum``, ...), as prometheus_client's
    collector does with ``_multiprocess_mode``."""
    metric._multiprocess_mode = mode  # type: ignore[attr-defined]


def flush_mmaped(file: Any) -> None:
    """Flush a :data:`MmapedDict` to disk (its ``_m`` mmap), before it is renamed."""
    file._m.flush()


def value_class_is_multiprocess() -> bool:
    """Whether prometheus_client chose its multiprocess value class at import
    (``ValueClass._multiprocess``)."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


# -- opentelemetry-api -------------------------------------------------------------------


def otel_span_key() -> str | None:
    """The context key of the current span (``opentelemetry.trace.propagation._SPAN_KEY``),
    or ``None`` when the API moved it (then the public, slower path is used)."""
    try:
        from opentelemetry.trace.propagation import _SPAN_KEY
    except ImportError:
        return None
    return str(_SPAN_KEY)


def otel_context_getter() -> Callable[[], Any] | None:
    """The ``get`` of the ContextVar behind OpenTelemetry's default runtime context, when
    that is exactly what is configured (two Python calls fewer per lookup); else ``None``."""
    try:
        from contextvars import ContextVar

        from opentelemetry.context import _RUNTIME_CONTEXT
        from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
    except ImportError:
        return None
    var = getattr(_RUNTIME_CONTEXT, "_current_context", None)
    if type(_RUNTIME_CONTEXT) is ContextVarsRuntimeContext and isinstance(var, ContextVar):
        return var.get
    return None


# -- FastAPI -----------------------------------------------------------------------------


def effective_route(context: Any) -> Any:
    """The route a FastAPI route context stands for as matched (``_effective_route``),
    or its original route when a version has no such attribute."""
    return getattr(context, "_effective_route", context.original_route)


# -- Falcon ------------------------------------------------------------------------------

#: What :func:`falcon_error_reporter` returns when the reporter cannot be read.
UNREADABLE = object()


def falcon_error_reporter(app: Any) -> Any:
    """The error reporter already set on a Falcon app with ``set_error_reporter`` (its
    ``_report_error``, Falcon 4.4+; ``None`` when none is set), so ours can call it rather
    than replace it; :data:`UNREADABLE` when a version keeps it elsewhere."""
    return getattr(app, "_report_error", UNREADABLE)
