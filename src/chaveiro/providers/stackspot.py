"""StackSpot: Keycloak client credentials, with the realm in the token URL's path.

``client_key`` is StackSpot's name for the client secret; it goes in the form
body as ``client_secret``. While the refresh token lives, renewals use the
``refresh_token`` grant; a refused refresh token falls back to the keys.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import quote

from chaveiro._auth import AuthOptions, ClientCredentialsAuth
from chaveiro._config import CREDENTIAL_ALTERNATIVES, check_options, clean
from chaveiro._dialect import Dialect
from chaveiro._errors import MissingSettingError

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["DIALECT", "TOKEN_URL", "StackSpotAuth", "token_url_for"]

TOKEN_URL = "https://idm.stackspot.com/{realm}/oidc/oauth/token"
"""The token endpoint of a realm; other environments pass ``token_url=``."""

DIALECT = Dialect(
    name="stackspot",
    rejected_hint="Check the client id, the client key and the realm.",
    rejected_after_success_hint=(
        "These keys worked earlier: they were probably regenerated in the StackSpot portal,"
        " which invalidates the old ones. Use the new client id and client key."
    ),
)


def token_url_for(realm: str) -> str:
    """The token URL of ``realm``."""
    return TOKEN_URL.format(realm=quote(realm, safe=""))


class StackSpotAuth(ClientCredentialsAuth):
    """StackSpot service credentials: ``client_id``, ``client_key`` and ``realm``.

    ``token_url=`` replaces the URL built from the realm (the realm is then not
    needed). ``use_refresh_token=False`` renews with the keys every time. With
    Keycloak's federated client authentication, ``client_assertion=`` or
    ``client_assertion_file=`` replaces ``client_key``.
    """

    dialect = DIALECT
    env_prefix = "STACKSPOT"
    env_fields = (
        ("client_id", "CLIENT_ID", True),
        ("client_key", "CLIENT_KEY", CREDENTIAL_ALTERNATIVES),
        ("realm", "REALM", "token_url"),
        ("token_url", "TOKEN_URL", False),
    )

    def __init__(
        self,
        client_id: str,
        client_key: str | None = None,
        realm: str | None = None,
        *,
        token_url: str | None = None,
        scope: str | Iterable[str] | None = None,
        use_refresh_token: bool = True,
        **options: Unpack[AuthOptions],
    ) -> None:
        check_options(type(self).__name__, options)
        supplied = any(options.get(name) is not None for name in CREDENTIAL_ALTERNATIVES)
        key = clean("client_key", client_key, required=not supplied)
        if token_url is None:
            name = clean("realm", realm, required=False)
            if name is None:
                raise MissingSettingError(
                    "realm is required (your StackSpot account's realm, as in"
                    " https://idm.stackspot.com/<realm>/oidc/oauth/token), unless token_url"
                    " is given.",
                    names=("realm",),
                )
            token_url = token_url_for(name)
        super().__init__(
            token_url,
            client_id,
            key,
            scope=scope,
            auth_method="client_secret_post",
            use_refresh_token=use_refresh_token,
            **options,
        )
