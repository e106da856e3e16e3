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
from asgi_metrics.otel.spans import current_trace_id

logger = logging.getLogger("asgi_metrics.correlation")

#: The span attribute holding the correlation ID (no semantic convention exists for it).
CORRELATION_ID_ATTRIBUTE = "correlation.id"

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

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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

    def for_request(self, incoming: str | None, client: str | None) -> str:
        """The whole decision for one request, shared by every adapter: the ID to use given
        the header value (``None``: no header) and the client address."""
        # The common cases in one step: a valid incoming ID, or none and no trace ID wanted.
        if incoming is None:
            if not self.use_trace_id:
                return new_id()
        elif self.plain and VALID_ID.fullmatch(incoming) is not None:
            return incoming
        trace_id = None
        if self.use_trace_id and (incoming is None or not self.valid(incoming)):
            trace_id = current_trace_id()
        return self.choose(incoming, client, trace_id)
