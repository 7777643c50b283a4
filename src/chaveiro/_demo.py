"""``chaveiro demo``: the library at work against the built-in local provider."""

from __future__ import annotations

import asyncio
import time

import httpx
import requests

from chaveiro._auth import ClientCredentialsAuth
from chaveiro.testing import FakeTokenServer

__all__ = ["run"]

_DEMO_ID = "demo-client"
_DEMO_SECRET = "demo-secret-not-real"


def _row(step: str, what: str, server: FakeTokenServer) -> None:
    print(f"  {step:<34} {what:<34} token requests so far: {server.token_requests}")


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

        print("\nhttpx.Client (same auth object)")
        with httpx.Client(auth=auth) as client:
            _row("first call", f"HTTP {client.get(api).status_code}, token shared", server)
            time.sleep(max(0.0, lifetime - 1.0) + 0.1)
            _row("near expiry", f"HTTP {client.get(api).status_code}, renewed early", server)

        print("\nhttpx.AsyncClient, 200 concurrent tasks")
        server.revoke_all()

        async def burst() -> list[int]:
            async with httpx.AsyncClient(auth=auth) as client:
                responses = await asyncio.gather(*(client.get(api) for _ in range(200)))
            return [r.status_code for r in responses]

        codes = asyncio.run(burst())
        _row("200 tasks, revoked token", f"{codes.count(200)} x HTTP 200", server)
        stats = auth.stats
        print(
            f"\n{server.api_requests} API calls, {server.token_requests} token requests"
            f" (fetched {stats.fetched}, reused {stats.reused}, replayed {stats.replayed})."
        )
    return 0
