"""The PromQL names of one configuration: the series the middleware exports, their label
names and the names of the recorded series built on them.

The metric and label names come from :func:`asgi_metrics.core.naming.metric_names`, the
one place that defines them, so the rules and the dashboard always match what the
middleware exports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from asgi_metrics.core.naming import bucket_labels, metric_names
from asgi_metrics.core.settings import DEFAULT_BUCKETS, Settings

_DURATION_SUFFIX = "_duration_seconds"


@dataclass(frozen=True)
class Names:
    """Series, label and recorded names for one ``namespace`` / ``naming`` / ``buckets``."""

    #: The settings the names were built from (validated by :meth:`Settings.build`).
    settings: Settings
    #: The series counting every request: ``http_requests_total``, or for a preset without
    #: a request counter (``otel``) the duration histogram's ``_count``.
    requests: str
    #: The duration histogram's name, without ``_bucket`` / ``_sum`` / ``_count``.
    duration: str
    in_flight: str
    #: The exceptions counter, with ``_total``.
    exceptions: str
    method: str
    route: str
    status: str
    exception_type: str
    #: Prefix of the recorded names of requests and errors (``http_request`` gives
    #: ``route:http_requests:rate5m`` and ``route:http_request_errors:rate5m``).
    stem: str
    #: Stem of the recorded request rates (``http_requests``; ``http_server_requests``).
    requests_stem: str
    #: Stem of the recorded exception rates (the exceptions family, without ``_total``).
    exceptions_stem: str
    #: The middleware records native histograms (``native_histograms``): every histogram
    #: expression then reads the classic series ``or`` the native one, so the rules work
    #: whether Prometheus keeps the classic form, the native form or both, and a latency
    #: threshold need not be a bucket bound.
    native: bool = False

    @property
    def buckets(self) -> tuple[float, ...]:
        """The duration histogram's finite bucket bounds, in seconds."""
        return self.settings.buckets

    @property
    def bucket(self) -> str:
        return f"{self.duration}_bucket"

    @property
    def count(self) -> str:
        return f"{self.duration}_count"

    @property
    def sum(self) -> str:
        return f"{self.duration}_sum"

    def le(self, bound: float) -> str:
        """The ``le`` label value of the bucket with this finite bound, as the middleware
        writes it (``0.25``, ``1.0``)."""
        finite = bucket_labels(self.buckets)[:-1]  # without +Inf
        return dict(zip(self.buckets, finite, strict=True))[bound]


def names_for(
    namespace: str = "",
    naming: str = "default",
    buckets: Sequence[float] = DEFAULT_BUCKETS,
    native: bool = False,
) -> Names:
    """The names for these settings; raises ``ConfigurationError`` for a bad value.

    The environment is ignored (``HTTP_METRICS_*`` of the shell running the command must
    not change the generated files).
    """
    settings = Settings.build(
        {"namespace": namespace, "naming": naming, "buckets": list(buckets)}, environ={}
    )
    families = metric_names(settings)
    duration = families.duration
    # Every preset labels its request families (method, route, status), in that order, and
    # its exceptions (method, route, exception type).
    method, route, status = duration.labels
    exception_type = families.exceptions.labels[2]
    assert duration.name.endswith(_DURATION_SUFFIX), duration.name
    stem = duration.name[: -len(_DURATION_SUFFIX)]
    if families.requests is not None:
        requests, requests_stem = f"{families.requests.name}_total", families.requests.name
    else:
        requests, requests_stem = f"{duration.name}_count", f"{stem}s"
    return Names(
        settings=settings,
        requests=requests,
        duration=duration.name,
        in_flight=families.in_flight.name,
        exceptions=f"{families.exceptions.name}_total",
        method=method,
        route=route,
        status=status,
        exception_type=exception_type,
        stem=stem,
        requests_stem=requests_stem,
        exceptions_stem=families.exceptions.name,
        native=native,
    )
