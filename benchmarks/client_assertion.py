"""What a supplied client assertion costs, next to a client secret, on a local server.

- the token request: ``get_token()`` with nothing held (the process-wide token is
  forgotten before each call), with ``client_secret_post`` (the baseline), with
  ``client_assertion_file=`` (a file read per request) and with ``client_assertion=``
  (a function); and the same from asyncio, where the function runs in a worker thread;
- the warm path: a requests auth step with a held token, secret against file (the
  assertion source is never touched there: the ratio should be 1.00 within noise).

Prints medians of interleaved rounds as ratios against the baseline. Figures, not
assertions.

    .venv/bin/python benchmarks/client_assertion.py
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

from chaveiro import ClientCredentialsAuth
from chaveiro.testing import FakeTokenServer, WorkloadIssuer, reset

FETCHES = 60
STEPS = 20_000
ROUNDS = 5
SUBJECT = "system:serviceaccount:bench:app"


def _per_call_us(run: Callable[[], None], count: int) -> float:
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started) / count * 1e6


def main() -> None:
    with FakeTokenServer() as server, tempfile.TemporaryDirectory() as tmp:
        server.add_client("secret-app", "bench-secret-0123456789")
        cluster = WorkloadIssuer()
        server.trust_issuer(cluster.issuer, cluster.jwks)
        server.add_client("app", federated_issuer=cluster.issuer, federated_subject=SUBJECT)
        token = cluster.mint(SUBJECT, audience=server.issuer, lifetime=3600)
        path = Path(tmp, "token")
        path.write_text(token)
        url = server.oauth_token_url
        makers: dict[str, Callable[[], ClientCredentialsAuth]] = {
            "client_secret_post": lambda: ClientCredentialsAuth(
                url, "secret-app", "bench-secret-0123456789", auth_method="client_secret_post"
            ),
            "client_assertion_file": lambda: ClientCredentialsAuth(
                url, "app", client_assertion_file=path
            ),
            "client_assertion (function)": lambda: ClientCredentialsAuth(
                url, "app", client_assertion=lambda: token
            ),
        }

        def fetches(make: Callable[[], ClientCredentialsAuth]) -> Callable[[], None]:
            def run() -> None:
                for _ in range(FETCHES):
                    reset()
                    make().get_token()

            return run

        def async_fetches(make: Callable[[], ClientCredentialsAuth]) -> Callable[[], None]:
            async def each() -> None:
                for _ in range(FETCHES):
                    reset()
                    await make().aget_token()

            return lambda: asyncio.run(each())

        results: dict[str, list[float]] = {}
        for _ in range(ROUNDS):
            for name, make in makers.items():
                results.setdefault(f"sync  {name}", []).append(_per_call_us(fetches(make), FETCHES))
                results.setdefault(f"async {name}", []).append(
                    _per_call_us(async_fetches(make), FETCHES)
                )
        print(f"token request, µs (median of {ROUNDS} rounds of {FETCHES}):")
        for mode in ("sync ", "async"):
            base = statistics.median(results[f"{mode} client_secret_post"])
            for name in makers:
                value = statistics.median(results[f"{mode} {name}"])
                print(f"  {mode} {name:28} {value:9.0f}  x{value / base:.2f}")

        reset()
        warm = {name: make() for name, make in list(makers.items())[:2]}
        for auth in warm.values():
            auth.get_token()
        prepared = requests.Request("GET", server.api_url()).prepare()
        steps: dict[str, list[float]] = {}
        for _ in range(ROUNDS):
            for name, auth in warm.items():

                def step(auth: ClientCredentialsAuth = auth) -> None:
                    for _ in range(STEPS):
                        auth(prepared.copy())

                steps.setdefault(name, []).append(_per_call_us(step, STEPS))
        base = statistics.median(steps["client_secret_post"])
        print(f"warm requests auth step, µs (median of {ROUNDS} rounds of {STEPS}):")
        for name, values in steps.items():
            value = statistics.median(values)
            print(f"  {name:28} {value:9.2f}  x{value / base:.2f}")


if __name__ == "__main__":
    main()
