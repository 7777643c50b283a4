"""What every HTTP adapter shares: its state, host scoping, and the reading of failures.

Each HTTP library has its own room (``_requests``, ``_httpx``, ``_aiohttp``);
each is a mixin over :class:`AuthCore`, and :class:`ClientCredentialsAuth`
assembles them. This module imports no HTTP library: exceptions from one are
recognised by their class, looked up only if that library is already loaded.
"""

from __future__ import annotations

import logging
import re
import ssl
import sys
from collections.abc import Mapping
from typing import ClassVar, Literal

from chaveiro._caches import TokenCache
from chaveiro._certs import ClientTLS
from chaveiro._config import HostMatcher
from chaveiro._dialect import MAX_BODY_BYTES, ClientSettings, Dialect
from chaveiro._dpop import DPoP, asks_for_nonce, ath_of
from chaveiro._errors import (
    InvalidTokenResponseError,
    TokenEndpointUnreachableError,
    excerpt,
)
from chaveiro._httpx_family import CORES, LIBRARIES
from chaveiro._manager import TokenManager
from chaveiro._token import Token

__all__ = [
    "NONCE",
    "RENEW",
    "AuthCore",
    "CappedBody",
    "Next",
    "declared_too_large",
    "too_large",
    "unreachable",
]

logger = logging.getLogger("chaveiro")

_TIMEOUTS = (
    *((library, "TimeoutException") for library in (*LIBRARIES, *CORES)),
    ("requests", "Timeout"),
    ("aiohttp", "ServerTimeoutError"),
    ("aiohttp", "ConnectionTimeoutError"),
    ("asyncio.exceptions", "TimeoutError"),  # not the builtin TimeoutError before Python 3.11
)
_TLS_ERRORS = (("requests.exceptions", "SSLError"), ("aiohttp", "ClientSSLError"))

NONCE: Literal["nonce"] = "nonce"
"""Send the request again, same token, with a proof that carries the server's new nonce."""
RENEW: Literal["renew"] = "renew"
"""Renew the token (once for every caller) and send the request again with the new one."""
Next = Literal["nonce", "renew"] | None


class AuthCore:
    """The state every HTTP adapter reads; set up by ``ClientCredentialsAuth.__init__``."""

    dialect: ClassVar[Dialect]
    replay_on_401: bool
    _settings: ClientSettings
    _manager: TokenManager
    _cache: TokenCache
    _hosts: HostMatcher | None
    _renew_on: frozenset[int]
    _timeout: tuple[float, float]
    _tls: ClientTLS | None
    _dpop: DPoP | None

    def _applies(self, host: str | None) -> bool:
        """True if the token may be sent to ``host`` (``only_hosts=``)."""
        hosts = self._hosts
        if hosts is None:
            return True
        host = (host or "").lower().rstrip(".")
        return host in hosts[0] or any(host.endswith(suffix) for suffix in hosts[1])

    def _renews(self, status: int) -> bool:
        """True if an API answer with ``status`` may mean that our token is dead."""
        return self.replay_on_401 and status in self._renew_on

    def _replayed(self, token: Token) -> None:
        self._manager.replayed(token)

    # ---- DPoP (RFC 9449): what every room asks, in one place --------------------------------

    def _proof(self, method: str, url: str, token: Token) -> str | None:
        """The ``DPoP`` header for an API request that carries ``token``; None for Bearer.

        Made when the request is final, right before it is sent: a fresh ``jti``,
        the server's newest nonce, and ``ath`` (kept with the token).
        """
        dpop = self._dpop
        if dpop is None or token.token_type != "DPoP":
            return None
        return dpop.proof(method, url, self._manager.clock(), token.ath)

    def _reproof(self, method: str, url: str, authorization: str) -> str | None:
        """The ``DPoP`` header for a request sent again with ``Authorization: authorization``."""
        scheme, _, access_token = authorization.partition(" ")
        dpop = self._dpop
        if dpop is None or scheme != "DPoP":
            return None
        return dpop.proof(method, url, self._manager.clock(), ath_of(access_token))

    def _after(
        self,
        url: str,
        status: int,
        headers: Mapping[str, str],
        proof: str | None,
        *,
        nonce_retried: bool = False,
        renewed: bool = False,
    ) -> Next:
        """What an API answer to a request that carried our token calls for.

        ``proof`` is the request's DPoP proof (None for a Bearer token). The
        answer's ``DPoP-Nonce``, whatever its status, becomes that server's
        nonce. A ``401`` whose challenge says ``use_dpop_nonce`` (RFC 9449 §9)
        calls for :data:`NONCE` once, if it gave a nonce the proof did not carry,
        and never for a renewal: the server refused the proof, not the token. A
        status in ``renew_on`` calls for :data:`RENEW` once (``replay_on_401``).
        """
        dpop = self._dpop
        if dpop is not None and proof is not None:
            offered = dpop.heard(url, headers)
            if status == 401 and asks_for_nonce(headers):
                if nonce_retried or not dpop.retry_with_nonce(proof, offered):
                    return None
                self._manager.slot.stats.nonce_retries += 1
                logger.debug("the API asked for a DPoP nonce; sending the request once more")
                return NONCE
        if not renewed and self._renews(status):
            return RENEW
        return None


