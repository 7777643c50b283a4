"""``chaveiro demo``: the library at work against the built-in local provider."""

from __future__ import annotations

import asyncio
import importlib.util
import tempfile
import time
from pathlib import Path
from types import ModuleType

import requests

from chaveiro._auth import ClientCredentialsAuth
from chaveiro._certs import client_tls
from chaveiro.providers import BitizeAuth, CidadaoAuth, ScorePositivoAuth, StackSpotAuth
from chaveiro.testing import FakeTokenServer

__all__ = ["run"]

_DEMO_ID = "demo-client"
_DEMO_SECRET = "demo-secret-not-real"


def _httpx_family() -> list[ModuleType]:
    """httpx and httpx2, those installed: the same auth object works with each."""
    names = [name for name in ("httpx", "httpx2") if importlib.util.find_spec(name) is not None]
    found = [importlib.import_module(name) for name in names]
    if not found:
        print("  (neither httpx nor httpx2 is installed: pip install 'chaveiro[httpx2]')")
    return found


def _row(step: str, what: str, server: FakeTokenServer) -> None:
    print(f"  {step:<34} {what:<34} token requests so far: {server.token_requests}")


def _providers(server: FakeTokenServer) -> None:
    adapters: list[tuple[str, ClientCredentialsAuth]] = [
        (
            "StackSpot",
            StackSpotAuth(_DEMO_ID, _DEMO_SECRET, token_url=server.stackspot_token_url("demo")),
        ),
        (
            "Acesso Cidadão",
            CidadaoAuth(_DEMO_ID, _DEMO_SECRET, "demo.read", token_url=server.cidadao_token_url),
        ),
        ("Bitize", BitizeAuth(_DEMO_ID, _DEMO_SECRET, token_url=server.bitize_token_url)),
        (
            "Score Positivo",
            ScorePositivoAuth(_DEMO_ID, _DEMO_SECRET, token_url=server.scorepositivo_token_url),
        ),
    ]
    api = server.api_url("/api/report")
    print(f"  {'provider':<16}{'calls':>6}{'401 replays':>13}{'token requests':>16}")
    for name, auth in adapters:
        before = server.token_requests
        session = requests.Session()
        session.auth = auth
        codes = [session.get(api).status_code for _ in range(10)]
        for library in _httpx_family():
            server.revoke_all()
            with library.Client(auth=auth) as client:
                codes += [client.get(api).status_code for _ in range(10)]
        ok = "all 200" if set(codes) == {200} else f"{codes.count(200)} x 200"
        print(
            f"  {name:<16}{len(codes):>6}{auth.stats.replayed:>13}"
            f"{server.token_requests - before:>16}   {ok}"
        )
    print("  (StackSpot first tries its refresh token, which the revocation also killed)")


def _httpx(
    server: FakeTokenServer,
    auth: ClientCredentialsAuth,
    api: str,
    library: ModuleType,
    lifetime: float,
) -> None:
    name = library.__name__
    print(f"\n{name}.Client (same auth object)")
    with library.Client(auth=auth) as client:
        _row("first call", f"HTTP {client.get(api).status_code}, token shared", server)
        time.sleep(max(0.0, lifetime - 1.0) + 0.1)
        _row("near expiry", f"HTTP {client.get(api).status_code}, renewed early", server)

    print(f"\n{name}.AsyncClient, 200 concurrent tasks")
    server.revoke_all()

    async def burst() -> list[int]:
        async with library.AsyncClient(auth=auth) as client:
            responses = await asyncio.gather(*(client.get(api) for _ in range(200)))
        return [r.status_code for r in responses]

    codes = asyncio.run(burst())
    _row("200 tasks, revoked token", f"{codes.count(200)} x HTTP 200", server)


def _aiohttp(server: FakeTokenServer, auth: ClientCredentialsAuth, api: str) -> None:
    if importlib.util.find_spec("aiohttp") is None:
        print("  (aiohttp is not installed: pip install 'chaveiro[aiohttp]')")
        return
    import aiohttp  # noqa: PLC0415 - an optional extra

    server.revoke_all()

    async def burst() -> list[int]:
        async with aiohttp.ClientSession(middlewares=(auth,)) as session:

            async def get() -> int:
                async with session.get(api) as response:
                    return response.status

            return await asyncio.gather(*(get() for _ in range(200)))

    codes = asyncio.run(burst())
    _row("200 tasks, revoked token", f"{codes.count(200)} x HTTP 200", server)


def _mtls() -> None:
    if importlib.util.find_spec("trustme") is None:
        print("  (trustme is not installed: pip install 'chaveiro[testing]')")
        return
    with FakeTokenServer(mtls=True) as bank, tempfile.TemporaryDirectory() as folder:
        print(f"  local bank on {bank.url}: client certificates required, tokens bound to them")
        tls = []
        for name in ("company-a", "company-b"):
            cert = bank.issue_client_cert(f"{name}.example", common_name=name)
            bank.add_client(f"pix-{name}", tls_client_auth_subject_dn=cert.subject_dn)
            p12 = Path(folder) / f"{name}.p12"
            p12.write_bytes(cert.to_pkcs12("demo-password"))
            tls.append(client_tls(p12, "demo-password", verify=bank.ca_file))
        auth = ClientCredentialsAuth(
            bank.oauth_token_url, "pix-company-a", auth_method="tls_client_auth", client_cert=tls[0]
        )
        api = bank.api_url("/api/cob")
        with requests.Session() as session:
            session.auth, session.cert = auth, tls[0].requests_cert
            status = session.get(api, verify=bank.ca_file).status_code
        print(f"  {'tls_client_auth with a .p12':<34} HTTP {status}, no secret sent")
        with requests.Session() as other:
            other.cert = tls[1].requests_cert
            token = auth.get_token().authorization
            headers = {"Authorization": token}
            stolen = other.get(api, headers=headers, verify=bank.ca_file).status_code
        print(f"  {'the same token, another cert':<34} HTTP {stolen}: bound to its certificate")
        for item in tls:
            item.close()


def run(*, lifetime: float = 3.0) -> int:
    """Run the demo; returns the exit status."""
    with FakeTokenServer(lifetime=lifetime) as server:
        server.add_client(_DEMO_ID, _DEMO_SECRET)
        print(f"local provider on {server.url} (tokens live {lifetime:g} s)\n")
        auth = ClientCredentialsAuth(
            server.oauth_token_url, _DEMO_ID, _DEMO_SECRET, scope="demo.read", leeway=1.0
        )
        session = requests.Session()
        session.auth = auth
        api = server.api_url("/api/orders")

        print("requests.Session")
        status = session.get(api).status_code
        _row("first call", f"HTTP {status}, token fetched", server)
        for _ in range(99):
            session.get(api)
        _row("99 more calls", "same token reused", server)
        server.revoke_all()
        response = session.get(api)
        history = ", ".join(str(r.status_code) for r in response.history)
        _row(
            "token revoked by the provider",
            f"{history} -> renewed, replayed: {response.status_code}",
            server,
        )

        for library in _httpx_family():
            _httpx(server, auth, api, library, lifetime)
        print("\naiohttp.ClientSession(middlewares=(auth,)), 200 concurrent tasks")
        _aiohttp(server, auth, api)
        print("\nevery provider adapter, requests then httpx and httpx2 (same auth object)")
        _providers(server)
        stats = auth.stats
        print(
            f"\n{server.api_requests} API calls, {server.token_requests} token requests"
            f" (fetched {stats.fetched}, reused {stats.reused}, replayed {stats.replayed})."
        )
    print("\nmutual TLS, as the Pix APIs of Brazilian banks want it")
    _mtls()
    return 0
