"""OpenID Connect discovery, sans I/O, and the per-process memory of what was found.

:func:`parse_configuration` turns the answer to ``GET <issuer>/.well-known/openid-configuration``
into :class:`ProviderMetadata`; :func:`choose_auth_method` picks how the client
authenticates; :data:`discovered` fetches each issuer's document once per process.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from chaveiro._errors import DiscoveryError, excerpt

__all__ = [
    "CERTIFICATE_AUTH_METHODS",
    "PREFERRED_AUTH_METHODS",
    "CertificateKind",
    "ProviderMetadata",
    "choose_auth_method",
    "discovered",
    "discovery_url",
    "parse_configuration",
]

PREFERRED_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "client_secret_jwt")
"""Client authentication with a secret, best first."""
CERTIFICATE_AUTH_METHODS = ("tls_client_auth", "self_signed_tls_client_auth")
"""Client authentication by the TLS client certificate alone (RFC 8705 §2), best first."""

_DEFAULT_METHODS = ("client_secret_basic",)  # OpenID Connect Discovery §3: when none is listed


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """What chaveiro uses from an issuer's discovery document."""

    issuer: str
    token_endpoint: str
    auth_methods: tuple[str, ...] | None
    """``token_endpoint_auth_methods_supported``; ``None`` when the document omits it."""
    mtls_token_endpoint: str | None = None
    """``mtls_endpoint_aliases.token_endpoint`` (RFC 8705 §5): where clients with a TLS
    client certificate send token requests, when the issuer names another address."""

    def token_endpoint_for(self, *, mtls: bool) -> str:
        """Where to send token requests, with a client certificate (``mtls``) or without."""
        return (self.mtls_token_endpoint or self.token_endpoint) if mtls else self.token_endpoint


def discovery_url(issuer: str) -> str:
    """Where the discovery document of ``issuer`` lives."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def parse_configuration(
    issuer: str, status: int, headers: Mapping[str, str], body: bytes
) -> ProviderMetadata:
    """The metadata in a discovery answer, or a :class:`DiscoveryError` saying what is wrong."""
    url = discovery_url(issuer)
    if not 200 <= status < 300:
        if 300 <= status < 400:
            where = excerpt(headers.get("Location") or "elsewhere", 120)
            advice = f"It redirects to {where}: pass the issuer URL that serves it directly."
        else:
            advice = "Check the issuer URL: it is the address the provider calls its issuer."
        text = excerpt(body)
        raise DiscoveryError(
            f"The issuer {issuer} answered HTTP {status} for {url}"
            + (f": {text}" if text else "")
            + f". {advice}",
            issuer=issuer,
            status_code=status,
        )
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        payload = None
    if not isinstance(payload, dict):
        raise DiscoveryError(
            f"The discovery document at {url} is not a JSON object"
            f" ({excerpt(body, 80) or 'empty'}). Check the issuer URL: it may point to a web"
            " page, not an OpenID Connect provider.",
            issuer=issuer,
            status_code=status,
        )
    named = payload.get("issuer")
    if not isinstance(named, str) or named.rstrip("/") != issuer.rstrip("/"):
        shown = excerpt(named, 120) if isinstance(named, str) else "no issuer"
        raise DiscoveryError(
            f"The discovery document at {url} names {shown!r} as its issuer, not {issuer!r}"
            " (OpenID Connect Discovery §4.3 requires them to be identical). Check the issuer"
            " URL; a document that claims another issuer is not trusted.",
            issuer=issuer,
            status_code=status,
        )
    token_endpoint = payload.get("token_endpoint")
    if not isinstance(token_endpoint, str) or not token_endpoint.strip():
        raise DiscoveryError(
            f"The discovery document of {issuer} has no token_endpoint. Pass token_url= to"
            " ClientCredentialsAuth directly.",
            issuer=issuer,
            status_code=status,
        )
    methods = payload.get("token_endpoint_auth_methods_supported")
    listed = tuple(m for m in methods if isinstance(m, str)) if isinstance(methods, list) else None
    aliases = payload.get("mtls_endpoint_aliases")
    alias = aliases.get("token_endpoint") if isinstance(aliases, dict) else None
    mtls = alias.strip() if isinstance(alias, str) and alias.strip() else None
    # The document's own spelling (a trailing slash kept): it is the audience of assertions.
    return ProviderMetadata(named, token_endpoint.strip(), listed, mtls)


CertificateKind = Literal["issued", "self-signed"]
"""A client certificate issued by a CA, or by itself."""


def choose_auth_method(
    metadata: ProviderMetadata, *, private_key: bool, certificate: CertificateKind | None = None
) -> str:
    """The client authentication to use with this issuer.

    ``private_key_jwt`` when a private key is given; a certificate method when
    only a client certificate is given (``certificate``, no secret):
    ``tls_client_auth`` then ``self_signed_tls_client_auth`` for one issued by a
    CA, ``self_signed_tls_client_auth`` for a self-signed one; otherwise the
    first of :data:`PREFERRED_AUTH_METHODS` the issuer supports. An issuer that
    lists nothing supports ``client_secret_basic``.
    """
    supported = metadata.auth_methods or _DEFAULT_METHODS
    if private_key:
        wanted: tuple[str, ...] = ("private_key_jwt",)
        advice = "Pass a client secret instead of private_key, or auth_method= to force one."
    elif certificate is not None:
        wanted = CERTIFICATE_AUTH_METHODS[certificate == "self-signed" :]
        advice = (
            "Pass the client secret too (client_secret_basic and the others work over mTLS),"
            " or auth_method= to force one."
        )
    else:
        wanted = PREFERRED_AUTH_METHODS
        advice = "Pass private_key= to use private_key_jwt, or auth_method= to force one."
    for method in wanted:
        if method in supported:
            return method
    listed = (
        "it lists: " + ", ".join(excerpt(m, 40) for m in supported[:10])
        if metadata.auth_methods
        else "it lists none, which means client_secret_basic only"
    )
    raise DiscoveryError(
        f"The issuer {metadata.issuer} accepts none of {', '.join(wanted)} at its token endpoint"
        f" ({listed}). {advice}",
        issuer=metadata.issuer,
    )


class _Discovered:
    """Discovery documents already fetched in this process, one fetch per issuer.

    A per-issuer lock is held across that issuer's fetch, so concurrent callers
    for the same issuer wait for one answer; failures are not remembered.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._found: dict[str, ProviderMetadata] = {}

    def get(self, issuer: str, fetch: Callable[[], ProviderMetadata]) -> ProviderMetadata:
        """The metadata of ``issuer``, calling ``fetch`` only if nobody has yet."""
        with self._lock:
            found = self._found.get(issuer)
            if found is not None:
                return found
            issuer_lock = self._locks.setdefault(issuer, threading.Lock())
        with issuer_lock:
            with self._lock:
                found = self._found.get(issuer)
            if found is None:
                found = fetch()
                with self._lock:
                    self._found[issuer] = found
        return found

    def clear(self) -> None:
        """Forget every discovered issuer (for tests)."""
        with self._lock:
            self._found.clear()

    def _after_fork_in_child(self) -> None:
        # Another thread may have held a lock at fork() time: start with fresh ones.
        self._lock = threading.Lock()
        self._locks = {}


discovered = _Discovered()
"""The process-wide memory of discovery documents."""

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=discovered._after_fork_in_child)
