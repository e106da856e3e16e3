"""The one place for test helpers and test apps.

- ``asgi``: drive an ASGI app in process (by hand or through httpx) and scrape it;
- ``wsgi``: call a WSGI app in process the way a server does, and scrape it;
- ``scrape``: read an exposition sample by sample (prometheus_client's parser);
- ``correlation``, ``otel``: invalid correlation IDs, captured logs; failing spans and
  the OpenTelemetry SDK's HTTP metrics;
- ``bodies``: the request body (whole and chunked) of the request size tests;
- ``multiprocess``, ``processes``: a multiprocess directory written by hand; a fresh Python;
- ``paths``, ``servers``, ``binaries``, ``promtool``, ``prometheus_server``: real servers
  (uvicorn, gunicorn, granian, hypercorn, daphne, waitress, Prometheus) on loopback, and
  promtool;
- ``apps``: the apps the tests serve, by import or by name on a server's command line.
"""
