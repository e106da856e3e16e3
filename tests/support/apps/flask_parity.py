"""The Flask app of the multiprocess parity tests (issue 16), served by ``gunicorn -w 3``
with a multiprocess directory: every feature of issue 13 and native histograms at once.

- ``tenant`` from ``X-Tenant`` with an allowed list (anything else is ``__other__``, the
  same in every worker), which a ``before_request`` hook overrides with ``set_label`` from
  the ``tenant`` query parameter; ``plan`` from ``X-Plan`` without one, bounded by
  ``max_label_values=4`` (per worker: the tests send fewer distinct values than that);
- ``/items/<n>`` answers 500 for every thirteenth ``n``, else 200;
- ``/stuck/<n>`` and the ``do_not_track`` ``/untracked/<n>`` wait until the file named by
  ``STUCK_RELEASE`` exists; ``/hang`` writes the worker's PID to ``$HANG_PID_FILE`` first
  (to be killed mid-request); ``/health`` is ``do_not_track``; ``/pid`` answers the PID;
- ``exclude_methods=["OPTIONS", "HEAD"]`` (Flask answers both for every GET route),
  ``count_unmatched=False``, ``in_flight_by_route=True``, ``native_histograms=True``.
"""

from __future__ import annotations

import os
import time

from flask import Flask, request

from tests.support.apps.parity_common import PLAN_CAP, TENANTS
from wsgi_metrics import do_not_track, from_header, set_label
from wsgi_metrics.flask import Metrics

app = Flask(__name__)
RELEASE = os.environ.get("STUCK_RELEASE", "/nonexistent")


def _wait_for_release(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not os.path.exists(RELEASE) and time.monotonic() < deadline:
        time.sleep(0.02)


@app.before_request
def tenant_from_query() -> None:
    tenant = request.args.get("tenant")
    if tenant is not None:
        set_label("tenant", tenant)


@app.get("/items/<int:item_id>")
def item(item_id: int) -> tuple[str, int]:
    return str(item_id), 500 if item_id % 13 == 0 else 200


@app.get("/stuck/<int:n>")
def stuck(n: int) -> str:
    _wait_for_release(20)
    return str(os.getpid())


@app.get("/untracked/<int:n>")
@do_not_track
def untracked(n: int) -> str:
    _wait_for_release(20)
    return str(os.getpid())


@app.get("/hang")
def hang() -> str:
    with open(os.environ["HANG_PID_FILE"], "w") as file:
        file.write(str(os.getpid()))
    _wait_for_release(60)
    return "woke"


@app.get("/health")
@do_not_track
def health() -> str:
    return "ok"


@app.get("/pid")
def pid() -> str:
    return str(os.getpid())


Metrics(
    app,
    labels={
        "tenant": from_header("X-Tenant", allowed=TENANTS, default="none"),
        "plan": from_header("X-Plan"),
    },
    max_label_values=PLAN_CAP,
    in_flight_by_route=True,
    exclude_methods=["OPTIONS", "HEAD"],
    count_unmatched=False,
    native_histograms=True,
)
