"""Access control for the metrics endpoint: bearer token and HTTP basic auth.

Framework-agnostic, so the ASGI endpoint, the WSGI adapters and the separate listener all
check credentials the same way: the adapter passes the raw ``Authorization`` header value.
Credentials are compared with :func:`hmac.compare_digest` on bytes, so the time a check
takes does not tell an attacker how much of a guess was right. Secrets are never logged
and never part of a repr.
"""

from __future__ import annotations

import binascii
import hmac
from base64 import b64decode

from asgi_metrics.core.settings import Settings

Headers = list[tuple[str, str]]

BEARER_CHALLENGE = 'Bearer realm="metrics"'
BASIC_CHALLENGE = 'Basic realm="metrics", charset="UTF-8"'


class MetricsAuth:
    """Checks an ``Authorization`` header against a bearer token and/or basic credentials.

    With both configured, either is accepted. With neither, every request is allowed
    (:attr:`required` is False).
    """

    __slots__ = ("_basic", "_token")

    def __init__(
        self,
        bearer_token: str | None = None,
        basic_auth: tuple[str, str] | str | None = None,
    ) -> None:
        # Validate through the same checks as the settings, so errors name the setting.
        checked = Settings.build(
            {"metrics_bearer_token": bearer_token, "metrics_basic_auth": basic_auth}, {}
        )
        token = checked.metrics_bearer_token
        basic = checked.metrics_basic_auth
        self._token = None if token is None else token.encode("utf-8")
        self._basic = None if basic is None else f"{basic[0]}:{basic[1]}".encode()

    @classmethod
    def from_settings(cls, settings: Settings) -> MetricsAuth:
        """The auth configured by ``settings`` (already validated)."""
        return cls(settings.metrics_bearer_token, settings.metrics_basic_auth)

    @property
    def required(self) -> bool:
        """Whether any credentials are configured."""
        return self._token is not None or self._basic is not None

    def __repr__(self) -> str:
        kinds = [name for name, on in (("bearer", self._token), ("basic", self._basic)) if on]
        return f"MetricsAuth({', '.join(kinds) or 'open'})"

    def allows(self, authorization: str | None) -> bool:
        """Whether a request with this ``Authorization`` header value may scrape."""
        if not self.required:
            return True
        if not authorization:
            return False
        scheme, _, credentials = authorization.strip().partition(" ")
        scheme = scheme.lower()
        credentials = credentials.strip()
        if scheme == "bearer" and self._token is not None:
            return _same(credentials.encode("latin-1", "replace"), self._token)
        if scheme == "basic" and self._basic is not None:
            try:
                decoded = b64decode(credentials.encode("ascii"), validate=True)
            except (binascii.Error, UnicodeEncodeError, ValueError):
                return False
            return _same(decoded, self._basic)
        return False

    def challenge(self) -> Headers:
        """Headers of a 401 answer: one ``WWW-Authenticate`` per accepted scheme."""
        headers: Headers = []
        if self._token is not None:
            headers.append(("WWW-Authenticate", BEARER_CHALLENGE))
        if self._basic is not None:
            headers.append(("WWW-Authenticate", BASIC_CHALLENGE))
        return headers


def _same(given: bytes, expected: bytes) -> bool:
    return hmac.compare_digest(given, expected)
