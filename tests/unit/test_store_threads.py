"""The single-process store keeps one shard per thread; it must not keep one for every
thread that has come and gone, however the thread was started.

Raw ``_thread.start_new_thread`` threads and threads started outside Python (here with
``pthread_create``, as a server's native thread pool does) have no ``threading.Thread``
object: inside them ``threading.current_thread()`` is a ``_DummyThread``, alive forever,
as it is for a greenlet under gevent."""

from __future__ import annotations

import _thread
import ctypes
import ctypes.util
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.support.scrape import in_flight, requests_by_labels
from tests.support.wsgi import InProcessServer, environ, scrape_samples
from wsgi_metrics import MetricsMiddleware
from wsgi_metrics.middleware import Environ, StartResponse

THREADS = 600  # short-lived threads in all, recording through the middleware
WAVE = 20  # alive at once at most
PER_THREAD = 3  # requests each thread finishes itself; one more is closed by a neighbour
BOUND = WAVE + 4  # the shards a store may hold: the live threads', the test's, slack


def hello(env: Environ, start_response: StartResponse) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def start_raw(target: Callable[[], None]) -> None:
    _thread.start_new_thread(target, ())


def start_threading(target: Callable[[], None]) -> None:
    threading.Thread(target=target, daemon=True).start()


_START_ROUTINE = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)
_callbacks: list[Any] = []  # ctypes callbacks must outlive the threads that run them


def start_foreign(target: Callable[[], None]) -> None:
    """A thread made by libc, not by Python: the interpreter only sees it when it calls
    back into Python (ctypes takes the GIL with ``PyGILState_Ensure``)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))

    def routine(arg: int | None) -> None:
        target()

    callback = _START_ROUTINE(routine)
    _callbacks.append(callback)
    thread = ctypes.c_ulong()
    assert libc.pthread_create(ctypes.byref(thread), None, callback, None) == 0
    assert libc.pthread_detach(thread) == 0


def wait_for(predicate: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


STARTS = [
    pytest.param(start_raw, id="_thread"),
    pytest.param(start_threading, id="threading"),
    pytest.param(start_foreign, id="pthread_create", marks=pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="pthread_create through glibc")),
]


@pytest.mark.parametrize("start", STARTS)
def test_shards_of_ended_threads_are_retired_and_counted_once(
    start: Callable[[Callable[[], None]], None],
) -> None:
    mw = MetricsMiddleware(
        hello, registry=CollectorRegistry(), route_resolver=lambda env: "/hello"
    )
    store = mw.recorder.store
    done = threading.Semaphore(0)
    # Bodies started in one thread and closed in the next one: in flight in one shard,
    # finished in another, both shards retired by the end.
    handed: list[Iterable[bytes]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(PER_THREAD):
                assert InProcessServer().call(mw, environ("/hello/1")) == b"hello"
            body = mw(environ("/hello/2"), InProcessServer().start_response)
            handed.append(body)  # list.append/pop are atomic
            try:
                other = handed.pop(0)
            except IndexError:
                return
            for _chunk in other:
                pass
            other.close()  # type: ignore[attr-defined]
        except BaseException as exc:  # reported by the test's thread
            errors.append(exc)
        finally:
            done.release()

    peak = 0
    for wave in range(THREADS // WAVE):
        for _ in range(WAVE):
            start(work)
        for _ in range(WAVE):
            assert done.acquire(timeout=30)
        if wave % 5 == 0:  # scrapes while threads come and go, too
            scrape_samples(mw)
        peak = max(peak, store.shard_count())
    while handed:  # the body left over by the last thread
        body: Any = handed.pop()
        for _chunk in body:
            pass
        body.close()
    assert not errors, errors

    # A thread's storage is dropped just after its last line ran: wait for the stragglers.
    assert wait_for(lambda: store.shard_count() <= 2), store.shard_count()
    assert peak <= BOUND, f"{peak} shards for {WAVE} live threads"
    samples = scrape_samples(mw)
    assert requests_by_labels(samples) == {("GET", "/hello", "200"): THREADS * (PER_THREAD + 1)}
    assert in_flight(samples) == 0
    # Folded once, not once per scrape.
    assert requests_by_labels(scrape_samples(mw)) == requests_by_labels(samples)


def test_a_shard_is_kept_while_its_thread_lives() -> None:
    # A live thread that recorded once and then waits keeps its shard (and its counts)
    # across scrapes and across other threads ending.
    mw = MetricsMiddleware(
        hello, registry=CollectorRegistry(), route_resolver=lambda env: "/hello"
    )
    store = mw.recorder.store
    recorded, release, finished = threading.Event(), threading.Event(), threading.Event()

    def long_lived() -> None:
        InProcessServer().call(mw, environ("/hello/1"))
        recorded.set()
        release.wait(30)
        InProcessServer().call(mw, environ("/hello/1"))
        finished.set()

    def short_lived() -> None:
        InProcessServer().call(mw, environ("/hello/1"))

    start_raw(long_lived)
    assert recorded.wait(10)
    before = store.shard_count()
    for _ in range(50):
        start_raw(short_lived)
    expected = {("GET", "/hello", "200"): 51.0}
    assert wait_for(lambda: requests_by_labels(scrape_samples(mw)) == expected)
    assert wait_for(lambda: store.shard_count() <= before)
    release.set()
    assert finished.wait(10)
    assert requests_by_labels(scrape_samples(mw)) == {("GET", "/hello", "200"): 52.0}
