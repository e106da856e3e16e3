"""A Flask app for the in-flight gauge by route across workers: ``/stuck/<n>`` waits
until the file named by ``STUCK_RELEASE`` exists (any worker can be stuck, the test
releases them all at once); ``/items/<n>`` answers at once. Served by gunicorn with a
multiprocess directory and ``in_flight_by_route``."""

from __future__ import annotations

import os
import time

from flask import Flask

from wsgi_metrics.flask import Metrics

app = Flask(__name__)
RELEASE = os.environ.get("STUCK_RELEASE", "/nonexistent")


@app.get("/items/<int:item_id>")
def item(item_id: int) -> str:
    return str(item_id)


@app.get("/stuck/<int:n>")
def stuck(n: int) -> str:
    deadline = time.monotonic() + 20
    while not os.path.exists(RELEASE) and time.monotonic() < deadline:
        time.sleep(0.02)
    return str(os.getpid())


Metrics(app, in_flight_by_route=True)
