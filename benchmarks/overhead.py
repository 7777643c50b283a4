"""Per-request cost of chaveiro with a warm token, next to two baselines.

- "by hand": the caller sets the Authorization header itself;
- "floor": the smallest possible plugin of the same library, an AuthBase, an httpx.Auth
  or an httpx2.Auth that sets a fixed header.

Prints µs per call of the auth step alone (requests, httpx, and httpx2 when it is
installed), and end-to-end µs per request against a local server (median of
interleaved rounds), each with its ratio to the floor (goals: auth step <= 1.3x,
end to end <= 1.03x). Figures, not assertions.

Then the cost of telemetry on that auth step: the same warm-token measurement in
child processes where opentelemetry cannot be imported, where opentelemetry-api
is loaded with no SDK, and where an SDK with in-memory exporters is installed
(interleaved rounds; the ratios against "without" should be 1.00 within noise).

    .venv/bin/python benchmarks/overhead.py [--telemetry-only]
"""

from __future__ import annotations

import sys

if "--without-opentelemetry" in sys.argv:  # before anything can import it

    class _Blocker:
        def find_spec(self, name: str, path: object = None, target: object = None) -> None:
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ImportError(f"{name} is blocked for this measurement")

    sys.meta_path.insert(0, _Blocker())

import importlib.util
import json
import statistics
import subprocess
import time
from collections.abc import Callable, Generator
from types import ModuleType
from typing import Any

import httpx
import requests

from chaveiro import ClientCredentialsAuth
from chaveiro.testing import FakeTokenServer

STEP_CALLS = 20_000
ROUNDS = 7
E2E_CALLS = 300


class Floor(requests.auth.AuthBase, httpx.Auth):
    """The smallest plugin: a fixed header."""

    def __init__(self, header: str) -> None:
        self.header = header

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = self.header
        return r

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self.header
        yield request


def floor_of(library: ModuleType, header: str) -> Any:
    """The floor plugin as an ``Auth`` of ``library`` (httpx2 checks its own ``Auth`` class)."""
    if library is httpx:
        return Floor(header)

    class LibraryFloor(library.Auth):  # type: ignore[misc,name-defined]
        def auth_flow(self, request: Any) -> Generator[Any, Any, None]:
            request.headers["Authorization"] = header
            yield request

    return LibraryFloor()


def family() -> list[ModuleType]:
    """httpx, and httpx2 when it is installed."""
    found = [httpx]
    if importlib.util.find_spec("httpx2") is not None:
        import httpx2  # noqa: PLC0415 - optional

        found.append(httpx2)
    return found


