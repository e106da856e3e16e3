"""gunicorn settings for the multiprocess tests plus a metrics listener in the arbiter
(``start_metrics_server`` in ``when_ready``, the pattern prometheus_flask_exporter
documents): a process that serves the directory without any middleware of its own."""

import os

from asgi_metrics import start_metrics_server
from tests.support.apps.gunicorn_conf import child_exit, on_starting

__all__ = ["child_exit", "on_starting", "when_ready"]


def when_ready(server: object) -> None:
    start_metrics_server(int(os.environ["MASTER_METRICS_PORT"]))
