"""Client assertions from the platform a workload runs on: Kubernetes, Azure, GitHub Actions.

A workload on these platforms holds no client secret: the platform gives it a
short-lived signed JWT that the authorization server trusts (Keycloak's
federated client authentication, Microsoft Entra ID's workload identity
federation, and others). Each helper here is such a source::

    from chaveiro import ClientCredentialsAuth
    from chaveiro.workload import kubernetes_token

    auth = ClientCredentialsAuth(
        "https://sso.example.com/realms/shop/protocol/openid-connect/token",
        "orders",
        client_assertion=kubernetes_token(),
    )

Each says clearly, at the first token request or before, that it is not
running on its platform.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from chaveiro._assertions import MAX_ASSERTION_BYTES, AssertionFile
from chaveiro._config import DEFAULT_TIMEOUT, check_url
from chaveiro._errors import ClientAssertionError, ConfigurationError, MissingSettingError, excerpt
from chaveiro._token import normalize_scope

if TYPE_CHECKING:
    import requests
    from typing_extensions import Unpack

    from chaveiro._auth import ClientCredentialsAuth
    from chaveiro._config import AuthOptions

__all__ = [
    "AZURE_AUTHORITY_HOST",
    "KUBERNETES_TOKEN_PATH",
    "GitHubActionsToken",
    "azure_workload_identity",
    "github_actions_token",
    "kubernetes_token",
]

KUBERNETES_TOKEN_PATH = "/var/run/secrets/tokens/token"
"""Where :func:`kubernetes_token` looks by default: a projected ``serviceAccountToken``
volume mounted at ``/var/run/secrets/tokens`` with ``path: token``."""

AZURE_AUTHORITY_HOST = "https://login.microsoftonline.com/"
"""Microsoft Entra ID's public cloud, when ``AZURE_AUTHORITY_HOST`` is not set."""

_AZURE_HINT = (
    "This is not a pod with Azure workload identity: label the pod"
    " azure.workload.identity/use: 'true' and annotate its service account with"
    " azure.workload.identity/client-id, so the webhook sets AZURE_CLIENT_ID, AZURE_TENANT_ID"
    " and AZURE_FEDERATED_TOKEN_FILE."
)


def kubernetes_token(path: str | os.PathLike[str] = KUBERNETES_TOKEN_PATH) -> AssertionFile:
    """A Kubernetes projected service account token, for ``client_assertion=``.

    kubelet writes the token to ``path`` and replaces it before it expires;
    chaveiro reads it at every token request. The token's ``audience`` (in the
    pod's volume) must be what the authorization server expects: the realm's
    issuer URL for Keycloak, ``api://AzureADTokenExchange`` for Entra ID.
    """
    where = os.path.abspath(os.fspath(path))
    hint = (
        "This is not a Kubernetes pod with a projected service account token there: add a"
        " projected volume with a serviceAccountToken source (audience: your authorization"
        f" server's issuer) mounted so that the token is at {where}, or pass its path to"
        " kubernetes_token()."
    )
    return AssertionFile(where, hint=hint)


def azure_workload_identity(
    scope: str | Iterable[str],
    *,
    environ: Mapping[str, str] | None = None,
    **options: Unpack[AuthOptions],
) -> ClientCredentialsAuth:
    """An auth object for Microsoft Entra ID with Azure workload identity (AKS and others).

    Reads what the workload identity webhook sets in the pod: ``AZURE_CLIENT_ID``,
    ``AZURE_TENANT_ID``, ``AZURE_FEDERATED_TOKEN_FILE`` and, outside the public
    cloud, ``AZURE_AUTHORITY_HOST``. ``scope`` is one resource's ``/.default``
    scope, e.g. ``"api://<application id>/.default"`` or
    ``"https://graph.microsoft.com/.default"``. Other keyword arguments are
    those every adapter takes (``cache=``, ``session=``, ...).
    """
    from chaveiro._auth import ClientCredentialsAuth  # noqa: PLC0415 - no cycle at import

    env = os.environ if environ is None else environ
    wanted = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE")
    missing = [name for name in wanted if not env.get(name, "").strip()]
    if missing:
        raise MissingSettingError(
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set. {_AZURE_HINT}",
            names=tuple(missing),
        )
    scopes = normalize_scope(scope)
    if scopes is None or not all(s.endswith("/.default") for s in scopes.split()):
        raise ConfigurationError(
            f"scope={scope!r}: Entra ID's client credentials take one resource's /.default"
            " scope, e.g. 'api://<application id>/.default' or"
            " 'https://graph.microsoft.com/.default'."
        )
    authority = env.get("AZURE_AUTHORITY_HOST", "").strip() or AZURE_AUTHORITY_HOST
    tenant = quote(env["AZURE_TENANT_ID"].strip(), safe="")
    token_url = f"{authority.rstrip('/')}/{tenant}/oauth2/v2.0/token"
    token_file = env["AZURE_FEDERATED_TOKEN_FILE"].strip()
    if "client_assertion" in options or "client_assertion_file" in options:
        raise ConfigurationError(
            "azure_workload_identity() reads the assertion from AZURE_FEDERATED_TOKEN_FILE:"
            " drop client_assertion and client_assertion_file."
        )
    arguments: dict[str, Any] = {**options, "scope": scopes}
    arguments["client_assertion"] = AssertionFile(os.path.abspath(token_file), hint=_AZURE_HINT)
    return ClientCredentialsAuth(token_url, env["AZURE_CLIENT_ID"].strip(), **arguments)


