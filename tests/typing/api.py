"""The public API as users write it. Type-checked by mypy --strict; NOT meant to be executed."""

from __future__ import annotations

import httpx
import requests

import chaveiro
from chaveiro import ChaveiroError, ClientCredentialsAuth, MemoryCache, Token, TokenCache


def with_requests() -> None:
    session = requests.Session()
    session.auth = ClientCredentialsAuth(
        token_url="https://idp.example.com/oauth/token",
        client_id="id",
        client_secret="secret",
        scope=["api.read", "api.write"],
        cache=MemoryCache(),
    )
    session.get("https://api.example.com/")


def with_httpx() -> None:
    auth = ClientCredentialsAuth("https://idp.example.com/token", "id", "secret")
    with httpx.Client(auth=auth) as client:
        client.get("https://api.example.com/")
    token: Token = auth.get_token()
    header: str = token.authorization
    expires_at: float = token.expires_at
    del header, expires_at


async def with_async() -> None:
    auth = ClientCredentialsAuth.from_env(prefix="MYAPI")
    async with httpx.AsyncClient(auth=auth) as client:
        await client.get("https://api.example.com/")
    token = await auth.aget_token()
    reveal: str = token.access_token
    del reveal


def errors() -> None:
    cache: TokenCache = MemoryCache()
    del cache
    try:
        ClientCredentialsAuth("https://idp/token", "id", "secret").get_token()
    except chaveiro.CredentialsRejectedError as exc:
        code: str = exc.error
        del code
    except ChaveiroError:
        pass
