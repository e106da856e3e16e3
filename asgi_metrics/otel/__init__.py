"""OpenTelemetry, optional: the current span (exemplars, trace IDs, the correlation ID
attribute) and the OpenTelemetry HTTP server metrics bridge. Only ``opentelemetry-api``
is used, and only when it is importable."""
