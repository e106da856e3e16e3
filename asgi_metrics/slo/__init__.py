"""The SLO kit: Prometheus rules, their ``promtool`` unit tests and a Grafana dashboard,
generated for one configuration of the middleware (``namespace``, ``naming`` preset,
duration ``buckets``) and the service level objectives given.

Its command line is the ``http-metrics`` console script (:mod:`asgi_metrics.slo.cli`).
Nothing of the middleware imports this package.
"""
