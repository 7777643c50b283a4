"""The steps a token flow yields, and the two drivers that carry them out.

A flow (:meth:`chaveiro._manager.TokenManager.flow`) yields steps: send this
token request, sleep, wait for another caller's flight, read or write the
cache. :func:`run_sync` carries them out with blocking calls, :func:`run_async`
with ``await`` (asyncio or trio); they are the only code that differs between
sync and async. Sends are yielded on to the HTTP adapter, which alone knows
how to send.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Mapping
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import anyio

from chaveiro import _telemetry
from chaveiro._caches import MemoryCache, TokenCache
from chaveiro._dialect import TokenRequest
from chaveiro._errors import TokenError
from chaveiro._flight import Flight, backend_name
from chaveiro._token import Token

__all__ = [
    "CacheGet",
    "CacheLock",
    "CacheSet",
    "Call",
    "CannotRetry",
    "Detach",
    "Flow",
    "RawResponse",
    "Send",
    "Sleep",
    "Step",
    "Wait",
    "obtain_async",
    "run_async",
    "run_sync",
]

logger = logging.getLogger("chaveiro")


@dataclass(frozen=True, slots=True)
class RawResponse:
    """A token endpoint's answer, as plain data."""

    status: int
    headers: Mapping[str, str]
    body: bytes = field(repr=False)


# ---- steps -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``request``; give up on it after ``timeout`` seconds (what is left of the deadline).

    Reply with the :class:`RawResponse`, or throw a :class:`TokenError` in;
    throw :class:`CannotRetry` when the caller cannot send again in this call.
    """

    request: TokenRequest
    timeout: float


@dataclass(frozen=True, slots=True)
class Detach:
    """Give ``token`` to the caller now; run the rest of this flow in the background."""

    token: Token


class CannotRetry(Exception):  # noqa: N818 - a signal into the flow, not an error for users
    """Thrown into a flow at a :class:`Send`: it failed, and this caller cannot send again.

    With httpx the token request travels through the user's client; when it
    fails without an answer the client ends the whole call. The flow records
    the failure (and starts the cool-down) instead of pausing for a retry that
    would never be sent; the next call after the cool-down tries again.
    """

    def __init__(self, error: TokenError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True, slots=True)
class Call:
    """Call ``function`` (blocking: it may read a file or ask another service).

    Reply with what it returns, or throw in what it raises. The async driver
    runs it in a worker thread, so the event loop never waits on it.
    """

    function: Callable[[], object]


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Wait:
    flight: Flight
    timeout: float


@dataclass(frozen=True, slots=True)
class CacheGet:
    key: str


@dataclass(frozen=True, slots=True)
class CacheSet:
    key: str
    token: Token


@dataclass(frozen=True, slots=True)
class CacheLock:
    key: str
    timeout: float


Step: TypeAlias = Send | Detach | Call | Sleep | Wait | CacheGet | CacheSet | CacheLock
Flow: TypeAlias = Generator[Step, Any, Token]


# ---- drivers -----------------------------------------------------------------------------


def _cache_failed(step: Step, exc: Exception) -> None:
    logger.warning(
        "token cache failed during %s (%s: %s); going on without it",
        type(step).__name__,
        type(exc).__name__,
        exc,
    )


_OPERATIONS = {CacheGet: "get", CacheSet: "set", CacheLock: "lock"}


def _cache_step(cache: TokenCache, step: Step, held_locks: ExitStack) -> Any:
    started = time.perf_counter()
    error: Exception | None = None
    try:
        if isinstance(step, CacheGet):
            return cache.get(step.key)
        if isinstance(step, CacheSet):
            cache.set(step.key, step.token)
            held_locks.close()
            return None
        assert isinstance(step, CacheLock)
        return held_locks.enter_context(cache.lock(step.key, step.timeout))
    except Exception as exc:  # noqa: BLE001 - a cache failure never fails a request
        error = exc
        _cache_failed(step, exc)
        return None
    finally:
        _timed(cache, step, started, error)


async def _acache_step(cache: TokenCache, step: Step, held_locks: AsyncExitStack) -> Any:
    started = time.perf_counter()
    error: Exception | None = None
    try:
        if isinstance(step, CacheGet):
            return await cache.aget(step.key)
        if isinstance(step, CacheSet):
            await cache.aset(step.key, step.token)
            await held_locks.aclose()
            return None
        assert isinstance(step, CacheLock)
        return await held_locks.enter_async_context(cache.alock(step.key, step.timeout))
    except Exception as exc:  # noqa: BLE001 - a cache failure never fails a request
        error = exc
        _cache_failed(step, exc)
        return None
    finally:
        _timed(cache, step, started, error)


def _timed(cache: TokenCache, step: Step, started: float, error: Exception | None) -> None:
    """Report a shared cache's operation to telemetry; the in-process cache is not reported."""
    if not isinstance(cache, MemoryCache):
        _telemetry.cache_operation(backend_name(cache), _OPERATIONS[type(step)], started, error)


