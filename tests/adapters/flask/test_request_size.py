"""``request_size`` with Flask (its test client): the declared ``Content-Length`` whether the
view reads the body or not. Chunked bodies under Werkzeug's server:
``tests/e2e/test_request_size_servers.py``."""

from __future__ import annotations

from tests.support.apps.flask_body import flask_app
from tests.support.bodies import BODY, size_of
from tests.support.scrape import parse_samples


def test_flask_declared_size_counts_even_when_the_app_never_reads() -> None:
    app = flask_app()
    http = app.test_client()
    assert http.post("/ignore", data=BODY).status_code == 200
    assert http.post("/data", data=BODY).data == BODY
    samples = parse_samples(http.get("/metrics").text)
    assert size_of(samples, "/ignore") == (9, 1)
    assert size_of(samples, "/data") == (9, 1)
