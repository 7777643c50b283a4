"""``FileCache``: one token file per identity, shared by the processes of one machine.

Files are private (0600 in a 0700 directory), written atomically, read with a
size cap, and locked with ``filelock`` so that one process renews while the
others wait for its file. A damaged file is read as no token and replaced.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from chaveiro import _travel
from chaveiro._caches import LOCK_POLL, cache_trouble, polled_lock
from chaveiro._token import Token

if TYPE_CHECKING:
    from filelock import BaseFileLock

__all__ = ["FileCache"]

logger = logging.getLogger("chaveiro")

_MAX_FILE_BYTES = 256 * 1024
_SAFE_KEY = re.compile(r"[A-Za-z0-9_-]{1,100}")


class FileCache:
    """Tokens in files, shared by the processes of one user on one machine.

    For gunicorn or uWSGI workers, Celery workers, cron jobs and the command line:
    whichever process renews a token first stores it, and the others read it
    instead of asking the provider. ``path`` is a directory that chaveiro owns
    (default: the user cache directory, e.g. ``~/.cache/chaveiro`` on Linux). It is
    created with mode 0700 and holds one file per identity, mode 0600, written
    atomically. A directory that others can read is made private, with a warning,
    or not used if that fails; a damaged file is ignored and replaced.

    Pickled or copied, a FileCache is its directory: the copy reads and writes the
    same files (in the same process, it is the cache itself).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        if path is None:
            import platformdirs  # noqa: PLC0415 - only for the default directory

            path = platformdirs.user_cache_dir("chaveiro", appauthor=False)
        self.path = Path(path).expanduser().absolute()
        self._where = f"in {str(self.path)!r}"
        self._checked = False

    def __repr__(self) -> str:
        return f"FileCache({str(self.path)!r})"

    def __reduce__(self) -> tuple[object, ...]:
        return _travel.reduce(self, FileCache, (str(self.path),))

    def _file(self, key: str, suffix: str) -> Path:
        if _SAFE_KEY.fullmatch(key) is None:
            key = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:40]
        return self.path / f"{key}{suffix}"

    def _ready(self) -> bool:
        """Create the directory, or check an existing one is private to us."""
        if self._checked:
            return True
        path = self.path
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = path.stat()
            if not stat.S_ISDIR(info.st_mode):
                raise NotADirectoryError(f"{path} is not a directory")
            if os.name == "posix":
                if info.st_uid != os.geteuid():
                    raise PermissionError(
                        f"{path} belongs to another user; give chaveiro a directory of its own"
                    )
                if info.st_mode & 0o077:
                    path.chmod(0o700)
                    logger.warning(
                        "token cache directory %s was open to other users (mode %03o);"
                        " it is now private (mode 700)",
                        path,
                        stat.S_IMODE(info.st_mode),
                    )
        except OSError as exc:
            cache_trouble(self._where, "prepare its directory", exc)
            return False
        self._checked = True
        return True

    def _read(self, file: Path) -> bytes | None:
        if not self._ready():
            return None
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(file, flags)
        except FileNotFoundError:
            return None
        except OSError as exc:
            cache_trouble(self._where, "read a token", exc)
            return None
        try:
            with os.fdopen(fd, "rb") as stream:
                return stream.read(_MAX_FILE_BYTES + 1)
        except OSError as exc:
            cache_trouble(self._where, "read a token", exc)
            return None

    def _write(self, file: Path, data: bytes) -> None:
        if not self._ready():
            return
        try:
            _write_atomically(file, data)
        except OSError as exc:
            self._checked = False  # the directory may be gone: check it again next time
            cache_trouble(self._where, "write a token", exc)

    def get(self, key: str) -> Token | None:
        file = self._file(key, ".json")
        data = self._read(file)
        if data is None:
            return None
        return Token.from_json(data, source=f"{file} (it will be replaced)")

    def set(self, key: str, token: Token) -> None:
        self._write(self._file(key, ".json"), token.to_json().encode())

    def _read_note(self, name: str) -> bytes | None:
        """A small file kept beside the tokens (never a secret), e.g. the CLI's shortcuts."""
        return self._read(self._file(name, ".note"))

    def _write_note(self, name: str, data: bytes) -> None:
        """Write a :meth:`_read_note` file, privately and atomically."""
        self._write(self._file(name, ".note"), data)

    def _file_lock(self, key: str) -> BaseFileLock:
        # A new lock object each time: nothing is shared between threads, tasks or a
        # fork()ed child, and flock() still excludes every other holder of the file.
        from filelock import FileLock  # noqa: PLC0415 - imported on first use only

        return FileLock(self._file(key, ".lock"), mode=0o600, thread_local=False)

    @contextmanager
    def lock(self, key: str, timeout: float) -> Iterator[bool]:
        from filelock import Timeout  # noqa: PLC0415 - imported on first use only

        held = None
        if self._ready():
            lock = self._file_lock(key)
            try:
                lock.acquire(timeout=max(0.0, timeout), poll_interval=LOCK_POLL)
                held = lock
            except Timeout:
                logger.info("gave up waiting %.1f s for the token file lock", timeout)
            except OSError as exc:
                cache_trouble(self._where, "lock a token file", exc)
        try:
            yield held is not None
        finally:
            if held is not None:
                self._release(held)

    def _release(self, lock: BaseFileLock) -> None:
        try:
            lock.release()
        except OSError as exc:
            cache_trouble(self._where, "unlock a token file", exc)

    async def aget(self, key: str) -> Token | None:
        return await anyio.to_thread.run_sync(self.get, key)

    async def aset(self, key: str, token: Token) -> None:
        await anyio.to_thread.run_sync(self.set, key, token)

    def _try_lock(self, lock: BaseFileLock) -> bool | None:
        """One attempt at ``lock``: True, False when busy, None when it cannot work."""
        from filelock import Timeout  # noqa: PLC0415 - imported on first use only

        try:
            lock.acquire(timeout=0)
        except Timeout:
            return False
        except OSError as exc:
            cache_trouble(self._where, "lock a token file", exc)
            return None
        return True

    @asynccontextmanager
    async def alock(self, key: str, timeout: float) -> AsyncIterator[bool]:
        if not await anyio.to_thread.run_sync(self._ready):
            yield False
            return
        lock = self._file_lock(key)
        async with polled_lock(
            partial(anyio.to_thread.run_sync, partial(self._try_lock, lock)),
            partial(anyio.to_thread.run_sync, partial(self._release, lock)),
            timeout,
            what="the token file lock",
        ) as held:
            yield held


def _write_atomically(file: Path, data: bytes) -> None:
    """Write ``data`` to a private temporary file beside ``file``, then rename it over."""
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as stream:  # mkstemp made it 0600
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