@dataclass(frozen=True)
class GitHubActionsToken:
    """A GitHub Actions OIDC token for ``audience``, asked for at every token request.

    Made by :func:`github_actions_token`. It asks the job's OIDC endpoint
    (``ACTIONS_ID_TOKEN_REQUEST_URL``, with ``ACTIONS_ID_TOKEN_REQUEST_TOKEN``)
    through ``session`` when one is given, so its proxies and CA settings apply.
    """

    audience: str
    session: requests.Session | None = field(default=None, repr=False, compare=False)
    timeout: float | tuple[float, float] = DEFAULT_TIMEOUT

    @property
    def chaveiro_identity(self) -> str:
        return f"github-actions:{self.audience}"

    def __call__(self) -> str:
        import requests  # noqa: PLC0415 - only in a GitHub Actions job

        base, bearer = _github_environment()
        url = f"{base}{'&' if '?' in base else '?'}{urlencode({'audience': self.audience})}"
        client = self.session if self.session is not None else requests.Session()
        where = "GitHub Actions' OIDC endpoint (ACTIONS_ID_TOKEN_REQUEST_URL)"
        try:
            with client.get(
                url,
                headers={"Authorization": f"bearer {bearer}", "Accept": "application/json"},
                timeout=self.timeout,
                allow_redirects=False,
                stream=True,
            ) as response:
                body = response.raw.read(MAX_ASSERTION_BYTES + 1, decode_content=True)
                status = response.status_code
        except (requests.RequestException, OSError, ValueError) as exc:
            raise ClientAssertionError(
                f"Could not reach {where} ({type(exc).__name__}: {excerpt(str(exc), 160)}).",
                source="github_actions_token",
            ) from None
        finally:
            if self.session is None:
                client.close()
        return _github_value(status, body, where)


def _github_environment() -> tuple[str, str]:
    url = os.environ.get("ACTIONS_ID_TOKEN_REQUEST_URL", "").strip()
    bearer = os.environ.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "").strip()
    if not url or not bearer:
        raise MissingSettingError(
            "ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set: this"
            " is not a GitHub Actions job, or the job lacks the permission to ask for an OIDC"
            " token. Add 'permissions: id-token: write' to the workflow or the job.",
            names=("ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN"),
        )
    return check_url(url, what="ACTIONS_ID_TOKEN_REQUEST_URL"), bearer


def _github_value(status: int, body: bytes, where: str) -> str:
    if status != 200:
        raise ClientAssertionError(
            f"{where} answered HTTP {status}: {excerpt(body, 160) or 'no body'}. Check the"
            " workflow's 'permissions: id-token: write' and the audience.",
            source="github_actions_token",
        )
    try:
        payload = json.loads(body[:MAX_ASSERTION_BYTES].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        payload = None
    value = payload.get("value") if isinstance(payload, dict) else None
    if not isinstance(value, str) or not value.strip():
        raise ClientAssertionError(
            f"{where} answered without a token ('value'): {excerpt(body, 80) or 'empty'}.",
            source="github_actions_token",
        )
    return value


def github_actions_token(
    audience: str,
    *,
    session: requests.Session | None = None,
    timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
) -> GitHubActionsToken:
    """The job's GitHub Actions OIDC token for ``audience``, for ``client_assertion=``.

    ``audience`` is what the authorization server expects in the token's
    ``aud``: ``api://AzureADTokenExchange`` for Entra ID, the realm's issuer
    URL for Keycloak. The job needs ``permissions: id-token: write``; outside
    such a job this raises :class:`~chaveiro.MissingSettingError` at once.
    """
    if not str(audience or "").strip():
        raise ConfigurationError(
            "github_actions_token() needs audience=: what the authorization server expects"
            " in the token's aud, e.g. 'api://AzureADTokenExchange' for Entra ID."
        )
    _github_environment()
    return GitHubActionsToken(audience.strip(), session, timeout)
