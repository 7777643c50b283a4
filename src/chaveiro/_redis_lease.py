"""The Redis token lock: a short lease, kept alive by its holder while the holder lives.

A lock is the key ``<prefix>lock:<digest>`` holding a random value of its holder's,
set with ``SET NX PX <lease>``. While it is held, a thread renews the lease every
third of it, and only if the key still holds our value (compare-and-extend). The
holder releases it by deleting the key, again only if it still holds our value
(compare-and-delete). A holder that dies (SIGKILL, OOM, a pod evicted) stops
renewing, so the others wait one lease at most (3 s by default), not their whole
``timeout``. The renewal is a thread, not a task, so the same lock serves sync
code, threads, asyncio and trio alike.

Compare-and-extend and compare-and-delete are Lua scripts, run with ``EVALSHA``
(``EVAL`` the first time a server lacks the script). A Redis user denied the
scripting commands gets one warning, and the same checks done in two steps, GET
then PEXPIRE or DEL: not atomic, so a lease that runs out between the two may be
extended or freed for its next holder, which costs at most one extra token
request, never a wrong token.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from chaveiro._caches import LOCK_POLL, cache_advice
from chaveiro._redis_link import Link, Outcome

__all__ = ["Lease"]

logger = logging.getLogger("chaveiro")

_EXTEND = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then"
    " return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
_SHA = {
    script: hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
    for script in (_EXTEND, _RELEASE)
}
_WHAT = "the Redis token lock"


class Lease:
    """One attempt to hold the lock ``name`` for up to ``hold`` seconds, ``seconds`` at a time."""

    __slots__ = ("_done", "_hold", "_link", "_ms", "_name", "_seconds", "_value")

    def __init__(self, link: Link, name: str, *, seconds: float, hold: float) -> None:
        self._link = link
        self._name = name
        self._seconds = seconds
        self._ms = max(1, round(seconds * 1000))
        self._hold = max(0.0, hold)
        self._value = os.urandom(16).hex()
        self._done = threading.Event()

    def take(self) -> bool | None:
        """One attempt: True (taken, and kept alive from now on), False (busy), None (failed)."""
        taken = self._link.run(
            "take a lock", lambda c: c.set(self._name, self._value, nx=True, px=self._ms)
        )
        if taken is Outcome.FAILED:
            return None
        if not taken:
            return False
        until = time.monotonic() + self._hold
        threading.Thread(
            target=self._keep, args=(until,), name="chaveiro redis lease", daemon=True
        ).start()
        return True

    def release(self) -> None:
        """Stop renewing, and free the lock if it is still ours."""
        self._done.set()
        if self._compare("release a lock", _RELEASE) is False:
            logger.info("%s expired before it was released", _WHAT)

    @contextmanager
    def held(self, timeout: float) -> Iterator[bool]:
        """Take the lock, trying until ``timeout``; hold it for the ``with`` block."""
        deadline = time.monotonic() + max(0.0, timeout)
        outcome = self.take()
        while outcome is False and time.monotonic() < deadline:
            time.sleep(LOCK_POLL)
            outcome = self.take()
        if outcome is False:
            logger.info("gave up waiting %.1f s for %s", timeout, _WHAT)
        try:
            yield bool(outcome)
        finally:
            if outcome:
                self.release()

    def _keep(self, until: float) -> None:
        """The renewal thread: extend the lease every third of it until released."""
        while not self._done.wait(self._seconds / 3):
            if time.monotonic() >= until:
                logger.info("%s was held for its whole timeout; it is no longer renewed", _WHAT)
                return
            kept = self._compare("keep a lock", _EXTEND)
            if kept is not True:
                if kept is False and not self._done.is_set():
                    logger.info("%s ran out before it was renewed", _WHAT)
                return

    def _compare(self, action: str, script: str) -> bool | None:
        """Run ``script`` if the key still holds our value: True if it did, None on failure."""
        if self._link.scripts:
            outcome = self._link.run(action, self._scripted(script))
            if outcome is not None:
                return None if outcome is Outcome.FAILED else outcome
            self._scripts_denied()
        outcome = self._link.run(action, self._in_two_steps(script))
        return None if outcome is Outcome.FAILED else outcome

    def _scripted(self, script: str) -> Callable[[Any], bool | None]:
        from redis.exceptions import NoPermissionError, NoScriptError  # noqa: PLC0415

        args = (1, self._name, self._value, self._ms)

        def command(client: Any) -> bool | None:
            try:
                try:
                    return bool(client.evalsha(_SHA[script], *args))
                except NoScriptError:
                    return bool(client.eval(script, *args))
            except NoPermissionError as exc:
                if "eval" not in str(exc).lower() and "script" not in str(exc).lower():
                    raise  # denied a key, or another command: a failure like any other
                return None

        return command

    def _in_two_steps(self, script: str) -> Callable[[Any], bool]:
        def command(client: Any) -> bool:
            if client.get(self._name) not in (self._value, self._value.encode()):
                return False
            if script is _RELEASE:
                return bool(client.delete(self._name))
            return bool(client.pexpire(self._name, self._ms))

        return command

    def _scripts_denied(self) -> None:
        self._link.scripts = False
        cache_advice(
            self._link.where,
            "scripts",
            f"this Redis user may not run EVALSHA or EVAL, so {_WHAT} is checked and freed in"
            " two steps (GET, then PEXPIRE or DEL) instead of one atomic script. It works; for"
            " an atomic lock, allow the scripts to this user: ACL SETUSER <user> +evalsha +eval",
        )
