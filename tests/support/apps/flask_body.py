"""A Flask app (``Metrics(app)``, ``request_size=True``) whose views ignore or read the
request body in each way Flask offers, answering with what they read."""

from __future__ import annotations

from flask import Flask
from flask import request as flask_request
from prometheus_client import CollectorRegistry

from wsgi_metrics.flask import Metrics


def flask_app(max_content_length: int | None = None) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = max_content_length

    @app.post("/ignore")
    def ignored() -> str:
        return "never read the body"

    @app.post("/data")
    def data() -> bytes:
        return flask_request.get_data()

    @app.post("/lines")
    def lines() -> bytes:
        return b"".join(line for line in flask_request.stream)

    @app.post("/readlines")
    def readlines() -> bytes:
        return b"".join(flask_request.stream.readlines())

    @app.post("/readline")
    def readline() -> bytes:
        parts = []
        while line := flask_request.stream.readline():
            parts.append(line)
        return b"".join(parts)

    Metrics(app, registry=CollectorRegistry(), request_size=True)
    return app
