"""FakeTokenServer with federated client authentication: workload tokens from trusted issuers."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from chaveiro.testing import FakeTokenServer, WorkloadIssuer

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SUBJECT = "system:serviceaccount:shop:orders"


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


@pytest.fixture(params=["RS256", "ES256"])
def cluster(request: pytest.FixtureRequest, server: FakeTokenServer) -> WorkloadIssuer:
    made = WorkloadIssuer(alg=request.param)
    server.trust_issuer(made.issuer, made.jwks)
    server.add_client("orders", federated_issuer=made.issuer, federated_subject=SUBJECT)
    return made


def _post(
    http: httpx.Client, server: FakeTokenServer, assertion: str, **fields: str
) -> httpx.Response:
    data = {
        "grant_type": "client_credentials",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
        **fields,
    }
    return http.post(server.oauth_token_url, data=data)


def test_a_workload_token_authenticates_its_client(http, server, cluster):
    """aud = this server's issuer (as a list, as Kubernetes writes it): a token for 'orders'."""
    token = cluster.mint(SUBJECT, audience=[server.issuer])
    for fields in ({"client_id": "orders"}, {}):  # Keycloak finds the client by its subject
        resp = _post(http, server, token, **fields)
        assert resp.status_code == 200, resp.text
        api = http.get(
            server.api_url(), headers={"Authorization": "Bearer " + resp.json()["access_token"]}
        )
        assert api.json()["client_id"] == "orders"


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        ({"audience": "https://elsewhere.example"}, {}),
        ({"subject": "system:serviceaccount:shop:other"}, {}),
        ({"lifetime": -10}, {}),
        ({}, {"client_id": "someone-else"}),
    ],
)
def test_wrong_audience_subject_expiry_or_client_are_refused(http, server, cluster, change, fields):
    """Another audience, an unknown subject, an expired token or another client: 401."""
    options = {"subject": SUBJECT, "audience": server.issuer, **change}
    token = cluster.mint(options.pop("subject"), **options)
    resp = _post(http, server, token, **fields)
    assert (resp.status_code, resp.json()["error"]) == (401, "invalid_client")


def test_a_key_the_issuer_does_not_publish_is_refused(http, server, cluster):
    """Same issuer name, another key: the signature does not verify."""
    impostor = WorkloadIssuer(cluster.issuer, alg=cluster.alg)
    resp = _post(http, server, impostor.mint(SUBJECT, audience=server.issuer))
    assert resp.status_code == 401


def test_entra_audience(http, server):
    """trust_issuer(audience='api://AzureADTokenExchange'): Entra's rule, not the issuer's."""
    github = WorkloadIssuer("https://token.actions.githubusercontent.com")
    server.trust_issuer(github.issuer, github.jwks, audience="api://AzureADTokenExchange")
    server.add_client("app", federated_issuer=github.issuer, federated_subject="repo:a/b:ref:main")
    good = github.mint("repo:a/b:ref:main", audience="api://AzureADTokenExchange")
    assert _post(http, server, good, client_id="app").status_code == 200
    assert _post(http, server, good, client_id="app").status_code == 200  # reusable, unlike ours
    bad = github.mint("repo:a/b:ref:main", audience=server.issuer)
    assert _post(http, server, bad, client_id="app").status_code == 401


def test_registration_errors(server):
    """A private JWKS, a half federation or a client with no credential is refused."""
    issuer = WorkloadIssuer()
    private = {"keys": [issuer._key.as_dict(private=True)]}
    with pytest.raises(ValueError, match="public keys only"):
        server.trust_issuer(issuer.issuer, private)
    with pytest.raises(ValueError, match="JSON Web Key Set"):
        server.trust_issuer(issuer.issuer, {"keys": "nope"})
    with pytest.raises(ValueError, match="together"):
        server.add_client("x", federated_subject=SUBJECT)
    with pytest.raises(ValueError, match="federated_issuer"):
        server.add_client("x")
