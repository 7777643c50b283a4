"""chaveiro: OAuth 2.0 client-credentials tokens for requests, httpx and aiohttp.

>>> session.auth = ClientCredentialsAuth(token_url=..., client_id=..., client_secret=...)

The token is fetched on first use, shared by every request, thread, task and
auth object with the same identity, renewed before it expires, and renewed with
the request replayed once when the API answers 401.
"""

from __future__ import annotations

from chaveiro._auth import ClientCredentialsAuth
from chaveiro._caches import FileCache, MemoryCache, TokenCache
from chaveiro._certs import ClientTLS, client_tls
from chaveiro._errors import (
    ChaveiroError,
    ClientCertificateError,
    ConfigurationError,
    CredentialsRejectedError,
    DiscoveryError,
    InsecureURLError,
    InvalidTokenResponseError,
    IssuerUnreachableError,
    MissingSettingError,
    TokenEndpointError,
    TokenEndpointUnreachableError,
    TokenError,
)
from chaveiro._flight import Stats
from chaveiro._redis import RedisCache
from chaveiro._token import Token
from chaveiro.providers import BitizeAuth, CidadaoAuth, ScorePositivoAuth, StackSpotAuth

__all__ = [
    "BitizeAuth",
    "ChaveiroError",
    "CidadaoAuth",
    "ClientCertificateError",
    "ClientCredentialsAuth",
    "ClientTLS",
    "ConfigurationError",
    "CredentialsRejectedError",
    "DiscoveryError",
    "FileCache",
    "InsecureURLError",
    "InvalidTokenResponseError",
    "IssuerUnreachableError",
    "MemoryCache",
    "MissingSettingError",
    "RedisCache",
    "ScorePositivoAuth",
    "StackSpotAuth",
    "Stats",
    "Token",
    "TokenCache",
    "TokenEndpointError",
    "TokenEndpointUnreachableError",
    "TokenError",
    "client_tls",
]

for _name in __all__:
    globals()[_name].__module__ = "chaveiro"
del _name


def __getattr__(name: str) -> str:
    if name == "__version__":
        from importlib.metadata import version  # noqa: PLC0415 - only when asked

        return version("chaveiro")
    raise AttributeError(f"module 'chaveiro' has no attribute {name!r}")
