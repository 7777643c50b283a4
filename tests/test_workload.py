"""The platform helpers of chaveiro.workload, each on its platform as simulated here.

Kubernetes: a real token file that kubelet's way of writing rotates. Azure:
the variables the workload identity webhook sets, and the fake server's Entra
route. GitHub Actions: a real local HTTP server in place of the job's OIDC
endpoint. Each helper, away from its platform, says so.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import requests

from chaveiro import (
    ClientAssertionError,
    ClientCredentialsAuth,
    ConfigurationError,
    MissingSettingError,
)
from chaveiro.testing import FakeTokenServer, WorkloadIssuer
from chaveiro.workload import (
    KUBERNETES_TOKEN_PATH,
    azure_workload_identity,
    github_actions_token,
    kubernetes_token,
)
from tests.test_client_assertion import Workload

ENTRA_AUDIENCE = "api://AzureADTokenExchange"

# ---- Kubernetes ----------------------------------------------------------------------------------


def test_kubernetes_token_follows_rotation(server: FakeTokenServer, tmp_path: Path):
    """kubernetes_token(path): each token request reads the file kubelet rotated."""
    workload = Workload(server, tmp_path)
    auth = ClientCredentialsAuth(
        server.oauth_token_url, "orders", client_assertion=kubernetes_token(workload.path)
    )
    with requests.Session() as session:
        assert session.get(server.api_url(), auth=auth).status_code == 200
        workload.rotate()
        assert session.get(server.api_url(), auth=auth).status_code == 200
        server.revoke_all()
        assert session.get(server.api_url(), auth=auth).status_code == 200
    assert [s["client_assertion"] for s in workload.sent()] == [[t] for t in workload.written]


def test_kubernetes_token_shares_the_file_identity(server: FakeTokenServer, tmp_path: Path):
    """kubernetes_token(path) and client_assertion_file=path are one source: one token."""
    workload = Workload(server, tmp_path)
    helper = ClientCredentialsAuth(
        server.oauth_token_url, "orders", client_assertion=kubernetes_token(workload.path)
    )
    assert helper.get_token() == workload.auth().get_token()
    assert server.token_requests == 1


def test_kubernetes_token_outside_kubernetes(server: FakeTokenServer):
    """No projected token at the default path: a ConfigurationError that says what to add."""
    assert not Path(KUBERNETES_TOKEN_PATH).exists()
    auth = ClientCredentialsAuth(
        server.oauth_token_url, "orders", client_assertion=kubernetes_token()
    )
    with pytest.raises(ConfigurationError, match="serviceAccountToken") as caught:
        auth.get_token()
    assert KUBERNETES_TOKEN_PATH in str(caught.value)
    assert server.token_requests == 0


# ---- Azure workload identity ---------------------------------------------------------------------


@pytest.fixture
def azure_pod(server: FakeTokenServer, tmp_path: Path, monkeypatch) -> Workload:
    """A pod as the webhook leaves it, and Entra ID (the fake server) trusting its cluster."""
    workload = Workload(server, tmp_path)
    entra_trusted = WorkloadIssuer("https://oidc.aks.example/cluster-1")
    server.trust_issuer(entra_trusted.issuer, entra_trusted.jwks, audience=ENTRA_AUDIENCE)
    server.add_client(
        "11111111-2222-3333-4444-555555555555",
        federated_issuer=entra_trusted.issuer,
        federated_subject="system:serviceaccount:shop:reports",
    )
    token = entra_trusted.mint("system:serviceaccount:shop:reports", audience=[ENTRA_AUDIENCE])
    workload.rotate(token)
    monkeypatch.setenv("AZURE_CLIENT_ID", "11111111-2222-3333-4444-555555555555")
    monkeypatch.setenv("AZURE_TENANT_ID", "contoso")
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(workload.path))
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", server.url + "/")
    return workload


def test_azure_workload_identity(azure_pod: Workload):
    """The webhook's variables give Entra's token endpoint, the client and the token file."""
    server = azure_pod.server
    auth = azure_workload_identity("api://reports/.default")
    assert auth.token_url == server.entra_token_url("contoso")
    with httpx.Client(auth=auth) as client:
        assert client.get(server.api_url()).status_code == 200
    sent = azure_pod.sent()[0]
    assert sent["client_assertion"] == [azure_pod.written[-1]]
    assert sent["client_id"] == ["11111111-2222-3333-4444-555555555555"]
    assert sent["scope"] == ["api://reports/.default"]
    assert server.token_request_log[0].path == "/contoso/oauth2/v2.0/token"


def test_azure_scope_must_be_a_default_scope(azure_pod: Workload):
    with pytest.raises(ConfigurationError, match=r"/\.default"):
        azure_workload_identity("User.Read")


@pytest.mark.parametrize(
    "unset", ["AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE"]
)
def test_azure_outside_azure(azure_pod: Workload, monkeypatch, unset):
    """A missing webhook variable is named, with what to set on the pod."""
    monkeypatch.delenv(unset)
    with pytest.raises(MissingSettingError, match=unset) as caught:
        azure_workload_identity("api://reports/.default")
    assert "azure.workload.identity/use" in str(caught.value)
    assert caught.value.names == (unset,)


# ---- GitHub Actions ------------------------------------------------------------------------------


class ActionsOidc:
    """The job's OIDC endpoint: GET ?audience=... with the request token, answers {"value": jwt}."""

    def __init__(self, issuer: WorkloadIssuer, request_token: str) -> None:
        self.issuer = issuer
        self.request_token = request_token
        self.seen: list[tuple[dict[str, list[str]], dict[str, str]]] = []
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                outer.seen.append((query, dict(self.headers)))
                if self.headers.get("Authorization") != f"bearer {outer.request_token}":
                    self._answer(401, {"message": "Bad credentials"})
                elif outer.status != 200:
                    self._answer(outer.status, {"message": "Internal error"})
                else:
                    subject = "repo:acme/shop:ref:refs/heads/main"
                    token = outer.issuer.mint(subject, audience=query["audience"][0])
                    self._answer(200, {"count": 1, "value": token})

            def _answer(self, status: int, body: dict[str, object]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/token?api-version=2.0"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def actions(server: FakeTokenServer, monkeypatch) -> Iterator[ActionsOidc]:
    github = WorkloadIssuer("https://token.actions.githubusercontent.com")
    server.trust_issuer(github.issuer, github.jwks, audience=ENTRA_AUDIENCE)
    server.add_client(
        "deployer",
        federated_issuer=github.issuer,
        federated_subject="repo:acme/shop:ref:refs/heads/main",
    )
    endpoint = ActionsOidc(github, "job-request-token-0123456789")
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", endpoint.url)
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", endpoint.request_token)
    yield endpoint
    endpoint.close()


def test_github_actions_token(server: FakeTokenServer, actions: ActionsOidc):
    """One OIDC request per token request, with the audience, through the user's session."""
    with requests.Session() as session:
        session.headers["X-Through"] = "the user's session"
        source = github_actions_token(ENTRA_AUDIENCE, session=session)
        auth = ClientCredentialsAuth(server.oauth_token_url, "deployer", client_assertion=source)
        for _ in range(3):
            assert session.get(server.api_url(), auth=auth).status_code == 200
        server.revoke_all()
        assert session.get(server.api_url(), auth=auth).status_code == 200
    assert len(actions.seen) == server.token_requests == 2
    query, headers = actions.seen[0]
    assert query == {"api-version": ["2.0"], "audience": [ENTRA_AUDIENCE]}
    assert headers["X-Through"] == "the user's session"


def test_github_actions_failure_is_typed_and_quiet(server: FakeTokenServer, actions: ActionsOidc):
    """The OIDC endpoint failing: ClientAssertionError with its status; no token request."""
    actions.status = 500
    auth = ClientCredentialsAuth(
        server.oauth_token_url, "deployer", client_assertion=github_actions_token(ENTRA_AUDIENCE)
    )
    with pytest.raises(ClientAssertionError, match="HTTP 500") as caught:
        auth.get_token()
    assert actions.request_token not in str(caught.value)
    assert server.token_requests == 0


def test_github_actions_outside_actions(monkeypatch):
    """No job variables: a MissingSettingError at once, naming the permission to add."""
    monkeypatch.delenv("ACTIONS_ID_TOKEN_REQUEST_URL", raising=False)
    monkeypatch.delenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", raising=False)
    with pytest.raises(MissingSettingError, match="id-token: write"):
        github_actions_token(ENTRA_AUDIENCE)
    with pytest.raises(ConfigurationError, match="audience"):
        github_actions_token("")
