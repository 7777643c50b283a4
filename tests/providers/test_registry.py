"""The PROVIDERS mapping and the adapters as public names."""

from __future__ import annotations

import pytest

import chaveiro
from chaveiro import (
    BitizeAuth,
    CidadaoAuth,
    ClientCredentialsAuth,
    ScorePositivoAuth,
    StackSpotAuth,
)
from chaveiro.providers import PROVIDERS
from tests.conftest import CLIENT_SECRET


def test_providers_maps_names_to_adapters():
    """PROVIDERS has the four short names the command line uses."""
    assert dict(PROVIDERS) == {
        "stackspot": StackSpotAuth,
        "cidadao": CidadaoAuth,
        "bitize": BitizeAuth,
        "scorepositivo": ScorePositivoAuth,
    }
    assert all(issubclass(cls, ClientCredentialsAuth) for cls in PROVIDERS.values())


def test_providers_is_read_only():
    """Nobody can add or replace a provider at run time."""
    with pytest.raises(TypeError):
        PROVIDERS["other"] = ClientCredentialsAuth  # type: ignore[index]


def test_adapters_are_exported_from_chaveiro():
    """The adapters are public names of the chaveiro package."""
    for cls in PROVIDERS.values():
        assert cls.__name__ in chaveiro.__all__
        assert getattr(chaveiro, cls.__name__) is cls
        assert cls.__module__ == "chaveiro"


@pytest.mark.parametrize(
    "auth",
    [
        StackSpotAuth("id", CLIENT_SECRET, "acme"),
        CidadaoAuth("id", CLIENT_SECRET, "api"),
        BitizeAuth("id", CLIENT_SECRET),
        ScorePositivoAuth("id", CLIENT_SECRET),
    ],
    ids=lambda auth: type(auth).__name__,
)
def test_repr_shows_no_secret(auth: ClientCredentialsAuth):
    """repr() and str() of an adapter show its URL and id, never the secret."""
    assert CLIENT_SECRET not in repr(auth)
    assert CLIENT_SECRET not in str(auth)
    assert repr(auth).startswith(f"{type(auth).__name__}(token_url='https://")
