"""Every error chaveiro raises.

::

    ChaveiroError
    ├── ConfigurationError          (also a ValueError) bad or missing settings
    │   ├── ClientCertificateError  a client certificate (mTLS) that cannot be used
    │   ├── InsecureURLError        a token URL that is not HTTPS
    │   └── MissingSettingError     a required environment variable or argument is absent
    ├── DiscoveryError              OpenID Connect discovery gave nothing usable
    │   └── IssuerUnreachableError  no HTTP answer from the issuer at all
    └── TokenError                  getting a token failed
        ├── CredentialsRejectedError   the provider answered with an RFC 6749 §5.2 error
        ├── TokenEndpointError         the endpoint failed (status and a short body excerpt)
        │   └── TokenEndpointUnreachableError  no HTTP answer at all (DNS, connect, TLS, timeout)
        ├── InvalidTokenResponseError  a 2xx answer that is not a usable token
        │   └── DPoPNotSupportedError  a Bearer token where a DPoP-bound one was asked for
        └── ClientAssertionError       the client assertion's source (client_assertion=) failed

Messages name what went wrong and what to do. They never hold a client secret,
an access token or a refresh token: provider bodies are excerpted, capped and
scrubbed of anything that looks like a token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

__all__ = [
    "ChaveiroError",
    "ClientAssertionError",
    "ClientCertificateError",
    "ConfigurationError",
    "CredentialsRejectedError",
    "DPoPNotSupportedError",
    "DiscoveryError",
    "InsecureURLError",
    "InvalidTokenResponseError",
    "IssuerUnreachableError",
    "MissingSettingError",
    "TokenEndpointError",
    "TokenEndpointUnreachableError",
    "TokenError",
    "excerpt",
    "hiding",
    "redact",
]

_E = TypeVar("_E", bound=BaseException)
_EXCERPT_CHARS = 200
_TAGS = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)
_SPACES = re.compile(r"\s+")
# Token-looking runs are never shown, even in excerpts: 32+ base64-ish characters
# (JWTs, long opaque tokens), or 20+ base64url characters mixing letters and digits
# (short opaque tokens such as RFC 6749's "2YotnFZFEjr1zCsicMWpAA"; not words).
_TOKENISH = re.compile(
    r"[A-Za-z0-9_\-\.~+/=]{32,}"
    r"|(?=[A-Za-z0-9_\-]*[0-9])(?=[A-Za-z0-9_\-]*[A-Za-z])[A-Za-z0-9_\-]{20,}"
)


# OpenSSL reason codes (TLSV13_ALERT_CERTIFICATE_REQUIRED) look long enough to be tokens, but
# say what went wrong in a TLS handshake: these few are always shown.
_REASON_CODE = re.compile(
    r"(?:SSLV3|TLSV1[0-9]?)_ALERT(?:_[A-Z]+)+"
    r"|CERTIFICATE_VERIFY_FAILED|WRONG_VERSION_NUMBER|UNSAFE_LEGACY_RENEGOTIATION_DISABLED"
)


_REDACTED = "[redacted]"
_IN_A_TOKEN = "REDACTED"
"""A hidden secret, in the token alphabet: a token around it still reads as one, and goes whole."""


def _redact_match(match: re.Match[str]) -> str:
    return match.group(0) if _REASON_CODE.fullmatch(match.group(0)) else _REDACTED


_HIDDEN: ContextVar[tuple[str, ...]] = ContextVar("chaveiro_hidden", default=())
"""What :func:`excerpt` never shows, in this thread or task: see :func:`hiding`."""


@contextmanager
def hiding(secrets: Iterable[str]) -> Iterator[None]:
    """Within, every :func:`excerpt` shows ``secrets`` as ``REDACTED``.

    For reading an answer to a request that carried them: the answer is parsed as
    it came (a short secret may well occur inside a valid token), and only what is
    shown of it, in a message or a log record, loses them. They are cut out before
    the excerpt is capped, so no half of one is left at its end.
    """
    wanted = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))
    mark = _HIDDEN.set(wanted)
    try:
        yield
    finally:
        _HIDDEN.reset(mark)


def excerpt(body: bytes | str, limit: int = _EXCERPT_CHARS) -> str:
    """Return a one-line, capped, token-free excerpt of a response body."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    for secret in _HIDDEN.get():
        text = text.replace(secret, _IN_A_TOKEN)
    text = text[: limit * 20]
    if "<" in text and ">" in text:
        title = re.search(r"<title[^>]*>(.*?)</title\s*>", text, re.IGNORECASE | re.DOTALL)
        text = title.group(1) if title else _TAGS.sub(" ", text)
    text = _TOKENISH.sub(_redact_match, _SPACES.sub(" ", text).strip())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def redact(error: _E, secrets: Iterable[str]) -> _E:
    """Remove every occurrence of ``secrets`` from ``error``'s message and text fields.

    The provider's own words (an ``error_description``, a body excerpt) are shown
    to the user; a provider that echoes the client secret must not make us leak it.
    The error is changed in place and returned.
    """
    wanted = [s for s in secrets if s]
    if not wanted:
        return error

    def clean(text: str) -> str:
        for secret in wanted:
            text = text.replace(secret, _REDACTED)
        return text

    error.args = tuple(clean(a) if isinstance(a, str) else a for a in error.args)
    for name in ("error", "error_description", "error_uri", "body_excerpt"):
        value = getattr(error, name, None)
        if isinstance(value, str):
            setattr(error, name, clean(value))
    return error


