"""Content negotiation for a scrape: which format (``Accept``) and whether to gzip
(``Accept-Encoding``)."""

from __future__ import annotations


def _media_ranges(header: str) -> list[tuple[str, dict[str, str]]]:
    ranges = []
    for part in header.split(","):
        media, *params = part.split(";")
        values: dict[str, str] = {}
        for param in params:
            key, _, value = param.partition("=")
            values[key.strip().lower()] = value.strip().strip('"')
        ranges.append((media.strip().lower(), values))
    return ranges


def _q(params: dict[str, str]) -> float:
    try:
        return float(params.get("q", "1"))
    except ValueError:
        return 0.0


def wants_openmetrics(accept: str | None) -> bool:
    """True when the ``Accept`` header asks for OpenMetrics (1.0.0 or unversioned)."""
    if not accept or "openmetrics" not in accept:
        return False
    for media, params in _media_ranges(accept):
        if (
            media == "application/openmetrics-text"
            and _q(params) > 0
            and params.get("version", "1.0.0") in ("1.0.0", "0.0.1")
        ):
            return True
    return False


def accepts_gzip(accept_encoding: str | None) -> bool:
    """True when the ``Accept-Encoding`` header allows gzip."""
    if not accept_encoding or "gzip" not in accept_encoding:
        return False
    return any(
        media == "gzip" and _q(params) > 0 for media, params in _media_ranges(accept_encoding)
    )


def wants_protobuf(accept: str | None) -> bool:
    """True when the ``Accept`` header asks for the Prometheus protobuf format (delimited
    ``io.prometheus.client.MetricFamily`` messages) at least as much as for any text
    format we serve. Prometheus sends it first, weighted highest, when native histograms
    are on (``--enable-feature=native-histograms``, ``scrape_protocols`` in 3.x)."""
    if not accept or "protobuf" not in accept:
        return False
    wanted = 0.0
    text = 0.0
    for media, params in _media_ranges(accept):
        if media == "application/vnd.google.protobuf":
            if (
                params.get("proto") == "io.prometheus.client.MetricFamily"
                and params.get("encoding") == "delimited"
            ):
                wanted = max(wanted, _q(params))
        elif media in ("application/openmetrics-text", "text/plain"):
            text = max(text, _q(params))
    return wanted > 0 and wanted >= text
