"""Memory per tenant for a gateway that makes an auth object per tenant.

1. The warm auth step (requests) of one tenant, with 1 identity in its cache and
   with 50,000 in the process-wide cache: µs per call, interleaved rounds, as a ratio.
2. Bytes per live identity, the auth object included, for 50,000 identities:
   the growth over a baseline taken in this run (tracemalloc), divided by 50,000.
3. Bytes left per identity once every auth object is gone: before expiry (the
   tokens are kept for the tenants' next auth objects), after expiry with no
   activity, and after expiry and normal activity: a few hot tenants served with
   an auth object made per request, until nothing is left to let go (bounded).

The token endpoint answers in-process, through a requests transport adapter on
the one ``session=`` every auth object shares (as a gateway should: see the
README, "Many tenants"), with a JWT of the size an RS256 provider issues; a
clock the script moves stands for an hour going by.

    .venv/bin/python benchmarks/memory.py [--identities N]

Figures, not assertions; every loop is bounded.
"""

from __future__ import annotations

import argparse
import base64
import gc
import io
import json
import os
import statistics
import time
import tracemalloc
from collections.abc import Callable, Mapping
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter

from chaveiro import ClientCredentialsAuth, MemoryCache, TokenCache
from chaveiro._caches import default_cache
from chaveiro._slots import count
from chaveiro.testing import reset

TOKEN_URL = "https://idp.example/oauth2/token"
LIFETIME = 3600
STEP_CALLS = 20_000
ROUNDS = 15
HOT_TENANTS = 10
MAX_ACTIVITY = 20_000
"""At most this many requests of the hot tenants in part 3."""


class Clock:
    """The wall clock, moved by hand when an hour must go by."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class LocalIdP(HTTPAdapter):
    """Answers every token request in-process with a new RS256-sized JWT."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.issued = 0

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.issued += 1
        now = int(self.clock())
        header = _b64(b'{"alg":"RS256","typ":"at+jwt","kid":"k-2024-01"}')
        claims = {
            "iss": "https://idp.example",
            "sub": f"client-{self.issued}",
            "aud": "https://api.example",
            "iat": now,
            "exp": now + LIFETIME,
            "jti": os.urandom(16).hex(),
            "scope": "api.read api.write",
        }
        jwt = f"{header}.{_b64(json.dumps(claims).encode())}.{_b64(os.urandom(256))}"
        body = json.dumps(
            {"access_token": jwt, "token_type": "Bearer", "expires_in": LIFETIME}
        ).encode()
        raw = urllib3.HTTPResponse(
            body=io.BytesIO(body),
            headers={"Content-Type": "application/json", "Content-Length": str(len(body))},
            status=200,
            preload_content=False,
        )
        return self.build_response(request, raw)


def tenants(
    first: int, n: int, session: requests.Session, clock: Clock, cache: TokenCache | None = None
) -> list[ClientCredentialsAuth]:
    """``n`` tenants' auth objects, each with its token."""
    made = []
    for i in range(first, first + n):
        auth = ClientCredentialsAuth(
            TOKEN_URL,
            f"tenant-{i}",
            f"secret-of-tenant-{i}",
            session=session,
            clock=clock,
            cache=cache,
        )
        auth.get_token()
        made.append(auth)
    return made


def per_call(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def warm_step(auth: ClientCredentialsAuth) -> Callable[[], float]:
    preps = [requests.Request("GET", "https://api.example/x").prepare() for _ in range(STEP_CALLS)]

    def run() -> float:
        for p in preps:
            p.hooks["response"].clear()
        it = iter(preps)
        return per_call(lambda: auth(next(it)), STEP_CALLS)

    return run


def median_rounds(variants: Mapping[str, Callable[[], float]]) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(ROUNDS):
        for name, run in variants.items():  # interleaved: drift hits every variant alike
            samples[name].append(run())
    return {name: statistics.median(values) for name, values in samples.items()}


def lookups(identities: int, session: requests.Session, clock: Clock) -> None:
    print(f"1. warm auth step (requests), µs per call, median of {ROUNDS} interleaved rounds")
    alone = tenants(0, 1, session, clock, cache=MemoryCache())[0]
    crowd = tenants(1, identities, session, clock)
    figures = median_rounds(
        {"1 identity": warm_step(alone), f"{identities:,} identities": warm_step(crowd[-1])}
    )
    for name, value in figures.items():
        print(f"   {name:<22} {value:7.3f}")
    few, many = figures.values()
    print(f"   ratio {many / few:.3f}x (1.00 = the step does not grow with identities)")
    del crowd, alone
    reset()


def traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def serve_hot(session: requests.Session, clock: Clock, until: int = HOT_TENANTS) -> int:
    """Hot tenants' requests, an auth object each, until ``until`` slots are left (bounded)."""
    served = 0
    while count(default_cache()) > until and served < MAX_ACTIVITY:
        i = 10**9 + served % HOT_TENANTS
        auth = ClientCredentialsAuth(
            TOKEN_URL, f"tenant-{i}", f"secret-of-tenant-{i}", session=session, clock=clock
        )
        auth(requests.Request("GET", "https://api.example/x").prepare())
        served += 1
    return served


def memory(identities: int, session: requests.Session, clock: Clock) -> None:
    cache = default_cache()
    tracemalloc.start()
    tenants(0, 200, session, clock)  # one-time costs out of the baseline
    clock.now += LIFETIME + 1
    tenants(10**9, HOT_TENANTS, session, clock)
    serve_hot(session, clock)
    baseline = traced()

    live = tenants(1_000, identities, session, clock)
    grown = traced() - baseline
    size = len(live[0].get_token().access_token)
    print(f"2. live: {grown / identities:,.0f} B per identity, auth object and token included")
    print(
        f"   ({identities:,} identities: +{grown / 2**20:.1f} MiB; tokens of {size} characters;"
        " goal <= 4 KB each)"
    )

    del live
    kept = traced() - baseline
    print("3. left per identity once every auth object is gone (B):")
    print(
        f"   tokens still valid, kept for the tenants' next auth objects {kept / identities:7.1f}"
    )
    served = serve_hot(session, clock, until=(cache.max_entries or identities) + HOT_TENANTS)
    bounded = traced() - baseline
    print(
        f"   the same after {served:,} requests of {HOT_TENANTS} hot tenants"
        f" (max_entries={cache.max_entries:,}) {bounded / identities:7.1f}"
    )
    clock.now += LIFETIME + 1
    idle = traced() - baseline
    print(f"   an hour later: expired, no activity yet {idle / identities:7.1f}")
    served = serve_hot(session, clock)
    left = traced() - baseline
    print(
        f"   expired, then {served:,} requests of {HOT_TENANTS} hot tenants"
        f" {left / identities:7.1f} (goal <= 150)"
    )
    print(
        f"   slots left {count(cache):,}; tokens left in the default cache {len(cache._tokens):,}"
    )
    tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=50_000)
    identities = max(1, parser.parse_args().identities)
    clock = Clock()
    session = requests.Session()
    session.mount("https://idp.example/", LocalIdP(clock))
    lookups(identities, session, clock)
    memory(identities, session, clock)


if __name__ == "__main__":
    main()
