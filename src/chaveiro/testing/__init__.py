"""Test helpers: a local fake OAuth 2.0 token provider with a protected API.

``FakeTokenServer`` serves, on 127.0.0.1 only, the token endpoints of a generic
RFC 6749 server, StackSpot (Keycloak), Acesso Cidadão (IdentityServer), Bitize and
Score Positivo (Laravel Passport), plus OIDC discovery and a Bearer-protected
``/api/...``. It is strict like the real providers, counts every request and can
be told to misbehave with ``Failure``. All secrets and tokens it handles are fake.

``reset()`` forgets chaveiro's in-process tokens. Installed with chaveiro, a pytest
plugin provides the ``fake_token_server`` and ``chaveiro_reset`` fixtures.
"""

from __future__ import annotations

from chaveiro.testing._server import (
    DIALECTS,
    BitizeExpiryFormat,
    Failure,
    FailureKind,
    FakeTokenServer,
    RecordedRequest,
)
from chaveiro.testing._state import reset

__all__ = [
    "DIALECTS",
    "BitizeExpiryFormat",
    "Failure",
    "FailureKind",
    "FakeTokenServer",
    "RecordedRequest",
    "reset",
]
