"""Figures for outages and hostile token endpoints (prints them; not a test).

    .venv/bin/python benchmarks/outage.py [--fuzz N]

1. Token-endpoint calls during a 5 s outage (503, Retry-After: 2) while 8 threads
   keep calling the API with a cold token.               target: <= 6
2. Time from the endpoint's recovery to the first successful API call, and
   from the moment the last Retry-After had passed.      target: <= 1 s after it
3. API calls that failed during a 10 s outage that began while a valid token was
   held; the renewal window opens during the outage.     target: 0
   (requests and httpx; an outage answering 503, and one dropping connections)
4. Fuzz cases run against the response parser and the token flow, and how many
   produced anything but a ChaveiroError or showed a secret.  target: 0

Every scenario is bounded in time; the whole run takes about 50 s.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import requests
from hypothesis import HealthCheck, Phase, given, settings

from chaveiro import ChaveiroError, ClientCredentialsAuth, MemoryCache
from chaveiro._dialect import OAUTH2, parse_response
from chaveiro._manager import Policy, RawResponse, Send, TokenManager, run_sync
from chaveiro._token import Identity
from chaveiro.testing import Failure, FakeTokenServer

ROOT = Path(__file__).resolve().parents[1]
THREADS = 8
CLIENT_ID, SECRET = "bench-client", "bench-Secret-0123456789-abcdefghijklmnop"


@dataclass
class TokenLog:
    """When each token request was answered, and with what status (None: no answer)."""

    events: list[tuple[float, int | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def session(self) -> requests.Session:
        log = self

        class Recording(requests.adapters.HTTPAdapter):
            def send(self, request, **kwargs):
                try:
                    response = super().send(request, **kwargs)
                except Exception:
                    with log.lock:
                        log.events.append((time.monotonic(), None))
                    raise
                with log.lock:
                    log.events.append((time.monotonic(), response.status_code))
                return response

        session = requests.Session()
        session.mount("http://", Recording())
        return session


def cold_outage() -> dict[str, float]:
    """Figures 1 and 2: 8 threads, no token, the endpoint answers 503 + Retry-After: 2 for 5 s."""
    log = TokenLog()
    with FakeTokenServer() as server:
        server.add_client(CLIENT_ID, SECRET)
        server.fail(Failure.status(503, retry_after="2"))
        auth = ClientCredentialsAuth(
            server.oauth_token_url, CLIENT_ID, SECRET, session=log.session()
        )
        stop = threading.Event()
        successes: list[float] = []

        def worker() -> None:
            session = requests.Session()
            session.auth = auth
            while not stop.is_set():
                try:
                    if session.get(server.api_url(), timeout=10).status_code == 200:
                        successes.append(time.monotonic())
                except ChaveiroError:
                    pass
                time.sleep(0.02)

        started = time.monotonic()
        threads = [threading.Thread(target=worker, daemon=True) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        time.sleep(5.0)
        server.clear_failures()
        recovered = time.monotonic()
        during = sum(1 for t, _ in log.events if t < recovered)
        deadline = recovered + 30
        while not successes and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        for thread in threads:
            thread.join(15)
    first = min(successes) if successes else float("inf")
    last_503 = max((t for t, status in log.events if status == 503), default=started)
    retry_after_passed = max(recovered, last_503 + 2.0)
    return {
        "calls": during,
        "to_success": first - recovered,
        "after_retry_after": first - retry_after_passed,
    }


def warm_outage(stack: str, failure: Failure) -> dict[str, float]:
    """Figure 3: a held token (20 s lifetime), an outage from 5 s to 15 s; renewal due at 10 s."""
    with FakeTokenServer(lifetime=20) as server:
        server.add_client(CLIENT_ID, SECRET)
        auth = ClientCredentialsAuth(server.oauth_token_url, CLIENT_ID, SECRET)
        stop = threading.Event()
        failed: list[str] = []
        calls = [0]
        client = httpx.Client(auth=auth, limits=httpx.Limits(max_connections=THREADS * 2))
        auth.get_token()
        started = time.monotonic()

        def call() -> int:
            if stack == "requests":
                return requests.get(server.api_url(), auth=auth, timeout=10).status_code
            return client.get(server.api_url()).status_code

        def worker() -> None:
            while not stop.is_set():
                calls[0] += 1
                try:
                    status = call()
                except Exception as exc:
                    failed.append(type(exc).__name__)
                else:
                    if status != 200:
                        failed.append(str(status))
                time.sleep(0.02)

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        time.sleep(5.0)
        before = server.token_requests
        server.fail(failure)
        time.sleep(10.0)
        server.clear_failures()
        during = server.token_requests - before
        time.sleep(2.0)
        stop.set()
        for thread in threads:
            thread.join(15)
        client.close()
        renewed = auth.stats.renewed
    return {
        "failed": len(failed),
        "calls": calls[0],
        "token_calls_in_outage": during,
        "renewed_after": renewed,
        "seconds": time.monotonic() - started,
    }


def fuzz(examples: int) -> dict[str, int]:
    """Figure 4: random hostile answers to parse_response and to a whole token flow."""
    sys.path.insert(0, str(ROOT))  # the strategies are the test suite's own
    from tests.hostile import (  # noqa: PLC0415
        NOW,
        TOKEN_URL,
        captured_logs,
        error_texts,
        responses,
        shown,
    )

    counts = {"cases": 0, "other_exceptions": 0, "leaks": 0}
    common = settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )

    def check(texts: list[str], planted: list[str]) -> None:
        leaks = shown(texts, planted)
        if leaks:
            counts["leaks"] += 1
            value, text = leaks[0]
            at = max((text.find(value[i : i + 20]) for i in range(len(value) - 19)), default=0)
            print(f"   shown: {value[:40]!r} in ...{text[max(0, at - 60) : at + 80]!r}")

    @common
    @given(case=responses())
    def parser(case):
        status, headers, body, planted = case
        counts["cases"] += 1
        with captured_logs() as logs:
            try:
                parse_response(OAUTH2, TOKEN_URL, status, headers, body, NOW)
            except ChaveiroError as exc:
                check(error_texts(exc), planted)
            except Exception:
                counts["other_exceptions"] += 1
        check(logs.texts, planted)

    @common
    @given(case=responses())
    def flow(case):
        status, headers, body, planted = case
        counts["cases"] += 1
        body = SECRET.encode() + b" " + body
        manager = TokenManager(
            OAUTH2,
            ClientCredentialsAuth(TOKEN_URL, CLIENT_ID, SECRET)._settings,
            Identity.of(TOKEN_URL, CLIENT_ID, SECRET),
            MemoryCache(),
            clock=lambda: NOW,
            policy=Policy(attempts=1),
        )
        driver = run_sync(manager.flow(), manager.cache)
        with captured_logs() as logs:
            try:
                step = next(driver)
                assert isinstance(step, Send)
                driver.send(RawResponse(status, headers, body))
            except ChaveiroError as exc:
                check(error_texts(exc), [SECRET, *planted])
            except Exception:
                counts["other_exceptions"] += 1
            finally:
                driver.close()
        check(logs.texts, [SECRET, *planted])

    parser()
    flow()
    return counts


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fuzz", type=int, default=3000, help="cases per fuzz target")
    args = parser.parse_args()
    logging.getLogger("chaveiro").setLevel(logging.CRITICAL)  # the figures, not the warnings

    print("cold outage: 8 threads, 503 + Retry-After: 2 for 5 s ...", flush=True)
    cold = cold_outage()
    variants = {
        ("requests", "503"): Failure.status(503, retry_after="2"),
        ("requests", "drop"): Failure.drop(),
        ("httpx", "503"): Failure.status(503, retry_after="2"),
        ("httpx", "drop"): Failure.drop(),
    }
    print("warm outage: 10 s, renewal due during it (4 variants at once) ...", flush=True)
    warm: dict[tuple[str, str], dict[str, float]] = {}

    def run(key: tuple[str, str], failure: Failure) -> None:
        warm[key] = warm_outage(key[0], failure)

    runners = [threading.Thread(target=run, args=item) for item in variants.items()]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join(60)
    print(f"fuzzing: {args.fuzz} cases x 2 targets ...", flush=True)
    fuzzed = fuzz(args.fuzz)

    ok = True
    print()
    line = f"1. token calls during a 5 s cold outage: {cold['calls']:.0f}"
    ok &= cold["calls"] <= 6
    print(f"{line:<72} (target <= 6)  {verdict(cold['calls'] <= 6)}")
    line = (
        f"2. recovery -> first success: {cold['to_success']:.2f} s;"
        f" after Retry-After passed: {cold['after_retry_after']:+.2f} s"
    )
    ok &= cold["after_retry_after"] <= 1.0
    print(f"{line:<72} (target <= 1 s) {verdict(cold['after_retry_after'] <= 1.0)}")
    print("3. failed API calls in a 10 s outage with a valid token held:")
    for (stack, kind), figures in sorted(warm.items()):
        good = figures["failed"] == 0
        if kind == "503" or stack == "requests":
            ok &= good
        note = "" if good or kind == "503" else "  (the call that carried the renewal; see README)"
        print(
            f"   {stack:<8} {kind:<4}: {figures['failed']:.0f} failed of {figures['calls']:.0f}"
            f" calls; {figures['token_calls_in_outage']:.0f} token calls in the outage;"
            f" renewed {figures['renewed_after']:.0f}x   (target 0) {verdict(good)}{note}"
        )
    good = fuzzed["other_exceptions"] == 0 and fuzzed["leaks"] == 0
    ok &= good
    print(
        f"4. fuzz cases: {fuzzed['cases']}; other exceptions: {fuzzed['other_exceptions']};"
        f" secrets shown: {fuzzed['leaks']}   (target 0) {verdict(good)}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
