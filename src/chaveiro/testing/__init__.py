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

Each name loads its module when first used: the pytest plugin imports this package
at every pytest start, and the fake server's JWT checks need cryptography and joserfc.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
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

_SOURCES = {
    "chaveiro.testing._dialects": ("BitizeExpiryFormat",),
    "chaveiro.testing._federation": ("WorkloadIssuer",),
    "chaveiro.testing._knobs": ("Failure", "FailureKind"),
    "chaveiro.testing._server": ("DIALECTS", "FakeTokenServer"),
    "chaveiro.testing._state": ("reset",),
    "chaveiro.testing._tls": ("ClientCertificate", "self_signed_client_cert"),
    "chaveiro.testing._wire": ("RecordedRequest",),
}
"""Where each public name lives."""


def __getattr__(name: str) -> object:
    for module_name, names in _SOURCES.items():
        if name in names:
            from importlib import import_module  # noqa: PLC0415

            value = getattr(import_module(module_name), name)
            globals()[name] = value
            return value
    raise AttributeError(f"module 'chaveiro.testing' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
