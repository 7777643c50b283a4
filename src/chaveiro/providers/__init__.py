"""Provider adapters: :class:`~chaveiro.ClientCredentialsAuth` with one provider's defaults.

Each module holds one provider: its :class:`~chaveiro._dialect.Dialect`, default
token URL, environment variable names and at most a couple of small functions.
:data:`PROVIDERS` maps short names to the adapter classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from chaveiro._auth import ClientCredentialsAuth
from chaveiro.providers.bitize import BitizeAuth
from chaveiro.providers.cidadao import CidadaoAuth
from chaveiro.providers.scorepositivo import ScorePositivoAuth
from chaveiro.providers.stackspot import StackSpotAuth

__all__ = ["PROVIDERS", "BitizeAuth", "CidadaoAuth", "ScorePositivoAuth", "StackSpotAuth"]

PROVIDERS: Mapping[str, type[ClientCredentialsAuth]] = MappingProxyType(
    {
        "stackspot": StackSpotAuth,
        "cidadao": CidadaoAuth,
        "bitize": BitizeAuth,
        "scorepositivo": ScorePositivoAuth,
    }
)
"""Adapter classes by name (read-only), e.g. ``PROVIDERS["cidadao"].from_env()``."""
