"""Test helpers: a local fake OAuth 2.0 token provider with a protected API.

``FakeTokenServer`` serves, on 127.0.0.1 only, the token endpoints of a generic
RFC 6749 server, StackSpot (Keycloak), Acesso Cidadão (IdentityServer), Bitize and
Score Positivo (Laravel Passport), plus OIDC discovery and a Bearer-protected
``/api/...``. It is strict like the real providers, counts every request and can
be told to misbehave with ``Failure``. All secrets and tokens it handles are fake.

``FakeTokenServer(mtls=True)`` is the Pix-style variant: HTTPS from a private CA,
client certificates required, ``tls_client_auth`` and certificate-bound tokens;
``issue_client_cert()`` and ``self_signed_client_cert()`` make the certificates.

``WorkloadIssuer`` plays a platform that signs workload tokens (a Kubernetes
cluster, Azure, GitHub Actions); ``trust_issuer()`` and ``add_client(federated_subject=...)``
make the fake server accept them as client assertions, as Keycloak's federated
client authentication and Entra ID's workload identity federation do.

``reset()`` forgets chaveiro's in-process tokens. Installed with chaveiro, a pytest
plugin provides the ``fake_token_server`` and ``chaveiro_reset`` fixtures.
"""

from __future__ import annotations

from chaveiro.testing._dialects import BitizeExpiryFormat
from chaveiro.testing._federation import WorkloadIssuer
from chaveiro.testing._knobs import Failure, FailureKind
from chaveiro.testing._server import DIALECTS, FakeTokenServer
from chaveiro.testing._state import reset
from chaveiro.testing._tls import ClientCertificate, self_signed_client_cert
from chaveiro.testing._wire import RecordedRequest

__all__ = [
    "DIALECTS",
    "BitizeExpiryFormat",
    "ClientCertificate",
    "Failure",
    "FailureKind",
    "FakeTokenServer",
    "RecordedRequest",
    "WorkloadIssuer",
    "reset",
    "self_signed_client_cert",
]
