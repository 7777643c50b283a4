"""Score Positivo: OAuth 2.0 client credentials sent as a JSON body.

``{"grant_type": "client_credentials", "client_id": ..., "client_secret": ...}``
with ``Content-Type`` and ``Accept: application/json``; tokens last an hour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chaveiro._auth import AuthOptions, ClientCredentialsAuth
from chaveiro._config import check_options
from chaveiro._dialect import Dialect

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["DIALECT", "TOKEN_URL", "ScorePositivoAuth"]

TOKEN_URL = "https://core.scorepositivo.com.br/oauth/token"

DIALECT = Dialect(
    name="scorepositivo",
    headers=(("Accept", "application/json"),),
    rejected_hint="Use the client id and secret given by your Score Positivo account manager.",
)


class ScorePositivoAuth(ClientCredentialsAuth):
    """Score Positivo credentials: ``client_id`` and ``client_secret``."""

    dialect = DIALECT
    env_prefix = "SCOREPOSITIVO"
    env_fields = (
        ("client_id", "CLIENT_ID", True),
        ("client_secret", "CLIENT_SECRET", True),
        ("token_url", "TOKEN_URL", False),
    )

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        token_url: str = TOKEN_URL,
        **options: Unpack[AuthOptions],
    ) -> None:
        check_options(type(self).__name__, options)
        super().__init__(
            token_url, client_id, client_secret, auth_method="client_secret_json", **options
        )
