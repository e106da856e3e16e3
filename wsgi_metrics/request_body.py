"""The request body size in WSGI: declared by ``CONTENT_LENGTH``, or counted as the app
reads a body without one (chunked)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from asgi_metrics.core.rules import declared_length
from wsgi_metrics.types import Environ


def request_size(environ: Environ) -> int | CountingInput:
    """The request body size ``CONTENT_LENGTH`` declares; without one (a chunked body),
    a :class:`CountingInput` installed as ``wsgi.input`` to count what the app reads."""
    declared = declared_length(environ.get("CONTENT_LENGTH"))
    if declared is not None:
        return declared
    stream = environ.get("wsgi.input")
    if stream is None:
        return 0
    counting = CountingInput(stream)
    environ["wsgi.input"] = counting
    return counting


class CountingInput:
    """``wsgi.input`` as the app gets it when ``request_size`` is on and the request
    declares no ``Content-Length`` (a chunked body, which gunicorn and Werkzeug's server
    decode for the app): the server's stream, with the bytes every read returns counted.

    The app gets the server's own stream in every other case: the house rule is that the
    app gets what the server gave, and without a declared size there is no other way to
    know the body's size. ``read``, ``readline``, ``readlines``, iteration and ``next()``
    are counted, and so are ``readinto``, ``readinto1`` and ``read1`` when the server's
    stream has them (Werkzeug's ``LimitedStream`` reads through ``readinto``); every other
    attribute (``close``, ``fileno``, ...) is the server stream's own. What the app never
    reads is not counted: the server has not received it either.
    """

    __slots__ = ("_stream", "count")

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        #: Bytes the app has read so far.
        self.count = 0

    def _add(self, data: Any) -> None:
        try:  # noqa: SIM105 (per read: suppress() costs more)
            self.count += len(data)
        except TypeError:  # not bytes: the server's stream is broken, not ours to judge
            pass

    def read(self, *args: Any, **kwargs: Any) -> Any:
        data = self._stream.read(*args, **kwargs)
        self._add(data)
        return data

    def readline(self, *args: Any, **kwargs: Any) -> Any:
        line = self._stream.readline(*args, **kwargs)
        self._add(line)
        return line

    def readlines(self, *args: Any, **kwargs: Any) -> Any:
        lines = self._stream.readlines(*args, **kwargs)
        for line in lines:
            self._add(line)
        return lines

    def __iter__(self) -> Iterator[Any]:
        for line in self._stream:
            self._add(line)
            yield line

    def __next__(self) -> Any:
        line = next(self._stream)
        self._add(line)
        return line

    def __getattr__(self, name: str) -> Any:
        # Only for what the class does not define: the server stream's own attribute, so
        # hasattr() answers as it would for the server's stream.
        if name == "_stream":  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        attribute = getattr(self._stream, name)
        if name in ("readinto", "readinto1"):

            def readinto(buffer: Any, *args: Any) -> Any:
                size = attribute(buffer, *args)
                if type(size) is int and size > 0:
                    self.count += size
                return size

            return readinto
        if name == "read1":

            def read1(*args: Any) -> Any:
                data = attribute(*args)
                self._add(data)
                return data

            return read1
        return attribute
