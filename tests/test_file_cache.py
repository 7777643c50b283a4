"""FileCache on the real filesystem: sharing, permissions, damage and failures."""

from __future__ import annotations

import base64
import logging
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import quote_plus

import httpx
import pytest
import requests

from chaveiro import ClientCredentialsAuth, FileCache
from chaveiro._token import Token
from chaveiro.testing import FakeTokenServer
from tests.conftest import CLIENT_ID, CLIENT_SECRET, FakeClock

NOW = time.time()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _token_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.json"))


def _cache_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "token cache" in r.getMessage()
    ]


def test_files_are_private(server: FakeTokenServer, make_auth, tmp_path: Path):
    """The directory is created 0700, token and lock files are 0600, no temp file is left."""
    directory = tmp_path / "deep" / "cache"
    assert requests.get(server.api_url(), auth=make_auth(cache=FileCache(directory))).ok
    assert _mode(directory) == 0o700
    files = list(directory.iterdir())
    assert {f.suffix for f in files} == {".json", ".lock"}
    assert all(_mode(f) == 0o600 for f in files)


def test_files_hold_no_client_secret(server: FakeTokenServer, make_auth, tmp_path: Path):
    """The bytes of every cache file hold the token but no form of the client secret."""
    requests.get(server.api_url(), auth=make_auth(cache=FileCache(tmp_path)))
    data = b"".join(f.read_bytes() for f in tmp_path.iterdir())
    assert server.issued_tokens[0].encode() in data
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode())
    for secret in (CLIENT_SECRET.encode(), quote_plus(CLIENT_SECRET).encode(), basic):
        assert secret not in data


def test_another_cache_object_reads_the_token(server: FakeTokenServer, make_auth, tmp_path: Path):
    """A second FileCache on the same directory (another process, say) reuses the token."""
    requests.get(server.api_url(), auth=make_auth(cache=FileCache(tmp_path)))
    second = make_auth(cache=FileCache(tmp_path))
    assert requests.get(server.api_url(), auth=second).ok
    assert server.token_requests == 1
    assert second.stats.cache_hits == 1


