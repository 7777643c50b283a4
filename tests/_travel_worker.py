"""Work done in pool processes by tests/test_travel_auth.py (importable by spawn and forkserver)."""

from __future__ import annotations

import os

import httpx
import requests

from chaveiro import ClientCredentialsAuth
from chaveiro._manager import wait_for_renewals


def call_api(carrier: ClientCredentialsAuth | requests.Session, url: str) -> tuple[int, list[int]]:
    """Call ``url`` with requests and with httpx; this process's id and the status codes."""
    if isinstance(carrier, requests.Session):
        with carrier:
            codes = [carrier.get(url, timeout=10).status_code]
            auth = carrier.auth
    else:
        auth = carrier
        codes = [requests.get(url, auth=auth, timeout=10).status_code]
    assert isinstance(auth, ClientCredentialsAuth)
    with httpx.Client(auth=auth, timeout=10) as client:
        codes.append(client.get(url).status_code)
    wait_for_renewals()
    auth.close()
    return os.getpid(), codes


def fetch_token(auth: ClientCredentialsAuth) -> str:
    """A token fetched in this process (no API call)."""
    token = auth.get_token().access_token
    wait_for_renewals()
    auth.close()
    return token


def call_api_with_aiohttp(auth: ClientCredentialsAuth, url: str) -> int:
    """Call ``url`` through an aiohttp session with ``auth`` as its middleware."""
    import asyncio  # noqa: PLC0415

    import aiohttp  # noqa: PLC0415

    async def call() -> int:
        async with (
            aiohttp.ClientSession(middlewares=(auth,)) as session,
            session.get(url) as response,
        ):
            return response.status

    return asyncio.run(call())