def per_call(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def median_rounds(variants: dict[str, Callable[[], float]]) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(ROUNDS):
        for name, run in variants.items():  # interleaved: drift hits every variant alike
            samples[name].append(run())
    return {name: statistics.median(values) for name, values in samples.items()}


def auth_step(auth: ClientCredentialsAuth, floor: Floor, header: str, url: str) -> None:
    preps = [requests.Request("GET", url).prepare() for _ in range(STEP_CALLS)]

    def requests_variant(fn: Callable[[requests.PreparedRequest], object]) -> Callable[[], float]:
        def run() -> float:
            for p in preps:
                p.hooks["response"].clear()
            it = iter(preps)
            return per_call(lambda: fn(next(it)), STEP_CALLS)

        return run

    def set_by_hand(p: requests.PreparedRequest) -> None:
        p.headers["Authorization"] = header

    req = requests_variant
    figures = median_rounds(
        {"by hand": req(set_by_hand), "floor": req(floor), "chaveiro": req(auth)}
    )
    report("requests auth step (µs/call)", figures)

    for library in family():
        hx = library.Request("GET", url)
        plugin_floor = floor_of(library, header)

        def httpx_variant(plugin: Any, hx: Any = hx) -> Callable[[], float]:
            def by_hand() -> None:
                hx.headers["Authorization"] = header

            def flow() -> None:
                next(plugin.sync_auth_flow(hx))

            return lambda: per_call(by_hand if plugin is None else flow, STEP_CALLS)

        figures = median_rounds(
            {
                "by hand": httpx_variant(None),
                "floor": httpx_variant(plugin_floor),
                "chaveiro": httpx_variant(auth),
            }
        )
        name = library.__name__
        report(f"{name} auth step, sync_auth_flow to its first yield (µs/call)", figures)


def end_to_end(auth: ClientCredentialsAuth, floor: Floor, url: str) -> None:
    r_floor, r_ours = requests.Session(), requests.Session()
    r_floor.auth, r_ours.auth = floor, auth
    clients = {"requests": (r_floor, r_ours)}
    for library in family():
        header = floor_of(library, auth.get_token().authorization)
        clients[library.__name__] = (library.Client(auth=header), library.Client(auth=auth))
    for pair in clients.values():
        for client in pair:
            client.get(url)
    variants: dict[str, Callable[[], float]] = {}
    for name, (theirs, ours) in clients.items():
        variants[f"{name} floor"] = lambda c=theirs: per_call(lambda: c.get(url), E2E_CALLS)
        variants[f"{name} chaveiro"] = lambda c=ours: per_call(lambda: c.get(url), E2E_CALLS)
    figures = median_rounds(variants)
    report("end to end against the local server (µs/request, median of rounds)", figures)
    ratios = ", ".join(
        f"{name}: {figures[f'{name} chaveiro'] / figures[f'{name} floor']:.3f}x" for name in clients
    )
    print(f"  ratio {ratios}")
    for pair in clients.values():
        for client in pair:
            client.close()


def report(title: str, figures: dict[str, float]) -> None:
    print(title)
    floor = figures.get("floor")
    for name, value in figures.items():
        ratio = f"  ({value / floor:.2f}x floor)" if floor and name == "chaveiro" else ""
        print(f"  {name:<20} {value:8.2f}{ratio}")


TELEMETRY_VARIANTS = {
    "without opentelemetry": "--without-opentelemetry",
    "opentelemetry-api, no SDK": "--api",
    "opentelemetry SDK": "--sdk",
}
TELEMETRY_ROUNDS = 7


def _install_sdk() -> None:
    # Only in the child that measures with an SDK: the others must not load it.
    from opentelemetry import metrics, trace  # noqa: PLC0415
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: PLC0415
        InMemorySpanExporter,
    )

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def warm_step() -> None:
    """In a child: µs per warm-token auth step, requests and httpx, as JSON on stdout."""
    if "--sdk" in sys.argv:
        _install_sdk()
    with FakeTokenServer() as server:
        server.add_client("bench", "bench-secret")
        auth = ClientCredentialsAuth(server.oauth_token_url, "bench", "bench-secret")
        auth.get_token()  # the fetch: loads opentelemetry if it can
        loaded = "opentelemetry.trace" in sys.modules
        url = server.api_url()
        preps = [requests.Request("GET", url).prepare() for _ in range(STEP_CALLS)]
        hx = httpx.Request("GET", url)

        def requests_step() -> float:
            for p in preps:
                p.hooks["response"].clear()
            it = iter(preps)
            return per_call(lambda: auth(next(it)), STEP_CALLS)

        def httpx_step() -> float:
            return per_call(lambda: next(auth.sync_auth_flow(hx)), STEP_CALLS)

        figures = median_rounds({"requests": requests_step, "httpx": httpx_step})
    print(json.dumps({**figures, "loaded": loaded}))


def telemetry_cost() -> None:
    samples: dict[str, dict[str, list[float]]] = {
        name: {"requests": [], "httpx": []} for name in TELEMETRY_VARIANTS
    }
    loaded: dict[str, bool] = {}
    for _ in range(TELEMETRY_ROUNDS):
        for name, flag in TELEMETRY_VARIANTS.items():  # interleaved, like the rounds above
            child = subprocess.run(
                [sys.executable, __file__, "--warm-step", flag],
                capture_output=True,
                text=True,
                check=True,
                timeout=300,
            )
            figures = json.loads(child.stdout)
            loaded[name] = figures["loaded"]
            for library in ("requests", "httpx"):
                samples[name][library].append(figures[library])
    print(
        f"warm-token auth step with and without telemetry (µs/call: median of"
        f" {TELEMETRY_ROUNDS} child runs, [fastest-slowest run]; x: against 'without')"
    )
    base = {lib: statistics.median(v) for lib, v in samples["without opentelemetry"].items()}
    for name, by_library in samples.items():
        cells = []
        for library, values in by_library.items():
            value = statistics.median(values)
            cells.append(
                f"{library} {value:5.2f} [{min(values):.2f}-{max(values):.2f}]"
                f" {value / base[library]:.2f}x"
            )
        state = "loaded" if loaded[name] else "not importable"
        print(f"  {name:<26} {'   '.join(cells)}   (opentelemetry {state})")


def main() -> None:
    if "--warm-step" in sys.argv:
        warm_step()
        return
    if "--telemetry-only" in sys.argv:
        telemetry_cost()
        return
    with FakeTokenServer() as server:
        server.add_client("bench", "bench-secret")
        auth = ClientCredentialsAuth(server.oauth_token_url, "bench", "bench-secret")
        token = auth.get_token()
        floor = Floor(token.authorization)
        url = server.api_url()
        auth_step(auth, floor, token.authorization, url)
        end_to_end(auth, floor, url)
        print(f"token requests: {server.token_requests}")
    telemetry_cost()


if __name__ == "__main__":
    main()
