"""Supplied client assertions (client_assertion=, client_assertion_file=) over real HTTP.

The fake server trusts a workload issuer (a Kubernetes cluster, say) and
authenticates the client ``orders`` with the tokens that issuer signs for
its service account, as Keycloak's federated client authentication does. The
token file is a real file, rotated the way kubelet does it (a new directory,
then an atomic swap of the ``..data`` symlink).
"""

from __future__ import annotations

import asyncio
import copy
import os
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import aiohttp
import anyio
import httpx
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from chaveiro import (
    BitizeAuth,
    ClientAssertionError,
    ClientCredentialsAuth,
    ConfigurationError,
    CredentialsRejectedError,
    MissingSettingError,
    StackSpotAuth,
)
from chaveiro._assertions import MAX_ASSERTION_BYTES, AssertionFile
from chaveiro.testing import Failure, FakeTokenServer, WorkloadIssuer
from tests.conftest import CLIENT_ID, CLIENT_SECRET

SUBJECT = "system:serviceaccount:shop:orders"
CLIENT = "orders"


class Workload:
    """A server that trusts a cluster, and a pod's token file that kubelet keeps fresh."""

    def __init__(self, server: FakeTokenServer, directory: Path) -> None:
        self.server = server
        self.cluster = WorkloadIssuer()
        server.trust_issuer(self.cluster.issuer, self.cluster.jwks)
        server.add_client(CLIENT, federated_issuer=self.cluster.issuer, federated_subject=SUBJECT)
        self.directory = directory
        self.path = directory / "token"
        self.written: list[str] = []
        self.rotate()

    def mint(self) -> str:
        return self.cluster.mint(SUBJECT, audience=[self.server.issuer], lifetime=600)

    def rotate(self, content: str | None = None) -> str:
        """Write a new token as kubelet does: a new directory, then swap ``..data`` atomically."""
        token = self.mint() if content is None else content
        generation = self.directory / f"..gen{len(self.written)}"
        generation.mkdir()
        (generation / "token").write_text(token + "\n")
        staging = self.directory / "..data_tmp"
        staging.symlink_to(generation.name)
        staging.replace(self.directory / "..data")
        if not self.path.is_symlink():
            self.path.symlink_to("..data/token")
        self.written.append(token)
        return token

    def sent(self) -> list[dict[str, list[str]]]:
        return [parse_qs(r.body.decode()) for r in self.server.token_request_log]

    def auth(self, **kwargs: object) -> ClientCredentialsAuth:
        options: dict[str, object] = {"client_assertion_file": str(self.path)}
        options.update(kwargs)
        return ClientCredentialsAuth(self.server.oauth_token_url, CLIENT, **options)  # type: ignore[arg-type]


@pytest.fixture
def workload(server: FakeTokenServer, tmp_path: Path) -> Workload:
    return Workload(server, tmp_path)


