"""chaveiro: OAuth 2.0 client-credentials tokens for requests, httpx, httpx2 and aiohttp.

>>> session.auth = ClientCredentialsAuth(token_url=..., client_id=..., client_secret=...)

The token is fetched on first use, shared by every request, thread, task and
auth object with the same identity, renewed before it expires, and renewed with
the request replayed once when the API answers 401.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chaveiro._auth import ClientCredentialsAuth
    from chaveiro._caches import MemoryCache, TokenCache
    from chaveiro._certs import ClientTLS, client_tls
    from chaveiro._errors import (
        ChaveiroError,
        ClientAssertionError,
        ClientCertificateError,
        ConfigurationError,
        CredentialsRejectedError,
        DiscoveryError,
        DPoPNotSupportedError,
        InsecureURLError,
        InvalidTokenResponseError,
        IssuerUnreachableError,
        MissingSettingError,
        TokenEndpointError,
        TokenEndpointUnreachableError,
        TokenError,
    )
    from chaveiro._file_cache import FileCache
    from chaveiro._flight import Stats
    from chaveiro._redis import RedisCache
    from chaveiro._token import Token
    from chaveiro.providers import BitizeAuth, CidadaoAuth, ScorePositivoAuth, StackSpotAuth

    __version__: str

__all__ = [
    "BitizeAuth",
    "ChaveiroError",
    "CidadaoAuth",
    "ClientAssertionError",
    "ClientCertificateError",
    "ClientCredentialsAuth",
    "ClientTLS",
    "ConfigurationError",
    "CredentialsRejectedError",
    "DPoPNotSupportedError",
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

_SOURCES = {
    "chaveiro._auth": ("ClientCredentialsAuth",),
    "chaveiro._caches": ("MemoryCache", "TokenCache"),
    "chaveiro._file_cache": ("FileCache",),
    "chaveiro._certs": ("ClientTLS", "client_tls"),
    "chaveiro._errors": (
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
    ),
    "chaveiro._flight": ("Stats",),
    "chaveiro._redis": ("RedisCache",),
    "chaveiro._token": ("Token",),
    "chaveiro.providers": ("BitizeAuth", "CidadaoAuth", "ScorePositivoAuth", "StackSpotAuth"),
}
"""Where each public name lives. ``import chaveiro`` alone loads none of them, so the
command line can answer from its file cache without loading requests or httpx; the
first public name used loads them all, as one import used to."""


def _load() -> None:
    from importlib import import_module  # noqa: PLC0415

    public = globals()
    for module_name, names in _SOURCES.items():
        module = import_module(module_name)
        for name in names:
            value = getattr(module, name)
            value.__module__ = "chaveiro"
            public[name] = value


def __getattr__(name: str) -> object:
    if name in __all__:
        _load()
        return globals()[name]
    if name == "__version__":
        from chaveiro._version import __version__  # noqa: PLC0415 - only when asked

        return __version__
    raise AttributeError(f"module 'chaveiro' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