class ChaveiroError(Exception):
    """Base class of every error raised by chaveiro."""


class ConfigurationError(ChaveiroError, ValueError):
    """The auth object was given settings it cannot work with."""


class ClientCertificateError(ConfigurationError):
    """A client certificate (``client_cert=``) cannot be used: missing, unreadable, wrong
    password, a key that does not match, or outside its validity period."""


class InsecureURLError(ConfigurationError):
    """A token URL uses plain HTTP on a non-loopback host."""


class MissingSettingError(ConfigurationError):
    """A required setting (an argument or environment variable) is missing."""

    def __init__(self, message: str, *, names: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.names = names


class DiscoveryError(ChaveiroError):
    """The issuer's OpenID Connect discovery document could not be fetched or used.

    ``issuer`` is the issuer URL, ``status_code`` the HTTP status (0 when there
    was no answer).
    """

    def __init__(self, message: str, *, issuer: str = "", status_code: int = 0) -> None:
        super().__init__(message)
        self.issuer = issuer
        self.status_code = status_code


class IssuerUnreachableError(DiscoveryError):
    """No HTTP answer from the issuer: DNS, connection, TLS or timeout."""


class TokenError(ChaveiroError):
    """Getting an access token failed."""

    def __init__(self, message: str, *, token_url: str = "") -> None:
        super().__init__(message)
        self.token_url = token_url


class CredentialsRejectedError(TokenError):
    """The token endpoint refused the request with an RFC 6749 §5.2 error.

    ``error`` is the provider's code (``invalid_client``, ``invalid_scope``...),
    ``error_description`` its text, ``status_code`` the HTTP status.
    """

    def __init__(
        self,
        message: str,
        *,
        token_url: str = "",
        error: str = "",
        error_description: str = "",
        error_uri: str = "",
        status_code: int = 0,
    ) -> None:
        super().__init__(message, token_url=token_url)
        self.error = error
        self.error_description = error_description
        self.error_uri = error_uri
        self.status_code = status_code


class TokenEndpointError(TokenError):
    """The token endpoint answered with a failure status, or not at all.

    ``status_code`` is the HTTP status (0 when there was no answer),
    ``retry_after`` the seconds the server asked us to wait (or ``None``),
    ``body_excerpt`` a short, token-free extract of the body.
    """

    def __init__(
        self,
        message: str,
        *,
        token_url: str = "",
        status_code: int = 0,
        retry_after: float | None = None,
        body_excerpt: str = "",
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message, token_url=token_url)
        self.status_code = status_code
        self.retry_after = retry_after
        self.body_excerpt = body_excerpt
        self._retryable = retryable

    @property
    def retryable(self) -> bool:
        """True for network failures, 5xx and 429: worth asking again later.

        A failure that asking again cannot fix (a certificate that does not
        verify) is not retryable even without an HTTP status.
        """
        if self._retryable is not None:
            return self._retryable
        return self.status_code in {0, 429} or self.status_code >= 500


class TokenEndpointUnreachableError(TokenEndpointError):
    """No HTTP answer from the token endpoint: DNS, connection, TLS or timeout.

    ``reason`` names the cause in one stable word: ``timeout``, ``tls``, or the
    class name of the HTTP library's exception (``ConnectError``, ...).
    """

    def __init__(
        self,
        message: str,
        *,
        token_url: str = "",
        retryable: bool | None = None,
        reason: str = "",
    ) -> None:
        super().__init__(message, token_url=token_url, retryable=retryable)
        self.reason = reason


class InvalidTokenResponseError(TokenError):
    """The token endpoint answered 2xx, but not with a usable token."""


class ClientAssertionError(TokenError):
    """The source of an externally supplied client assertion (``client_assertion=``) failed.

    No token request was sent. The cause is chained (``__cause__``) when the
    source raised; ``source`` names the source, never the assertion.
    """

    def __init__(self, message: str, *, token_url: str = "", source: str = "") -> None:
        super().__init__(message, token_url=token_url)
        self.source = source


class DPoPNotSupportedError(InvalidTokenResponseError):
    """The token endpoint answered a DPoP token request with a Bearer token.

    The server ignored the DPoP proof: it does not support DPoP, or has it off
    for this client. Sending that token as Bearer would silently drop the
    protection, so chaveiro refuses it unless ``dpop_allow_bearer=True``.
    """
