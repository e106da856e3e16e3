"""Example Flask app with HTTP metrics (see docs/wsgi.md for how to run it).

Run from the repository root::

    gunicorn --pythonpath . --chdir example_apps/flask_app -b 127.0.0.1:8000 app:app
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Flask, Response, abort

from wsgi_metrics import MetricsMiddleware

app = Flask(__name__)
api = Blueprint("api", __name__, url_prefix="/api")


@app.get("/")
def index() -> str:
    return "hello"


@app.get("/healthz")
def healthz() -> str:
    return "ok"  # excluded from the metrics below


@api.get("/users/<int:user_id>")
def user(user_id: int) -> dict[str, int]:
    if user_id > 100:
        abort(404)
    return {"id": user_id}


@api.get("/boom")
def boom() -> str:
    raise RuntimeError("example failure")


@api.get("/stream")
def stream() -> Response:
    def chunks() -> Iterator[bytes]:
        for index in range(3):
            yield b"chunk %d\n" % index

    return Response(chunks(), mimetype="text/plain")


app.register_blueprint(api)

# The one line: every request counted by its route template, /metrics served.
app.wsgi_app = MetricsMiddleware(app.wsgi_app, exclude_paths=["/healthz"])  # type: ignore[method-assign]
