"""A Flask app with ``Metrics(app)`` for servers that run every connection in a greenlet
or thread of its own (``gunicorn -k gevent``). ``/shards`` answers
:meth:`~asgi_metrics.store.RequestStore.shard_count` (diagnostics): how many per-thread
shards the worker's store holds."""

from __future__ import annotations

from flask import Flask

from wsgi_metrics.flask import EXTENSION_KEY, Metrics

app = Flask(__name__)
Metrics(app)


@app.get("/hello/<name>")
def hello(name: str) -> str:
    return f"hello {name}"


@app.get("/shards")
def shards() -> str:
    return str(app.extensions[EXTENSION_KEY].recorder.store.shard_count())