class Counting:
    """An assertion callable that counts its calls, from any thread."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            self.calls += 1
        return self.workload.mint()


# ---- the token request ---------------------------------------------------------------------------


def test_request_carries_the_assertion_as_supplied(workload: Workload):
    """client_assertion, its type and client_id; no secret, no Authorization header."""
    with requests.Session() as session:
        assert session.get(workload.server.api_url(), auth=workload.auth()).status_code == 200
    record = workload.server.token_request_log[0]
    assert parse_qs(record.body.decode()) == {
        "grant_type": ["client_credentials"],
        "client_id": [CLIENT],
        "client_assertion_type": ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"],
        "client_assertion": [workload.written[0]],
    }
    assert "authorization" not in record.headers


def test_callable_result_is_sent_exactly(workload: Workload):
    """What the callable returns is sent unchanged (never re-signed, never stripped)."""
    token = workload.mint()
    auth = ClientCredentialsAuth(
        workload.server.oauth_token_url, CLIENT, client_assertion=lambda: token
    )
    assert auth.get_token().access_token
    assert workload.sent()[0]["client_assertion"] == [token]


@pytest.mark.parametrize("content", [None, "", "  \n"])
def test_missing_or_empty_file_fails_before_any_request(workload: Workload, content):
    """A missing or empty file: ConfigurationError naming it, and no token request."""
    path = workload.directory / "absent"
    if content is not None:
        path.write_text(content)
    auth = workload.auth(client_assertion_file=str(path))
    with pytest.raises(ConfigurationError, match=str(path)), requests.Session() as session:
        session.get(workload.server.api_url(), auth=auth)
    assert workload.server.token_requests == 0
    path.write_text(workload.mint())  # the platform writes it: the next call works
    assert auth.get_token().access_token


# ---- rotation and identity -----------------------------------------------------------------------


def test_rotation_alone_causes_no_token_request(workload: Workload):
    """kubelet rotates the file: the token is kept; the next token request sends the new one."""
    auth = workload.auth()
    with requests.Session() as session:
        assert session.get(workload.server.api_url(), auth=auth).status_code == 200
        workload.rotate()
        again = workload.auth()  # built after the rotation: the same source, the same token
        for _ in range(5):
            assert session.get(workload.server.api_url(), auth=again).status_code == 200
        assert workload.server.token_requests == 1
        workload.server.revoke_all()
        assert session.get(workload.server.api_url(), auth=auth).status_code == 200
    assert workload.server.token_requests == 2
    assert [s["client_assertion"] for s in workload.sent()] == [
        [workload.written[0]],
        [workload.written[1]],
    ]


def test_source_is_the_identity(workload: Workload):
    """The same path (or function) shares a token; another path or function has its own."""
    copy_path = workload.directory / "copy"
    copy_path.write_text(workload.mint())
    first, same = workload.auth(), workload.auth(client_assertion_file=str(workload.path))
    other = workload.auth(client_assertion_file=str(copy_path))
    assert first.get_token() == same.get_token()
    assert other.get_token() != first.get_token()
    counting = Counting(workload)
    by_callable = workload.auth(client_assertion_file=None, client_assertion=counting)
    again = workload.auth(client_assertion_file=None, client_assertion=counting)
    assert by_callable.get_token() == again.get_token()
    assert counting.calls == 1
    assert workload.server.token_requests == 3


def test_copies_keep_the_source_and_the_token(workload: Workload):
    """A pickled or copied auth object reads the same file and shares the held token."""
    auth = workload.auth()
    token = auth.get_token()
    for moved in (pickle.loads(pickle.dumps(auth)), copy.deepcopy(auth)):
        assert moved.get_token() == token
    assert workload.server.token_requests == 1


# ---- once per token request ----------------------------------------------------------------------


def test_callable_is_called_once_per_token_request(workload: Workload):
    """20 API calls: one call of the callable; a refused token: one more; a retry: one more."""
    counting = Counting(workload)
    auth = workload.auth(client_assertion_file=None, client_assertion=counting)
    with requests.Session() as session:
        for _ in range(20):
            assert session.get(workload.server.api_url(), auth=auth).status_code == 200
        assert counting.calls == 1
        workload.server.revoke_all()
        workload.server.fail(Failure.status(503), times=1)
        assert session.get(workload.server.api_url(), auth=auth).status_code == 200
    assert (counting.calls, workload.server.token_requests) == (3, 3)


def test_a_failing_source_sends_nothing_and_cools_down(workload: Workload):
    """A callable that raises: ClientAssertionError, no request, not asked again at once."""
    calls: list[int] = []

    def broken() -> str:
        calls.append(1)
        raise OSError("metadata service unreachable")

    auth = workload.auth(client_assertion_file=None, client_assertion=broken)
    for _ in range(3):
        with pytest.raises(ClientAssertionError, match="metadata service unreachable"):
            auth.get_token()
    assert (len(calls), workload.server.token_requests) == (1, 0)


@pytest.mark.parametrize("value", [None, "", b"bytes"])
def test_a_source_returning_no_string_is_a_configuration_error(workload: Workload, value):
    auth = workload.auth(client_assertion_file=None, client_assertion=lambda: value)
    with pytest.raises(ConfigurationError, match="must return the assertion"):
        auth.get_token()
    assert workload.server.token_requests == 0


def test_a_refused_assertion_is_not_shown(workload: Workload):
    """An assertion from an issuer the server does not trust: refused, and never quoted."""
    stranger = WorkloadIssuer("https://stranger.example")
    token = stranger.mint(SUBJECT, audience=workload.server.issuer)
    auth = workload.auth(client_assertion_file=None, client_assertion=lambda: token)
    with pytest.raises(CredentialsRejectedError) as caught:
        auth.get_token()
    assert token not in str(caught.value)
    assert token.split(".")[2] not in repr(caught.value.__dict__)


# ---- every HTTP client, and a concurrent cold start ----------------------------------------------


def test_httpx_family_sync(workload: Workload, hx):
    """httpx and httpx2, sync: five calls, one token request, one read of the file."""
    with hx.Client(auth=workload.auth()) as client:
        assert [client.get(workload.server.api_url()).status_code for _ in range(5)] == [200] * 5
        workload.rotate()
        workload.server.revoke_all()
        assert client.get(workload.server.api_url()).status_code == 200
    assert [s["client_assertion"] for s in workload.sent()] == [[t] for t in workload.written]


def test_httpx_and_httpx2_share_one_token(workload: Workload):
    """One source, one token: an httpx client and an httpx2 client in one process."""
    httpx2 = pytest.importorskip("httpx2")
    auth = workload.auth()
    with httpx.Client(auth=auth) as first, httpx2.Client(auth=workload.auth()) as second:
        assert first.get(workload.server.api_url()).status_code == 200
        assert second.get(workload.server.api_url()).status_code == 200
    assert workload.server.token_requests == 1


def test_threads_at_cold_start_call_the_source_once(workload: Workload):
    """16 threads with requests and no token: one call of the callable, one token request."""
    workload.server.token_delay = 0.1
    counting = Counting(workload)
    auth = workload.auth(client_assertion_file=None, client_assertion=counting)
    codes: list[int] = []

    def one() -> None:
        with requests.Session() as session:
            codes.append(session.get(workload.server.api_url(), auth=auth).status_code)

    threads = [threading.Thread(target=one) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes == [200] * 16
    assert (counting.calls, workload.server.token_requests) == (1, 1)


@pytest.mark.anyio
async def test_httpx_async_cold_start_calls_the_source_once(workload: Workload, hx):
    """httpx and httpx2, 200 tasks (asyncio and trio) with no token: one call, one request."""
    workload.server.token_delay = 0.1
    counting = Counting(workload)
    auth = workload.auth(client_assertion_file=None, client_assertion=counting)
    codes: list[int] = []
    async with hx.AsyncClient(auth=auth, limits=hx.Limits(max_connections=20)) as client:

        async def one() -> None:
            codes.append((await client.get(workload.server.api_url())).status_code)

        async with anyio.create_task_group() as group:
            for _ in range(200):
                group.start_soon(one)
    assert codes == [200] * 200
    assert (counting.calls, workload.server.token_requests) == (1, 1)


@pytest.mark.anyio
async def test_httpx_async_reads_the_rotated_file(workload: Workload, hx):
    """Async too (httpx and httpx2): a refused token renews with the file's new content."""
    async with hx.AsyncClient(auth=workload.auth()) as client:
        assert (await client.get(workload.server.api_url())).status_code == 200
        workload.rotate()
        workload.server.revoke_all()
        assert (await client.get(workload.server.api_url())).status_code == 200
    assert [s["client_assertion"] for s in workload.sent()] == [[t] for t in workload.written]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_aiohttp_cold_start_calls_the_source_once(workload: Workload):
    """aiohttp middleware: 200 tasks, one call of the callable, one token request."""
    workload.server.token_delay = 0.1
    counting = Counting(workload)
    auth = workload.auth(client_assertion_file=None, client_assertion=counting)

    async def get(session: aiohttp.ClientSession) -> int:
        async with session.get(workload.server.api_url()) as response:
            await response.read()
            return response.status

    async with aiohttp.ClientSession(middlewares=(auth,)) as session:
        codes = await asyncio.gather(*(get(session) for _ in range(200)))
    assert codes == [200] * 200
    assert (counting.calls, workload.server.token_requests) == (1, 1)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_aiohttp_rotation(workload: Workload):
    """aiohttp: the file is read at each token request, never per API call."""
    async with aiohttp.ClientSession(middlewares=(workload.auth(),)) as session:
        for _ in range(3):
            async with session.get(workload.server.api_url()) as response:
                assert response.status == 200
        workload.rotate()
        workload.server.revoke_all()
        async with session.get(workload.server.api_url()) as response:
            assert response.status == 200
    assert [s["client_assertion"] for s in workload.sent()] == [[t] for t in workload.written]


