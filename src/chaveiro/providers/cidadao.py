"""Acesso Cidadão (Espírito Santo): IdentityServer client credentials with required scopes.

The client authenticates with HTTP Basic (id and secret form-encoded first, RFC
6749 §2.3.1); ``scope`` goes in the form body. No refresh token: a new token is
fetched when the old one is due. Asking too often gets a client blocked, which
the shared, reused token prevents.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from chaveiro._auth import AuthOptions, ClientCredentialsAuth
from chaveiro._config import CREDENTIAL_ALTERNATIVES, check_options
from chaveiro._dialect import Dialect
from chaveiro._errors import MissingSettingError
from chaveiro._token import normalize_scope

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["DIALECT", "TOKEN_URL", "CidadaoAuth"]

TOKEN_URL = "https://acessocidadao.es.gov.br/is/connect/token"

DIALECT = Dialect(
    name="cidadao",
    rejected_hint="Use the client id and secret of the application registered in Acesso Cidadão.",
)


class CidadaoAuth(ClientCredentialsAuth):
    """Acesso Cidadão credentials: ``client_id``, ``client_secret`` and ``scope`` (required).

    ``scope`` is a space-separated string or a list of the scopes registered for
    the application; the token endpoint refuses a request without one. A client
    registered with a key instead of a secret passes ``client_assertion=`` or
    ``client_assertion_file=`` in place of ``client_secret``.
    """

    dialect = DIALECT
    env_prefix = "CIDADAO"
    env_fields = (
        ("client_id", "CLIENT_ID", True),
        ("client_secret", "CLIENT_SECRET", CREDENTIAL_ALTERNATIVES),
        ("scope", "SCOPE", True),
        ("token_url", "TOKEN_URL", False),
    )

    def __init__(
        self,
        client_id: str,
        client_secret: str | None = None,
        scope: str | Iterable[str] | None = None,
        *,
        token_url: str = TOKEN_URL,
        **options: Unpack[AuthOptions],
    ) -> None:
        check_options(type(self).__name__, options)
        if normalize_scope(scope) is None:
            raise MissingSettingError(
                "scope is required: Acesso Cidadão refuses a token request without one. Pass"
                " the scopes registered for the application, e.g. scope='api-acessocidadao'.",
                names=("scope",),
            )
        super().__init__(
            token_url,
            client_id,
            client_secret,
            scope=scope,
            auth_method="client_secret_basic",
            **options,
        )
