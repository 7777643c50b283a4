"""The PROVIDERS mapping and the adapters as public names."""

from __future__ import annotations

import pytest
import requests

import chaveiro
from chaveiro import (
    BitizeAuth,
    CidadaoAuth,
    ClientCredentialsAuth,
    CredentialsRejectedError,
    ScorePositivoAuth,
    StackSpotAuth,
)
from chaveiro.providers import PROVIDERS
from chaveiro.testing import FakeTokenServer
from tests.conftest import CLIENT_SECRET, assert_no_secrets


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


WRONG = "wrong-Secret-That-Must-Never-Show-0123456789"


def _wrong(name: str, server: FakeTokenServer) -> ClientCredentialsAuth:
    if name == "stackspot":
        return StackSpotAuth("app-client", WRONG, token_url=server.stackspot_token_url())
    if name == "cidadao":
        return CidadaoAuth("app-client", WRONG, "api", token_url=server.cidadao_token_url)
    if name == "bitize":
        return BitizeAuth("app-client", WRONG, token_url=server.bitize_token_url)
    return ScorePositivoAuth("app-client", WRONG, token_url=server.scorepositivo_token_url)


@pytest.mark.parametrize("name", list(PROVIDERS))
def test_rejections_and_logs_hold_no_secret(
    server: FakeTokenServer, chaveiro_logs: pytest.LogCaptureFixture, name: str
):
    """A rejected secret appears in neither the error nor any log record; tokens neither."""
    with pytest.raises(CredentialsRejectedError) as caught:
        requests.get(server.api_url(), auth=_wrong(name, server), timeout=10)
    good = StackSpotAuth("app-client", CLIENT_SECRET, token_url=server.stackspot_token_url())
    requests.get(server.api_url(), auth=good, timeout=10)
    texts = [str(caught.value), repr(caught.value), chaveiro_logs.text]
    texts += [record.getMessage() for record in chaveiro_logs.records]
    assert_no_secrets(texts, [WRONG, CLIENT_SECRET, *server.issued_tokens])