def test_stackspot_keycloak_federated(workload: Workload):
    """StackSpotAuth (Keycloak) with the pod's token instead of client_key; renewals by refresh
    token carry a fresh read of the file too."""
    server = workload.server
    auth = StackSpotAuth(
        client_id=CLIENT,
        token_url=server.stackspot_token_url("shop"),
        client_assertion_file=workload.path,
    )
    with requests.Session() as session:
        assert session.get(server.api_url(), auth=auth).status_code == 200
        workload.rotate()
        server.revoke_all(include_refresh=False)
        assert session.get(server.api_url(), auth=auth).status_code == 200
    assert server.grants == ["client_credentials", "refresh_token"]
    assert [s["client_assertion"] for s in workload.sent()] == [[t] for t in workload.written]
    assert "client_secret" not in workload.sent()[1]


# ---- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"client_secret": CLIENT_SECRET}, "not both"),
        ({"client_assertion": lambda: "x"}, "not both"),
        ({"client_assertion_file": None, "client_assertion": "a.jwt.string"}, "callable"),
        ({"client_assertion_file": ""}, "path"),
        ({"auth_method": "client_secret_jwt"}, "cannot send a client assertion"),
        ({"auth_method": "client_secret_json"}, "cannot send a client assertion"),
    ],
)
def test_conflicting_arguments(workload: Workload, kwargs, words):
    with pytest.raises(ConfigurationError, match=words):
        workload.auth(**kwargs)


