"""The public API as users write it. Type-checked by mypy --strict; NOT meant to be executed."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import httpx
import requests

import chaveiro
from chaveiro import (
    ChaveiroError,
    ClientAssertionError,
    ClientCredentialsAuth,
    FileCache,
    MemoryCache,
    RedisCache,
    StackSpotAuth,
    Token,
    TokenCache,
)
from chaveiro.workload import azure_workload_identity, github_actions_token, kubernetes_token


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


def shared_caches() -> None:
    on_this_machine: TokenCache = FileCache()
    in_a_directory: TokenCache = FileCache("/var/cache/myapp/tokens")
    fleet = RedisCache("redis://cache.internal:6379/0", prefix="myapp:", lock_lease=2.0)
    sentinel = RedisCache("redis+sentinel://sentinel-1:26379/mymaster/0")
    for cache in (on_this_machine, in_a_directory, fleet, sentinel):
        ClientCredentialsAuth("https://idp/token", "id", "secret", cache=cache)
    fleet.close()
    sentinel.close()
    stored: Token | None = on_this_machine.get("key")
    if stored is not None:
        restored: Token | None = Token.from_json(stored.to_json())
        del restored


def redis_clients() -> None:
    import redis  # noqa: PLC0415 - the optional dependency
    import redis.asyncio  # noqa: PLC0415
    from redis.cluster import RedisCluster  # noqa: PLC0415

    RedisCache(client=redis.Redis(), async_client=redis.asyncio.Redis())
    RedisCache(client=RedisCluster(host="cluster-node-1", port=6379))


async def shared_caches_async(cache: TokenCache, token: Token) -> None:
    await cache.aset("key", token)
    found: Token | None = await cache.aget("key")
    async with cache.alock("key", 5.0) as held:
        got: bool = held
        del got, found


def resilience_knobs() -> None:
    session = requests.Session()
    session.verify = "private-ca.pem"
    auth = ClientCredentialsAuth(
        "https://idp.example.com/token",
        "id",
        "secret",
        session=session,
        timeout=(3.0, 10.0),
        max_attempts=4,
        deadline=15.0,
        wait_timeout=20.0,
        only_hosts=["api.example.com", "*.example.org"],
        renew_on=(401, 403),
    )
    transport = httpx.HTTPTransport(retries=2)
    with httpx.Client(auth=auth, transport=transport, timeout=5.0) as client:
        client.get("https://api.example.com/")
    retry_after: float | None = chaveiro.TokenEndpointError("x").retry_after
    retryable: bool = chaveiro.TokenEndpointError("x").retryable
    del retry_after, retryable
    auth.close()


async def aget_token_with_a_client() -> None:
    auth = ClientCredentialsAuth("https://idp.example.com/token", "id", "secret", timeout=5.0)
    async with httpx.AsyncClient(verify=True) as client:
        token = await auth.aget_token(client=client)
    del token


async def with_aiohttp() -> None:
    auth = ClientCredentialsAuth("https://idp.example.com/token", "id", "secret")
    async with (
        aiohttp.ClientSession(middlewares=(auth,)) as session,
        session.get("https://api.example.com/orders") as response,
    ):
        status: int = response.status
        del status
    async with aiohttp.ClientSession() as plain:
        await plain.post("https://api.example.com/", data=b"{}", middlewares=[auth])
    middleware: aiohttp.ClientMiddlewareType = auth
    prepared: requests.PreparedRequest = auth(requests.Request("GET", "https://x/").prepare())
    del middleware, prepared


def with_client_certificates() -> None:
    tls: chaveiro.ClientTLS = chaveiro.client_tls("empresa.p12", "senha", verify="ca.pem")
    pair = chaveiro.client_tls(("empresa.crt", "empresa.key"))
    with httpx.Client(verify=tls.ssl_context) as client:
        client.get("https://pix.example.com/v2/cob")
    session = requests.Session()
    session.cert, session.verify = pair.requests_cert, pair.verify
    thumbprint: str = tls.thumbprint
    del thumbprint
    tls.close()
    error: chaveiro.ConfigurationError = chaveiro.ClientCertificateError("no certificate")
    del error


def with_client_assertions() -> None:
    own = ClientCredentialsAuth(
        "https://idp.example.com/token",
        "id",
        private_key=b"-----BEGIN PRIVATE KEY-----...",
        auth_method="private_key_jwt",
        issuer="https://idp.example.com",
        assertion_audience="token_endpoint",
    )
    by_file = ClientCredentialsAuth(
        "https://idp.example.com/token", "id", client_assertion_file=Path("/run/token")
    )
    by_function = ClientCredentialsAuth(
        "https://idp.example.com/token", "id", client_assertion=lambda: "a.jwt.value"
    )
    pod = ClientCredentialsAuth(
        "https://idp.example.com/token", "id", client_assertion=kubernetes_token()
    )
    job = ClientCredentialsAuth(
        "https://idp.example.com/token",
        "id",
        client_assertion=github_actions_token("api://AzureADTokenExchange"),
    )
    keycloak = StackSpotAuth(client_id="id", realm="shop", client_assertion=kubernetes_token())
    entra: ClientCredentialsAuth = azure_workload_identity("api://app/.default", leeway=10)
    try:
        for auth in (own, by_file, by_function, pod, job, keycloak, entra):
            auth.get_token()
    except ClientAssertionError as exc:
        source: str = exc.source
        del source


def with_dpop() -> None:
    auth = ClientCredentialsAuth(
        "https://idp.example.com/token",
        "id",
        "secret",
        dpop_key=Path("dpop.pem"),
        dpop_alg="ES256",
        dpop_allow_bearer=False,
    )
    ClientCredentialsAuth("https://idp.example.com/token", "id", "secret", dpop_key=True)
    ClientCredentialsAuth("https://idp.example.com/token", "id", "s", dpop_key=b"-----BEGIN")
    chaveiro.StackSpotAuth("id", "key", "realm", dpop_key="/run/secrets/dpop.pem")
    thumbprint: str | None = auth.dpop_thumbprint
    token = auth.get_token()
    proof: str = auth.dpop_proof("GET", "https://api.example.com/", token)
    retries: int = auth.stats.nonce_retries
    error: chaveiro.InvalidTokenResponseError = chaveiro.DPoPNotSupportedError("bearer")
    del thumbprint, proof, retries, error


def many_tenants() -> None:
    tokens: TokenCache = MemoryCache(max_entries=50_000)
    unbounded = MemoryCache(max_entries=None)
    bound: int | None = unbounded.max_entries
    auth = ClientCredentialsAuth("https://idp/token", "id", "secret", cache=tokens)
    waited: int = auth.stats.waited
    auth.close()
    del bound, waited
