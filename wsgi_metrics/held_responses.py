"""Responses Werkzeug's test client holds and may never close.

The test client (``werkzeug.test.Client``, Flask's ``app.test_client()``) calls the app,
takes the first chunk and hands the response to the test, which may never close it (nor
read it): a server would have sent it, so the next scrape of the middleware counts it.
Timed to the end of its iteration if the test read it, else to when the app returned it. A
later ``close()`` still closes the app's iterable and resets the correlation ID, without
recording again; a scrape never resets the ID (the test's next request may have set its
own). Under a real server nothing here runs: a response is timed until ``close()``.
"""

from __future__ import annotations

import weakref
from time import perf_counter
from types import FunctionType

from asgi_metrics.core.failures import FailureLog
from wsgi_metrics.exchange import Exchange
from wsgi_metrics.types import Environ, StartResponse

#: The module of the ``start_response`` Werkzeug's test client passes (``run_wsgi_app``).
_TEST_CLIENT_MODULE = "werkzeug.test"


def from_test_client(environ: Environ, start_response: StartResponse) -> bool:
    """Whether the request came from Werkzeug's test client. Looked at only when there is
    no file wrapper: gunicorn, uWSGI, waitress, mod_wsgi and wsgiref give one and the test
    client does not, so they pay nothing for it; other servers pay two cheap checks."""
    return (
        environ.get("wsgi.file_wrapper") is None
        and type(start_response) is FunctionType
        and start_response.__module__ == _TEST_CLIENT_MODULE
    )


class HandedResponses:
    """The responses handed to the test client and not yet recorded, by id; weak, so a
    response the test drops is still recorded when freed."""

    def __init__(self, failures: FailureLog) -> None:
        self._failures = failures
        self._handed: weakref.WeakValueDictionary[int, Exchange] = (
            weakref.WeakValueDictionary()
        )

    def __bool__(self) -> bool:
        return bool(self._handed)

    def add(self, exchange: Exchange) -> None:
        """Note a response handed to the test client."""
        try:
            exchange.handed = perf_counter()
            self._handed[id(exchange)] = exchange
        except Exception as exc:  # then it is recorded at close() or when freed, as before
            self._failures.report("noting a test client response", exc)

    def record_all(self) -> None:
        """Record every response still held unclosed (before a scrape)."""
        handed = self._handed
        for ref in handed.valuerefs():  # a list taken at once: requests may add meanwhile
            exchange = ref()
            if exchange is None:
                continue
            handed.pop(id(exchange), None)
            try:
                # finish() claims the exchange before anything else (done is tested and
                # set with no call in between), so a close() racing in another thread
                # does not record it a second time.
                if not exchange.done:
                    exchange.finish(None, False, True, exchange.handed_end())
            except Exception as exc:
                self._failures.report("recording a test client response", exc)
