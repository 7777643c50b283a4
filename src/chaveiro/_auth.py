"""``ClientCredentialsAuth``: one object for every HTTP client, assembled from one room per library.

The decisions live in :mod:`chaveiro._manager`; settings are checked by
:mod:`chaveiro._config`; each HTTP library has its own room (:mod:`._requests`,
:mod:`._httpx`, :mod:`._aiohttp`). This module only puts them together: the
constructor, the presentation, and the other ways to build one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import requests

from chaveiro._aiohttp import AiohttpMiddleware
from chaveiro._assertions import check_assertions
from chaveiro._caches import TokenCache, default_cache
from chaveiro._certs import ClientCert, ClientTLS, client_cert_of
from chaveiro._config import (
    CREDENTIAL_ALTERNATIVES,
    DEFAULT_TIMEOUT,
    AuthOptions,
    EnvField,
    check_renew_on,
    check_timeout,
    check_url,
    clean,
    encodable,
    extra_parameters,
    host_matcher,
    read_env,
)
from chaveiro._dialect import CERTIFICATE_METHODS, OAUTH2, ClientSettings, Dialect
from chaveiro._discovery import CertificateKind, choose_auth_method, discovered
from chaveiro._dpop import DPoPKey, ath_of, dpop_settings
from chaveiro._errors import ConfigurationError, MissingSettingError
from chaveiro._httpx import HttpxAuth
from chaveiro._manager import Policy, Stats, TokenManager
from chaveiro._requests import RequestsAuth, ResponseHook, _OwnSession, discover
from chaveiro._steps import obtain_async
from chaveiro._token import DEFAULT_LEEWAY, Clock, Identity, Token, normalize_scope

if TYPE_CHECKING:
    import httpx
    import httpx2
    from typing_extensions import Self

__all__ = ["AuthOptions", "ClientCredentialsAuth"]

_REMADE = frozenset({"_manager", "_own_session", "_on_response_hook", "_dpop"})
"""What an auth object holds that does not travel: it is made anew on arrival."""


class ClientCredentialsAuth(RequestsAuth, HttpxAuth, AiohttpMiddleware):
    """OAuth 2.0 client credentials (RFC 6749 §4.4) for requests, httpx and aiohttp.

    Use one object everywhere — ``session.auth = auth``, ``httpx.Client(auth=auth)``,
    ``httpx.AsyncClient(auth=auth)``, ``aiohttp.ClientSession(middlewares=(auth,))``.
    The token is fetched on first use, shared by every thread, task and auth object
    with the same identity, renewed ``leeway`` seconds before it expires (never
    earlier than half its lifetime), and renewed with the request replayed once
    when the API answers 401.
    """

    dialect: ClassVar[Dialect] = OAUTH2

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str | None = None,
        *,
        scope: str | Iterable[str] | None = None,
        auth_method: str = "client_secret_basic",
        audience: str | None = None,
        resource: str | None = None,
        extra_params: Mapping[str, str] | None = None,
        private_key: str | bytes | None = None,
        signing_alg: str | None = None,
        key_id: str | None = None,
        client_cert: ClientCert | ClientTLS | None = None,
        client_cert_password: str | bytes | None = None,
        issuer: str | None = None,
        assertion_audience: str = "issuer",
        client_assertion: Callable[[], str] | None = None,
        client_assertion_file: str | os.PathLike[str] | None = None,
        dpop_key: DPoPKey = None,
        dpop_alg: str | None = None,
        dpop_allow_bearer: bool = False,
        body_format: str | None = None,
        grant_type_in: str | None = None,
        cache: TokenCache | None = None,
        leeway: float = DEFAULT_LEEWAY,
        replay_on_401: bool = True,
        renew_on: Iterable[int] = (401,),
        only_hosts: Iterable[str] | None = None,
        session: requests.Session | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        max_attempts: int = 3,
        deadline: float = 20.0,
        wait_timeout: float | None = None,
        use_refresh_token: bool = False,
        allow_insecure_http: bool = False,
        clock: Clock = time.time,
    ) -> None:
        url = check_url(token_url, allow_insecure_http=allow_insecure_http)
        cid = clean("client_id", client_id)
        assert cid is not None
        needed = auth_method if auth_method in CERTIFICATE_METHODS else None
        tls = client_cert_of(client_cert, client_cert_password, needed)
        assertions = check_assertions(
            type(self).__name__,
            url,
            auth_method,
            client_secret or private_key,
            issuer,
            assertion_audience,
            client_assertion,
            client_assertion_file,
            allow_insecure_http,
        )
        no_secret = private_key is not None or auth_method in CERTIFICATE_METHODS
        no_secret = no_secret or assertions.source is not None
        secret = clean("client_secret", client_secret, required=not no_secret)
        if isinstance(private_key, str):
            private_key = encodable("private_key", private_key).encode()
        extra = extra_parameters(extra_params, audience, resource)
        policy = Policy.checked(leeway, max_attempts, deadline, wait_timeout)
        connect_timeout, read_timeout = check_timeout(timeout)
        dpop = dpop_settings(dpop_key, dpop_alg, dpop_allow_bearer)
        self._settings = ClientSettings(
            token_url=url,
            client_id=cid,
            client_secret=secret,
            auth_method="private_key_jwt" if assertions.source else auth_method,
            scope=encodable("scope", normalize_scope(scope) or "") or None,
            extra=tuple(sorted(extra.items())),
            private_key=private_key,
            signing_alg=signing_alg,
            key_id=key_id,
            body_format=body_format,  # type: ignore[arg-type]  # checked by ClientSettings
            grant_type_in=grant_type_in,  # type: ignore[arg-type]
            assertions=assertions,
            dpop=dpop,
        )
        identity = Identity.of(
            url,
            cid,
            secret or private_key or b"",
            self._settings.scope,
            extra,
            thumbprint=None if tls is None else tls.thumbprint,
            client_auth=self._settings.client_auth,
            assertion_source=assertions.source_id,
            dpop=None if dpop is None else dpop.identity,
        )
        self._cache = cache if cache is not None else default_cache()
        self.replay_on_401 = replay_on_401
        self._renew_on = check_renew_on(renew_on)
        self._hosts = host_matcher(only_hosts)
        self._session = session
        self._tls = tls
        self._timeout = (connect_timeout, read_timeout)
        self._start(identity, policy, clock, use_refresh_token)

    def _start(self, identity: Identity, policy: Policy, clock: Clock, refresh: bool) -> None:
        """What an auth object holds besides its settings: made anew by a copy too."""
        self._manager = TokenManager(
            self.dialect,
            self._settings,
            identity,
            self._cache,
            clock=clock,
            policy=policy,
            use_refresh_token=refresh,
        )
        self._own_session = _OwnSession(self._tls)
        self._on_response_hook = ResponseHook(self)
        self._dpop = self._settings.dpop

    # ---- presentation ---------------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(token_url={self._settings.token_url!r},"
            f" client_id={self._settings.client_id!r})"
        )

    __str__ = __repr__

    @property
    def token_url(self) -> str:
        return self._settings.token_url

    @property
    def client_id(self) -> str:
        return self._settings.client_id

    @property
    def scope(self) -> str | None:
        return self._settings.scope

    @property
    def tls(self) -> ClientTLS | None:
        """The client certificate (``client_cert=``), for the HTTP client of the API calls.

        A certificate-bound API wants the same certificate on every call:
        ``httpx.Client(auth=auth, verify=auth.tls.ssl_context)``.
        """
        return self._tls

    @property
    def dpop_thumbprint(self) -> str | None:
        """The DPoP key's RFC 7638 SHA-256 thumbprint (base64url); None without DPoP.

        What a DPoP-bound token's ``cnf.jkt`` claim holds, and what a provider may
        want registered for this client.
        """
        return None if self._dpop is None else self._dpop.thumbprint

    def dpop_proof(self, method: str, url: str, token: Token | None = None) -> str:
        """A new DPoP proof for one ``method url`` request, for an HTTP client chaveiro is not in.

        With ``token`` (from :meth:`get_token`), the proof covers it (``ath``). The
        server's nonce is the newest chaveiro has been given for that origin.
        Send it as the ``DPoP`` header, with ``Authorization: token.authorization``.
        """
        dpop = self._dpop
        if dpop is None:
            raise ConfigurationError("dpop_proof() needs DPoP: pass dpop_key= to the constructor.")
        ath = None if token is None else (token.ath or ath_of(token.access_token))
        return dpop.proof(method.upper(), url, self._manager.clock(), ath)

    @property
    def stats(self) -> Stats:
        """A snapshot of this identity's counters in this process (for metrics)."""
        return self._manager.slot.stats.copy()

    def close(self) -> None:
        """Close the session chaveiro made for its own token requests (a given one stays open),
        and let go of this identity's state in the process.

        That state (the token, the cool-down, the counters) is freed once its token
        has expired, unless another auth object of the same identity is alive. The
        auth object stays usable: it holds the state again when it next needs a token.
        """
        super().close()
        self._manager.release()

    # ---- pickling and copying: settings only ------------------------------------------------

    def __getstate__(self) -> dict[str, object]:
        """The settings, the client secret among them (as requests pickles ``session.auth``).

        Never a token, lock, thread or connection: the token manager and our own
        session are made anew, and the cache travels as itself (see ``_travel``), so
        the copy shares the held token here and the shared cache anywhere.
        """
        state = {k: v for k, v in vars(self).items() if k not in _REMADE}
        made = self._manager
        state["_manager"] = (made.identity, made.policy, made.clock, made.use_refresh_token)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        identity, policy, clock, use_refresh_token = state.pop("_manager")
        vars(self).update(state)
        self._start(identity, policy, clock, use_refresh_token)

    # ---- construction from the environment -------------------------------------------------

    env_prefix: ClassVar[str] = "OAUTH"
    env_fields: ClassVar[tuple[EnvField, ...]] = (
        ("token_url", "TOKEN_URL", True),
        ("client_id", "CLIENT_ID", True),
        ("client_secret", "CLIENT_SECRET", ("client_cert", *CREDENTIAL_ALTERNATIVES)),
        ("scope", "SCOPE", False),
    )
    """``(argument, variable suffix, required)`` read by :meth:`from_env`.

    ``required`` may also name other arguments: the variable is then required
    unless one of them is given (as a keyword or through its own variable).
    Every class also reads ``CLIENT_CERT``, ``CLIENT_CERT_PASSWORD``,
    ``CLIENT_ASSERTION_FILE`` and ``DPOP_KEY`` (:data:`~chaveiro._config.COMMON_ENV_FIELDS`).
    """

    @classmethod
    def from_env(
        cls,
        *,
        prefix: str | None = None,
        environ: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Self:
        """Build from ``<PREFIX>_<SUFFIX>`` environment variables; arguments win over them.

        ``<PREFIX>_DPOP_KEY`` (a PEM file's path, or the PEM text) turns DPoP on.
        A missing required variable raises :class:`MissingSettingError` naming it.
        """
        prefix = cls.env_prefix if prefix is None else prefix
        read_env(cls.__name__, cls.env_fields, prefix, environ, kwargs)
        return cls(**kwargs)

    @classmethod
    def from_issuer(
        cls,
        issuer: str,
        client_id: str,
        client_secret: str | None = None,
        *,
        private_key: str | bytes | None = None,
        auth_method: str | None = None,
        client_cert: ClientCert | ClientTLS | None = None,
        client_cert_password: str | bytes | None = None,
        session: requests.Session | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        allow_insecure_http: bool = False,
        **kwargs: Any,
    ) -> Self:
        """Build from the issuer's OpenID Connect discovery document.

        ``GET <issuer>/.well-known/openid-configuration`` gives the token endpoint
        and the client authentication methods it accepts: ``private_key_jwt`` when
        ``private_key`` or a client assertion is given; with a client certificate and
        no secret, ``tls_client_auth`` (or ``self_signed_tls_client_auth``); else the
        first of ``client_secret_basic``, ``client_secret_post`` and
        ``client_secret_jwt`` that it lists (``auth_method=`` overrides the choice).
        With a client certificate, the issuer's mTLS alias of the token endpoint (RFC
        8705 §5) is used when it names one. The issuer becomes the audience of client
        assertions (RFC 10070). The document is fetched the way the token requests
        will be sent: through ``session`` (with its ``verify``) if given, else
        presenting ``client_cert`` and trusting its CAs. Each issuer is discovered
        once per process. Other keyword arguments are those of the constructor.
        """
        if not str(issuer or "").strip():  # None from os.environ.get, say
            raise MissingSettingError(
                "issuer is required: the provider's issuer URL, e.g. https://idp.example.com.",
                names=("issuer",),
            )
        base = check_url(issuer, allow_insecure_http=allow_insecure_http, what="issuer")
        base = base.rstrip("/")
        needed = auth_method if auth_method in CERTIFICATE_METHODS else None
        tls = client_cert_of(client_cert, client_cert_password, needed)
        metadata = discovered.get(base, lambda: discover(base, session, timeout, tls))
        token_url = check_url(
            metadata.token_endpoint_for(mtls=tls is not None),
            allow_insecure_http=allow_insecure_http,
            what="token_endpoint",
        )
        signs = private_key is not None or any(k in kwargs for k in CREDENTIAL_ALTERNATIVES)
        certificate: CertificateKind | None = None
        if tls is not None and not client_secret and not signs:  # only a certificate
            certificate = "self-signed" if tls.self_signed else "issued"
        method = auth_method or choose_auth_method(
            metadata, private_key=signs, certificate=certificate
        )
        kwargs.setdefault("issuer", metadata.issuer)  # the audience of client assertions
        return cls(
            token_url=token_url,
            client_id=client_id,
            client_secret=client_secret,
            auth_method=method,
            private_key=private_key,
            client_cert=tls,
            session=session,
            timeout=timeout,
            allow_insecure_http=allow_insecure_http,
            **kwargs,
        )

    # ---- tokens for non-HTTP uses -----------------------------------------------------------

    def get_token(self) -> Token:
        """The current token, fetched or renewed if needed (blocking).

        A token that is due for renewal but still valid is returned at once and
        renewed in the background.
        """
        return self._manager.fresh_token() or self._obtain_sync(None, background=True)

    async def aget_token(
        self, *, client: httpx.AsyncClient | httpx2.AsyncClient | None = None
    ) -> Token:
        """The current token, fetched or renewed if needed (asyncio or trio).

        With ``client``, an ``AsyncClient`` of httpx or httpx2, the token request
        is sent through it: its TLS settings, proxies and transport apply.
        Without, it goes exactly where :meth:`get_token`'s goes: through
        ``session=``, or chaveiro's own requests session (which honours the
        environment's proxies and CA bundle), in a worker thread, so the event
        loop never waits on it.
        """
        token = self._manager.fresh_token()
        if token is not None:
            return token
        if client is not None:
            return await self._aget_token_through(client)
        flow = self._manager.flow(None)
        return await obtain_async(flow, self._cache, self._send_in_thread)