def run_sync(flow: Flow, cache: TokenCache) -> Generator[Send | Detach | Token, Any, None]:
    """Carry out a flow's steps with blocking calls; sends are yielded to the caller.

    The last item yielded is the token. Exceptions thrown in at a yielded
    :class:`Send` go to the flow, which decides what they mean. A :class:`Detach`
    is yielded too: the caller takes its token and carries on driving this
    generator elsewhere (another thread), or at once if it cannot.
    """
    with ExitStack() as held_locks:
        try:
            reply: Any = None
            error: BaseException | None = None
            while True:
                try:
                    step = flow.throw(error) if error is not None else flow.send(reply)
                except StopIteration as stop:
                    held_locks.close()
                    yield stop.value
                    return
                reply, error = None, None
                if isinstance(step, Send | Detach):
                    try:
                        reply = yield step
                    except Exception as exc:  # noqa: BLE001 - handed to the flow
                        error = exc
                elif isinstance(step, Call):
                    try:
                        reply = step.function()
                    except Exception as exc:  # noqa: BLE001 - handed to the flow
                        error = exc
                elif isinstance(step, Wait):
                    step.flight.wait(step.timeout)
                elif isinstance(step, Sleep):
                    time.sleep(step.seconds)
                else:
                    reply = _cache_step(cache, step, held_locks)
        finally:
            flow.close()


async def run_async(flow: Flow, cache: TokenCache) -> AsyncGenerator[Send | Detach | Token, Any]:
    """The same as :func:`run_sync`, awaiting instead of blocking (asyncio or trio)."""
    async with AsyncExitStack() as held_locks:
        try:
            reply: Any = None
            error: BaseException | None = None
            while True:
                try:
                    step = flow.throw(error) if error is not None else flow.send(reply)
                except StopIteration as stop:
                    await held_locks.aclose()
                    yield stop.value
                    return
                reply, error = None, None
                if isinstance(step, Send | Detach):
                    try:
                        reply = yield step
                    except Exception as exc:  # noqa: BLE001 - handed to the flow
                        error = exc
                elif isinstance(step, Call):
                    from anyio import to_thread  # noqa: PLC0415 - a token request that needs it

                    try:
                        reply = await to_thread.run_sync(step.function)
                    except Exception as exc:  # noqa: BLE001 - handed to the flow
                        error = exc
                elif isinstance(step, Wait):
                    await step.flight.wait_async(step.timeout)
                elif isinstance(step, Sleep):
                    await anyio.sleep(step.seconds)
                else:
                    reply = await _acache_step(cache, step, held_locks)
        finally:
            flow.close()


async def obtain_async(
    flow: Flow, cache: TokenCache, send: Callable[[Send], Awaitable[RawResponse]]
) -> Token:
    """Run ``flow`` to its token, awaiting ``send`` for each token request it makes.

    ``send`` raises a :class:`TokenError` for a failed request; the flow decides
    what it means (a retry, a cool-down, the caller's error).
    """
    driver = run_async(flow, cache)
    try:
        item = await driver.asend(None)
        while isinstance(item, Send):
            try:
                raw = await send(item)
            except TokenError as exc:
                item = await driver.athrow(exc)
            else:
                item = await driver.asend(raw)
    finally:
        await driver.aclose()
    assert isinstance(item, Token)
    return item
