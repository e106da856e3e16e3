"""The Flask app of the request-label end-to-end test (issue 13), served by gunicorn:
``gunicorn tests.support.apps.flask_labels:app``.

Labels: ``tenant`` from the ``X-Tenant`` header (no ``allowed``: bounded by
``max_label_values``, from ``HTTP_METRICS_MAX_LABEL_VALUES``), ``plan`` from ``X-Plan``
(allowed ``free``/``pro``, default ``none``), which a ``before_request`` hook overrides with
``set_label`` from the ``plan`` query parameter. ``/stuck`` waits until ``/release`` is
called (threaded workers), for the in-flight gauge by route; the helpers ``/entered`` and
``/release`` are ``do_not_track``.
"""

from __future__ import annotations

import threading

from flask import Flask, request

from wsgi_metrics import do_not_track, from_header, set_label
from wsgi_metrics.flask import Metrics

app = Flask(__name__)
_entered = threading.Event()
_release = threading.Event()


@app.before_request
def plan_from_query() -> None:
    plan = request.args.get("plan")
    if plan is not None:
        set_label("plan", plan)


@app.get("/items/<int:item_id>")
def item(item_id: int) -> dict[str, int]:
    return {"id": item_id}


@app.get("/stuck")
def stuck() -> str:
    _entered.set()
    return "released" if _release.wait(30) else "timed out"


@app.get("/entered")
@do_not_track
def entered() -> str:
    return "yes" if _entered.is_set() else "no"


@app.get("/release")
@do_not_track
def release() -> str:
    _release.set()
    return "released"


# The default registry: a worker process of its own (or a multiprocess directory).
Metrics(
    app,
    labels={
        "tenant": from_header("X-Tenant"),
        "plan": from_header("X-Plan", allowed=["free", "pro"], default="none"),
    },
)