def test_default_directory_is_the_user_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Without a path, tokens go to the user cache directory (XDG_CACHE_HOME on Linux)."""
    if sys.platform != "linux":
        pytest.skip("XDG_CACHE_HOME is the Linux convention")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert FileCache().path == tmp_path / "chaveiro"


def test_open_directory_is_made_private(
    server: FakeTokenServer, make_auth, tmp_path: Path, chaveiro_logs: pytest.LogCaptureFixture
):
    """An existing directory that others can read is set to 0700, with a warning."""
    directory = tmp_path / "cache"
    directory.mkdir()
    directory.chmod(0o755)
    assert requests.get(server.api_url(), auth=make_auth(cache=FileCache(directory))).ok
    assert _mode(directory) == 0o700
    assert any("now private" in r.getMessage() for r in chaveiro_logs.records)


def test_directory_of_another_user_is_not_used(
    server: FakeTokenServer, make_auth, tmp_path: Path, chaveiro_logs: pytest.LogCaptureFixture
):
    """A directory owned by someone else is left alone; requests still succeed."""
    if os.geteuid() == 0:
        directory = tmp_path / "theirs"
        directory.mkdir(mode=0o777)
        os.chown(directory, 65534, 65534)
    else:
        directory = Path("/")
    before = sorted(os.listdir(directory))
    assert requests.get(server.api_url(), auth=make_auth(cache=FileCache(directory))).ok
    assert sorted(os.listdir(directory)) == before
    assert any("another user" in message for message in _cache_warnings(chaveiro_logs))


@pytest.mark.parametrize(
    "damage",
    [b"", b"{not json", b'{"access_token": "abc", "expires_in": 3600}', "truncate"],
    ids=["empty", "garbage", "foreign", "truncated"],
)
def test_damaged_file_is_ignored_and_replaced(
    server: FakeTokenServer,
    make_auth,
    tmp_path: Path,
    damage: bytes | str,
    chaveiro_logs: pytest.LogCaptureFixture,
):
    """A corrupted, truncated or foreign token file is logged, ignored and replaced."""
    requests.get(server.api_url(), auth=make_auth(cache=FileCache(tmp_path)))
    (file,) = _token_files(tmp_path)
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2] if damage == "truncate" else damage)
    assert requests.get(server.api_url(), auth=make_auth(cache=FileCache(tmp_path))).ok
    assert server.token_requests == 2
    assert any("ignoring the token stored in" in r.getMessage() for r in chaveiro_logs.records)
    replaced = Token.from_json(file.read_bytes())
    assert replaced is not None
    assert replaced.access_token == server.issued_tokens[-1]


@pytest.mark.parametrize("obstacle", ["parent is a file", "token file is a directory"])
def test_unwritable_cache_never_fails_a_request(
    server: FakeTokenServer,
    make_auth,
    tmp_path: Path,
    obstacle: str,
    chaveiro_logs: pytest.LogCaptureFixture,
):
    """Files that cannot be written: every request succeeds, and one warning is logged."""
    clock = FakeClock()
    if obstacle == "parent is a file":
        (tmp_path / "file").write_text("")
        cache = FileCache(tmp_path / "file" / "cache")
        auth = make_auth(cache=cache, clock=clock)
    else:
        cache = FileCache(tmp_path)
        auth = make_auth(cache=cache, clock=clock)
        (tmp_path / f"{auth._manager.identity.key}.json").mkdir()
    session = requests.Session()
    session.auth = auth
    for _ in range(5):
        assert session.get(server.api_url()).status_code == 200
        clock.now += 3600  # every request needs a new token
    assert server.token_requests == 5
    assert len(_cache_warnings(chaveiro_logs)) == 1


def test_401_replaces_the_revoked_token_in_the_file(
    server: FakeTokenServer, make_auth, tmp_path: Path
):
    """A token the API refuses is renewed once and replaced in the file for everyone."""
    requests.get(server.api_url(), auth=make_auth(cache=FileCache(tmp_path)))
    server.revoke_all()
    assert requests.get(server.api_url(), auth=make_auth(cache=FileCache(tmp_path))).ok
    assert requests.get(server.api_url(), auth=make_auth(cache=FileCache(tmp_path))).ok
    assert server.token_requests == 2
    assert server.api_unauthorized == 1


_HOLDER = textwrap.dedent(
    """
    import sys
    from chaveiro import FileCache
    with FileCache(sys.argv[1]).lock("shared-key", 5) as held:
        print("held" if held else "missed", flush=True)
        sys.stdin.readline()
    """
)


def _hold_lock_in_another_process(directory: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    return holder


def _release(holder: subprocess.Popen[str]) -> None:
    holder.communicate("\n", timeout=10)
    assert holder.returncode == 0


def test_lock_excludes_other_processes(tmp_path: Path):
    """While another process holds the lock, lock() gives up; once released, it gets it."""
    cache = FileCache(tmp_path)
    holder = _hold_lock_in_another_process(tmp_path)
    try:
        with cache.lock("shared-key", 0.2) as held:
            assert held is False
    finally:
        _release(holder)
    with cache.lock("shared-key", 5) as held:
        assert held is True


@pytest.mark.anyio
async def test_alock_excludes_other_processes(tmp_path: Path):
    """alock() under asyncio and trio: gives up while another process holds it, then gets it."""
    cache = FileCache(tmp_path)
    holder = _hold_lock_in_another_process(tmp_path)
    try:
        async with cache.alock("shared-key", 0.2) as held:
            assert held is False
    finally:
        _release(holder)
    async with cache.alock("shared-key", 5) as held:
        assert held is True
    async with cache.alock("shared-key", 5) as held:  # released on exit
        assert held is True


@pytest.mark.anyio
async def test_aset_and_aget_share_the_file(tmp_path: Path):
    """aset() in one cache object, aget() in another: the same token."""
    token = Token("access-token-value", time.time() + 60, time.time(), scope="a b")
    await FileCache(tmp_path).aset("some-key", token)
    assert await FileCache(tmp_path).aget("some-key") == token
    assert await FileCache(tmp_path).aget("other-key") is None


@pytest.mark.anyio
async def test_async_clients_share_one_token(server: FakeTokenServer, make_auth, tmp_path: Path):
    """httpx.AsyncClient with two auth objects over two FileCache objects: one token request."""
    for _ in range(2):
        async with httpx.AsyncClient(auth=make_auth(cache=FileCache(tmp_path))) as client:
            assert (await client.get(server.api_url())).status_code == 200
    assert server.token_requests == 1


def test_keys_that_are_not_file_names_are_hashed(tmp_path: Path):
    """A custom key with path characters never escapes the directory."""
    token = Token("access-token-value", time.time() + 60, time.time())
    cache = FileCache(tmp_path / "cache")
    cache.set("../../escape", token)
    assert cache.get("../../escape") == token
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_auth_repr_and_cache_repr_hold_no_secret(tmp_path: Path):
    """repr() of a FileCache names its directory only."""
    auth = ClientCredentialsAuth(
        "https://idp.example.com/token", CLIENT_ID, CLIENT_SECRET, cache=FileCache(tmp_path)
    )
    assert repr(FileCache(tmp_path)) == f"FileCache({str(tmp_path)!r})"
    assert CLIENT_SECRET not in repr(auth)
