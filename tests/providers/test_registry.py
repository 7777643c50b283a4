"""The PROVIDERS mapping and the adapters as public names."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

import chaveiro
from chaveiro import (
    BitizeAuth,
    CidadaoAuth,
    ClientCredentialsAuth,
    ConfigurationError,
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


# ---- <PREFIX>_CLIENT_CERT: every adapter reads it ------------------------------------------------


def _environ(cls: type[ClientCredentialsAuth], server: FakeTokenServer) -> dict[str, str]:
    """The variables ``cls.from_env()`` needs to reach ``server`` with the client "app"."""
    urls = {
        StackSpotAuth: server.stackspot_token_url("acme"),
        CidadaoAuth: server.cidadao_token_url,
        BitizeAuth: server.bitize_token_url,
        ScorePositivoAuth: server.scorepositivo_token_url,
        ClientCredentialsAuth: server.oauth_token_url,
    }
    values = {
        "CLIENT_ID": "app",
        "CONSUMER_KEY": "app",
        "CLIENT_SECRET": CLIENT_SECRET,
        "CLIENT_KEY": CLIENT_SECRET,
        "SECRET_KEY": CLIENT_SECRET,
        "SCOPE": "api.read",
        "REALM": "acme",
        "TOKEN_URL": urls[cls],
    }
    return {
        f"{cls.env_prefix}_{suffix}": values[suffix]
        for _, suffix, required in cls.env_fields
        if required is not False or suffix == "TOKEN_URL"
    }


@pytest.mark.parametrize(
    "cls", [*PROVIDERS.values(), ClientCredentialsAuth], ids=lambda c: c.__name__
)
def test_every_adapter_reads_the_client_certificate_from_the_environment(
    cls: type[ClientCredentialsAuth], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """<PREFIX>_CLIENT_CERT and _CLIENT_CERT_PASSWORD, at a server that requires a certificate.

    The token request presents the certificate, and the token is bound to it.
    """
    with FakeTokenServer(mtls=True) as server:
        server.add_client("app", CLIENT_SECRET)
        cert = server.issue_client_cert("app.example")
        p12 = tmp_path / "client.p12"
        p12.write_bytes(cert.to_pkcs12("pfx-password"))
        # a bank's CA that certifi knows, as far as this test is concerned
        monkeypatch.setattr("chaveiro._certs._default_cafile", lambda: server.ca_file)
        environ = _environ(cls, server)
        environ[f"{cls.env_prefix}_CLIENT_CERT"] = str(p12)
        environ[f"{cls.env_prefix}_CLIENT_CERT_PASSWORD"] = "pfx-password"
        auth = cls.from_env(environ=environ)
        assert auth.tls is not None
        assert auth.tls.thumbprint == cert.thumbprint
        assert auth.get_token().access_token in server.issued_tokens
        [sent] = server.token_request_log
        assert sent.client_cert_thumbprint == cert.thumbprint
        del environ[f"{cls.env_prefix}_CLIENT_CERT"]
        with pytest.raises(ConfigurationError, match="client_cert_password= was given without"):
            cls.from_env(environ=environ)


@pytest.mark.parametrize(
    ("make", "option"),
    [
        (lambda **kw: BitizeAuth("id", CLIENT_SECRET, **kw), "scope"),
        (lambda **kw: ScorePositivoAuth("id", CLIENT_SECRET, **kw), "scope"),
        (lambda **kw: CidadaoAuth("id", CLIENT_SECRET, "api", **kw), "audience"),
        (lambda **kw: StackSpotAuth("id", CLIENT_SECRET, "acme", **kw), "auth_method_typo"),
    ],
)
def test_an_adapter_refuses_an_option_it_does_not_take(make, option: str):
    """An option outside AuthOptions fails at construction, not at the provider as a 400."""
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{option}'"):
        make(**{option: "x"})
