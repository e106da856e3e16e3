"""Deciding a request's correlation ID: accept the incoming one or make a new one.

Shared by every integration; each one only extracts the header value and the client
address from its own request object.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable

from asgi_metrics.core.settings import Settings
from asgi_metrics.correlation.request_ids import new_id
from asgi_metrics.otel.spans import CORRELATION_ID_ATTRIBUTE, current_trace_id

__all__ = ["CORRELATION_ID_ATTRIBUTE", "ID_BYTES", "MAX_ID_LENGTH", "VALID_ID", "CorrelationIds"]

logger = logging.getLogger("asgi_metrics.correlation")


#: The longest incoming ID the built-in rule accepts.
MAX_ID_LENGTH = 64
#: The built-in rule for incoming IDs. ``fullmatch`` (not ``match`` with ``$``, which
#: accepts a trailing newline), and an explicit ASCII class (``\w`` would admit Unicode).
VALID_ID = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_ID_LENGTH}}}")
#: The characters ``VALID_ID`` allows, as bytes: ``not raw.translate(None, ID_BYTES)`` is
#: the same check on raw header bytes (ASGI) without the regex, at about half the cost.
ID_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
#: What a custom validator can never let through: the ID is echoed in a response header and
#: written to logs, so control characters (CR/LF, NUL), spaces and non-ASCII stay out.
_HEADER_SAFE = re.compile(r"[\x21-\x7e]{1,256}")



class CorrelationIds:
    """The correlation settings of one middleware, applied to one request at a time."""

    #: Cache of client address -> trusted, bounded so a flood of addresses cannot grow it.
    _MAX_CACHED = 4096

    def __init__(self, settings: Settings) -> None:
        self.header = settings.correlation_header
        #: Lower-case latin-1 bytes, as ASGI header names arrive.
        self.header_bytes = settings.correlation_header.lower().encode("latin-1")
        #: The WSGI ``environ`` key of the header.
        self.environ_key = "HTTP_" + settings.correlation_header.upper().replace("-", "_")
        self.use_trace_id = settings.trace_id_as_correlation_id
        self._validator: Callable[[str], object] | None = settings.correlation_id_validator
        self._proxies = settings.trusted_proxies
        self._trusted: dict[str, bool] = {}
        #: Whether the built-in rule alone decides (no validator, no proxy list): the
        #: common configuration, which the middlewares check inline.
        self.plain = self._validator is None and not self._proxies

    def trusts(self, client: str | None) -> bool:
        """Whether incoming IDs from ``client`` (an IP address) are taken."""
        if not self._proxies:
            return True
        if client is None:
            return False
        trusted = self._trusted.get(client)
        if trusted is None:
            try:
                address = ipaddress.ip_address(client)
            except ValueError:
                trusted = False
            else:
                trusted = any(address in network for network in self._proxies)
            if len(self._trusted) >= self._MAX_CACHED:
                self._trusted.clear()
            self._trusted[client] = trusted
        return trusted

    def valid(self, incoming: str) -> bool:
        """Whether ``incoming`` may be used as is. A raising validator means no."""
        if self._validator is None:
            return VALID_ID.fullmatch(incoming) is not None
        if _HEADER_SAFE.fullmatch(incoming) is None:
            return False
        try:
            return bool(self._validator(incoming))
        except Exception:
            logger.exception("correlation_id_validator raised; treating the ID as invalid")
            return False

    def choose(
        self, incoming: str | None, client: str | None, trace_id: str | None = None
    ) -> str:
        """The ID for a request whose header held ``incoming`` (``None``: no header).

        An invalid or untrusted ID is replaced. The log line about it names the new ID and
        never repeats the raw header, which is attacker-controlled (log injection).
        """
        if incoming is None:
            return trace_id or new_id()
        valid = self.valid(incoming)
        if valid and self.trusts(client):
            return incoming
        replacement = trace_id or new_id()
        logger.info(
            "Replaced the incoming %s header (%s, %d characters) by %s",
            self.header,
            "from an untrusted client" if valid else "invalid",
            len(incoming),
            replacement,
        )
        return replacement

    def for_request(self, raw: bytes | str | None, client: str | None) -> str:
        """The accept / validate / generate rule for one request, the one definition every
        adapter calls: the ID to use given the header's raw value (ASGI ``bytes``, WSGI and
        Django ``str``; ``None``: no header) and the client address.

        The common cases are decided here without the regex: no header (a new ID), and an
        incoming ID under the built-in rule alone, checked on its bytes in C (letters and
        digits, else nothing outside :data:`ID_BYTES`: exactly :data:`VALID_ID`).
        """
        if raw is None:
            if not self.use_trace_id:
                return new_id()
            return self.choose(None, client, current_trace_id())
        if isinstance(raw, str):
            data = raw.encode("latin-1", "replace")  # not latin-1 (against PEP 3333): "?"
        elif isinstance(raw, (bytes, bytearray)):
            data = bytes(raw)
        else:  # a broken server's value: as if there were no header
            return self.for_request(None, client)
        if self.plain and 0 < len(data) <= MAX_ID_LENGTH and (
            data.isalnum() or not data.translate(None, ID_BYTES)
        ):
            return raw if isinstance(raw, str) else data.decode("ascii")
        incoming = raw if isinstance(raw, str) else data.decode("latin-1")
        trace_id = None
        if self.use_trace_id and not self.valid(incoming):
            trace_id = current_trace_id()
        return self.choose(incoming, client, trace_id)
