"""The provider adapters as users write them. Type-checked by mypy --strict; NOT executed."""

from __future__ import annotations

import aiohttp
import httpx
import requests

from chaveiro import (
    BitizeAuth,
    CidadaoAuth,
    ClientCredentialsAuth,
    MemoryCache,
    ScorePositivoAuth,
    StackSpotAuth,
)
from chaveiro.providers import PROVIDERS


def with_requests() -> None:
    session = requests.Session()
    session.auth = StackSpotAuth.from_env()
    session.auth = StackSpotAuth(client_id="id", client_key="key", realm="acme", leeway=60.0)
    session.auth = StackSpotAuth("id", "key", token_url="https://idm.example/t", scope=["a"])
    session.auth = CidadaoAuth(
        client_id="id", client_secret="secret", scope=["api.a", "api.b"], cache=MemoryCache()
    )
    session.get("https://api.example.com/")


async def with_httpx() -> None:
    auth = BitizeAuth(consumer_key="key", secret_key="secret", timeout=(1.0, 5.0))
    with httpx.Client(auth=ScorePositivoAuth("id", "secret", only_hosts=["x.com"])) as client:
        client.get("https://x.com/")
    async with httpx.AsyncClient(auth=auth) as aclient:
        await aclient.get("https://api.example.com/")


async def with_aiohttp() -> None:
    adapters: list[ClientCredentialsAuth] = [
        StackSpotAuth.from_env(),
        CidadaoAuth.from_env(),
        BitizeAuth.from_env(),
        ScorePositivoAuth.from_env(),
    ]
    for auth in adapters:
        async with aiohttp.ClientSession(middlewares=(auth,)) as session:
            await session.get("https://api.example.com/")
    async with aiohttp.ClientSession(middlewares=[CidadaoAuth("id", "secret", scope="api")]):
        pass


def discovery_and_registry() -> None:
    auth: ClientCredentialsAuth = ClientCredentialsAuth.from_issuer(
        "https://idp.example.com", client_id="id", client_secret="secret", scope="api"
    )
    pix: ClientCredentialsAuth = ClientCredentialsAuth.from_issuer(
        "https://auth.bank.example", "id", client_cert="a.p12", client_cert_password="pw"
    )
    cidadao: ClientCredentialsAuth = PROVIDERS["cidadao"].from_env()
    del auth, pix, cidadao