def _loaded(pairs: tuple[tuple[str, str], ...]) -> tuple[type[BaseException], ...]:
    """The exception classes named in ``pairs`` whose modules are already imported."""
    found: list[type[BaseException]] = []
    for module, name in pairs:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


def _chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(chain) < 8:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    return chain


_CLIENT_CERT_ALERTS = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "it requires a client certificate and none was presented",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "it refused the client certificate as expired",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "it refused the client certificate as revoked",
    "TLSV1_ALERT_UNKNOWN_CA": "it does not trust the issuer of the client certificate",
    "SSLV3_ALERT_BAD_CERTIFICATE": "it refused the client certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "it refused the client certificate",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "it refused the client certificate",
    "TLSV1_ALERT_ACCESS_DENIED": "it refused access to this client certificate",
}
_CLIENT_CERT_ADVICE = (
    "Pass client_cert= (the .p12/.pfx, or the .crt and .key, issued for this client, with"
    " client_cert_password=), check that it is the current one for this environment, and give"
    " the same certificate to the session= or httpx client that sends the token request:"
    " chaveiro.client_tls(...).ssl_context or .requests_cert."
)
_SSL_REASON = re.compile(r"\[SSL: ([A-Z0-9_]+)\]")


def _client_cert_refusal(chain: list[BaseException], text: str) -> str | None:
    """What the server's TLS alert says about our client certificate, if it says anything."""
    reasons = [getattr(e, "reason", None) for e in chain if isinstance(e, ssl.SSLError)]
    reasons += _SSL_REASON.findall(text)
    for reason in reasons:
        if reason in _CLIENT_CERT_ALERTS:
            return f"{_CLIENT_CERT_ALERTS[reason]} (TLS alert {reason})"
    return None


def unreachable(
    url: str, exc: BaseException, *, what: str = "the token endpoint"
) -> TokenEndpointUnreachableError:
    """``exc``, raised while sending a token request to ``url``, as our typed error.

    ``what`` names the address in the message (discovery names the issuer).
    """
    chain = _chain(exc)
    text = " ".join(str(e) for e in chain)
    retryable = None
    reason = "tls"
    tls_errors: tuple[type[BaseException], ...] = (ssl.SSLError, *_loaded(_TLS_ERRORS))
    timeouts: tuple[type[BaseException], ...] = (TimeoutError, *_loaded(_TIMEOUTS))
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in chain) or (
        "CERTIFICATE_VERIFY_FAILED" in text
    ):
        summary = "TLS verification failed: the certificate is not trusted or not for this host"
        advice = (
            "If the endpoint uses a private CA, give it to the HTTP client that sends the"
            " token request: session.verify='ca.pem' on the requests session passed as"
            " session=, httpx.Client(verify=ssl_context), or the aiohttp session's"
            " aiohttp.TCPConnector(ssl=ssl_context); REQUESTS_CA_BUNDLE also works"
            " for the default session. Do not turn verification off."
        )
        retryable = False  # asking again gets the same certificate
    elif (refusal := _client_cert_refusal(chain, text)) is not None:
        summary, advice = refusal, _CLIENT_CERT_ADVICE
        retryable = False  # the same certificate gets the same answer
    elif any(isinstance(e, tls_errors) for e in chain):
        summary = "the TLS handshake failed"
        advice = (
            "Check that token_url uses the right scheme and port, and any TLS proxy. If the"
            " endpoint requires a client certificate (mTLS, as Pix APIs do), pass client_cert=."
        )
    elif any(isinstance(e, timeouts) for e in chain):
        summary = "it did not answer in time"
        advice = "chaveiro will try again after a short pause; timeout= sets the limits."
        reason = "timeout"
    else:
        summary = "no answer"
        reason = type(exc).__name__
        advice = "Check the URL, DNS, proxy settings and network."
    return TokenEndpointUnreachableError(
        f"Could not reach {what} {url}: {summary} ({type(exc).__name__}:"
        f" {excerpt(str(exc), 160)}). {advice}",
        token_url=url,
        retryable=retryable,
        reason=reason,
    )


def too_large(url: str) -> InvalidTokenResponseError:
    return InvalidTokenResponseError(
        f"The token endpoint {url} sent more than {MAX_BODY_BYTES} bytes: that is not a token"
        " response. Check token_url.",
        token_url=url,
    )


def declared_too_large(headers: Mapping[str, str]) -> bool:
    """True if ``Content-Length`` already says the body is over the cap: refuse it unread."""
    length = headers.get("Content-Length") or ""  # every HTTP library's headers ignore case
    return length.strip().isdigit() and int(length) > MAX_BODY_BYTES


class CappedBody:
    """A response body gathered chunk by chunk, refused past ``MAX_BODY_BYTES`` when ``capped``.

    A token response that says (``Content-Length``) or turns out to be over the
    cap is not a token response: :func:`too_large`, without reading the rest.
    """

    def __init__(self, url: str, headers: Mapping[str, str], *, capped: bool = True) -> None:
        if capped and declared_too_large(headers):
            raise too_large(url)
        self.url, self.capped = url, capped
        self.chunks: list[bytes] = []
        self.size = 0

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.capped and self.size > MAX_BODY_BYTES:
            raise too_large(self.url)
        self.chunks.append(chunk)

    def body(self) -> bytes:
        return b"".join(self.chunks)