def test_from_env_reads_the_assertion_file(workload: Workload, monkeypatch):
    """<PREFIX>_CLIENT_ASSERTION_FILE stands in for the secret's variable, for every class."""
    env = {
        "OAUTH_TOKEN_URL": workload.server.oauth_token_url,
        "OAUTH_CLIENT_ID": CLIENT,
        "OAUTH_CLIENT_ASSERTION_FILE": str(workload.path),
    }
    assert ClientCredentialsAuth.from_env(environ=env).get_token().access_token
    stackspot = StackSpotAuth.from_env(
        environ={
            "STACKSPOT_CLIENT_ID": CLIENT,
            "STACKSPOT_TOKEN_URL": workload.server.stackspot_token_url(),
            "STACKSPOT_CLIENT_ASSERTION_FILE": str(workload.path),
        }
    )
    assert stackspot._settings.assertions.source is not None
    with pytest.raises(MissingSettingError, match="OAUTH_CLIENT_ASSERTION_FILE"):
        ClientCredentialsAuth.from_env(environ={k: env[k] for k in list(env)[:2]})
    monkeypatch.setenv("BITIZE_CLIENT_ASSERTION_FILE", str(workload.path))
    monkeypatch.setenv("BITIZE_CONSUMER_KEY", CLIENT_ID)
    monkeypatch.setenv("BITIZE_SECRET_KEY", CLIENT_SECRET)
    with pytest.raises(ConfigurationError, match="BitizeAuth"):
        BitizeAuth.from_env()


@pytest.fixture
def no_cwd_change() -> Iterator[None]:
    here = os.getcwd()
    yield
    os.chdir(here)


def test_relative_path_is_fixed_at_construction(workload: Workload, no_cwd_change):
    """A relative path means the file it names when the auth object is built."""
    os.chdir(workload.directory)
    auth = workload.auth(client_assertion_file="token")
    os.chdir("/")
    assert auth.get_token().access_token


# ---- the file's content, whatever it holds -------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_file_content_is_sent_stripped_or_refused(tmp_path_factory, data: bytes):
    """Any bytes: the stripped UTF-8 text when there is some, else a ConfigurationError."""
    path = tmp_path_factory.mktemp("assertion") / "token"
    path.write_bytes(data)
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        text = ""
    if text and len(data) <= MAX_ASSERTION_BYTES:
        assert AssertionFile(str(path))() == text
    else:
        with pytest.raises(ConfigurationError, match=str(path)):
            AssertionFile(str(path))()
