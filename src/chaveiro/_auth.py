"""``ClientCredentialsAuth``: one object that is a requests auth and an httpx auth.

The decisions live in :mod:`chaveiro._manager`; this module only moves bytes:
it turns token requests into requests/httpx requests and their answers back
into plain data, attaches the ``Authorization`` header, and replays a request
once when the API answers 401 to the token it carried.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import ssl
import threading
import time
from collections.abc import AsyncGenerator, Generator, Iterable, Mapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict
from urllib.parse import urlsplit

import httpcore
import httpx
import requests

from chaveiro._caches import TokenCache, default_cache
from chaveiro._dialect import (
    MAX_BODY_BYTES,
    OAUTH2,
    ClientSettings,
    Dialect,
    parse_response,
)
from chaveiro._discovery import (
    ProviderMetadata,
    choose_auth_method,
    discovered,
    discovery_url,
    parse_configuration,
)
from chaveiro._errors import (
    ConfigurationError,
    InsecureURLError,
    InvalidTokenResponseError,
    IssuerUnreachableError,
    MissingSettingError,
    TokenEndpointUnreachableError,
    TokenError,
    excerpt,
)
from chaveiro._manager import (
    RENEWAL_THREAD,
    CannotRetry,
    Detach,
    Policy,
    RawResponse,
    Send,
    Stats,
    TokenManager,
    run_async,
    run_sync,
)
from chaveiro._token import DEFAULT_LEEWAY, Clock, Identity, Token, normalize_scope

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["AuthOptions", "ClientCredentialsAuth"]

logger = logging.getLogger("chaveiro")

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
DEFAULT_TIMEOUT = (5.0, 15.0)
"""Connect and read timeouts of token requests that chaveiro sends itself."""


def _is_loopback(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: object, *, allow_insecure_http: bool = False, what: str = "token_url") -> str:
    """Validate a token URL: HTTPS, or HTTP on loopback, or HTTP when explicitly allowed."""
    if not isinstance(url, str) or not url.strip():
        raise MissingSettingError(f"{what} is required: the provider's token endpoint URL.")
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigurationError(
            f"{what}={excerpt(url, 120)!r} is not an http(s) URL; pass the full address,"
            " e.g. https://idp.example.com/oauth/token."
        )
    if parts.username or parts.password:
        raise ConfigurationError(
            f"{what} must not carry credentials in the URL; pass client_id and client_secret."
        )
    if parts.scheme == "http" and not allow_insecure_http and not _is_loopback(parts.hostname):
        raise InsecureURLError(
            f"{what}={excerpt(url, 120)!r} uses plain HTTP, which would send the client secret"
            " in clear text. Use https://, or pass allow_insecure_http=True if a trusted"
            " gateway on a private network requires it."
        )
    return url


def _clean(name: str, value: object, *, required: bool = True) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise MissingSettingError(f"{name} is required and was not given.", names=(name,))
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string, not {type(value).__name__}.")
    return _encodable(name, value).strip()


def _encodable(name: str, value: str) -> str:
    """``value``, if it can be sent: lone surrogates (undecodable bytes from os.environ) cannot."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        message = f"{name} is not valid text: it cannot be encoded as UTF-8."
        raise ConfigurationError(message) from None
    return value


def _check_timeout(timeout: object) -> tuple[float, float]:
    """``timeout=`` as ``(connect, read)`` seconds, both positive and finite."""
    pair = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    if (
        len(pair) != 2
        or not all(isinstance(t, int | float) and not isinstance(t, bool) for t in pair)
        or not all(0 < t < float("inf") for t in pair)
    ):
        raise ConfigurationError(
            "timeout must be a positive number of seconds, or a (connect, read) pair of them;"
            " a token request without a timeout could hang the application."
        )
    return float(pair[0]), float(pair[1])


class AuthOptions(TypedDict, total=False):
    """The keyword arguments of :class:`ClientCredentialsAuth` that every provider adapter takes."""

    cache: TokenCache | None
    leeway: float
    replay_on_401: bool
    only_hosts: Iterable[str] | None
    session: requests.Session | None
    timeout: float | tuple[float, float]
    max_attempts: int
    deadline: float
    wait_timeout: float | None
    allow_insecure_http: bool
    clock: Clock


def _host_matcher(patterns: Iterable[str] | None) -> tuple[frozenset[str], tuple[str, ...]] | None:
    if patterns is None:
        return None
    if isinstance(patterns, str):
        patterns = [patterns]
    exact: set[str] = set()
    suffixes: list[str] = []
    for raw in patterns:
        pattern = raw.strip().lower().rstrip(".")
        if pattern.startswith("*."):
            suffixes.append(pattern[1:])
        elif pattern.startswith("."):
            suffixes.append(pattern)
        elif pattern:
            exact.add(pattern)
    if not exact and not suffixes:
        raise ConfigurationError("only_hosts is empty: the token would never be sent.")
    return frozenset(exact), tuple(suffixes)


def _unreachable(url: str, exc: BaseException) -> TokenEndpointUnreachableError:
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(chain) < 8:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    text = " ".join(str(e) for e in chain)
    retryable = None
    reason = "tls"
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in chain) or (
        "CERTIFICATE_VERIFY_FAILED" in text
    ):
        summary = "TLS verification failed: the certificate is not trusted or not for this host"
        advice = (
            "If the endpoint uses a private CA, give it to the HTTP client that sends the"
            " token request: session.verify='ca.pem' on the requests session passed as"
            " session=, or httpx.Client(verify=ssl_context); REQUESTS_CA_BUNDLE also works"
            " for the default session. Do not turn verification off."
        )
        retryable = False  # asking again gets the same certificate
    elif any(isinstance(e, ssl.SSLError | requests.exceptions.SSLError) for e in chain):
        summary = "the TLS handshake failed"
        advice = "Check that token_url uses the right scheme and port, and any TLS proxy."
    elif any(
        isinstance(e, httpx.TimeoutException | httpcore.TimeoutException | requests.Timeout)
        for e in chain
    ):
        summary = "it did not answer in time"
        advice = "chaveiro will try again after a short pause; timeout= sets the limits."
        reason = "timeout"
    else:
        summary = "no answer"
        reason = type(exc).__name__
        advice = "Check the URL, DNS, proxy settings and network."
    return TokenEndpointUnreachableError(
        f"Could not reach the token endpoint {url}: {summary} ({type(exc).__name__}:"
        f" {excerpt(str(exc), 160)}). {advice}",
        token_url=url,
        retryable=retryable,
        reason=reason,
    )


def _as_is(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """A requests auth that changes nothing: the token request carries its own credentials."""
    return request


def _too_large(url: str) -> InvalidTokenResponseError:
    return InvalidTokenResponseError(
        f"The token endpoint {url} sent more than {MAX_BODY_BYTES} bytes: that is not a token"
        " response. Check token_url.",
        token_url=url,
    )


def _declared_too_large(headers: Mapping[str, str]) -> bool:
    """True if ``Content-Length`` already says the body is over the cap: refuse it unread."""
    length = headers.get("Content-Length") or ""  # both header types ignore case
    return length.strip().isdigit() and int(length) > MAX_BODY_BYTES


def _read_httpx(response: httpx.Response, url: str) -> bytes:
    if _declared_too_large(response.headers):
        raise _too_large(url)
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large(url)
        chunks.append(chunk)
    body = b"".join(chunks)
    response._content = body
    return body


async def _aread_httpx(response: httpx.Response, url: str) -> bytes:
    if _declared_too_large(response.headers):
        raise _too_large(url)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large(url)
        chunks.append(chunk)
    body = b"".join(chunks)
    response._content = body
    return body


def _discover(
    issuer: str, session: requests.Session | None, timeout: float | tuple[float, float]
) -> ProviderMetadata:
    """Fetch and parse the discovery document of ``issuer`` (no redirects, bounded size)."""
    url = discovery_url(issuer)
    client = session if session is not None else requests.Session()
    try:
        with client.get(
            url,
            headers={"Accept": "application/json"},
            timeout=timeout,
            allow_redirects=False,
            stream=True,
        ) as response:
            body = response.raw.read(MAX_BODY_BYTES + 1, decode_content=True)
            status, headers = response.status_code, response.headers
    except (requests.RequestException, OSError, ValueError) as exc:
        raise IssuerUnreachableError(
            f"Could not reach the issuer {issuer} at {url} ({type(exc).__name__}:"
            f" {excerpt(str(exc), 160)}). Check the issuer URL, DNS, proxy settings and network.",
            issuer=issuer,
        ) from None
    finally:
        if session is None:
            client.close()
    return parse_configuration(issuer, status, headers, body)


def _httpx_replayable(request: httpx.Request) -> bool:
    try:
        request.content  # noqa: B018 - raises for a streaming (generator) body
    except httpx.RequestNotRead:
        return False
    return True


def _answered(response: httpx.Response, token: Token) -> bool:
    """True if ``response`` answered a request that carried ``token``.

    After a redirect to another host the final request carries no token: its
    401 says nothing about ours.
    """
    sent: str | None = response.request.headers.get("Authorization")
    return sent == token.authorization


_TRANSPORT_ERRORS = (
    httpx.TransportError,
    httpcore.NetworkError,
    httpcore.TimeoutException,
    httpcore.ProtocolError,
    httpcore.ProxyError,
    OSError,
)


class _Trace:
    """httpcore's ``trace`` request extension: remembers why our token request failed.

    httpx closes the auth flow when the token request fails; a closed async
    generator is not told why (``aclose()`` does not chain the exception), so
    the request itself reports it. Cancellations are not failures and are not
    kept. Events go on to the user's own ``trace``, if their request had one.
    """

    def __init__(self, user_trace: Any) -> None:
        self.error: BaseException | None = None
        self.answer: tuple[int, dict[str, str]] | None = None
        """Status and headers of the answer, once they arrived."""
        self._user_trace = user_trace

    def _record(self, event: str, info: Mapping[str, Any]) -> None:
        error = info.get("exception")
        if self.error is None and event.endswith(".failed") and isinstance(error, Exception):
            self.error = error
        if event.endswith("receive_response_headers.complete"):
            answer = info.get("return_value")
            # HTTP/1.1: (version, status, reason, headers); HTTP/2: (status, headers)
            if isinstance(answer, tuple) and len(answer) in (2, 4):
                status, headers = answer[-3 if len(answer) == 4 else 0], answer[-1]
                with contextlib.suppress(TypeError, ValueError, AttributeError):
                    self.answer = (
                        int(status),
                        {k.decode("latin-1"): v.decode("latin-1") for k, v in headers},
                    )

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        self._record(event, info)
        if self._user_trace is not None:
            self._user_trace(event, info)


class _AsyncTrace(_Trace):
    async def __call__(self, event: str, info: dict[str, Any]) -> None:  # type: ignore[override]
        self._record(event, info)
        if self._user_trace is not None:
            await self._user_trace(event, info)


def _closing_cause(exit_: GeneratorExit, request: httpx.Request) -> BaseException | None:
    """The exception that made httpx close the auth flow while ``request`` was out.

    A sync flow sees it as the context of its ``GeneratorExit`` (past the outer
    flow's own ``GeneratorExit``); an async flow learns it from the request's trace.
    """
    cause = exit_.__context__
    while isinstance(cause, GeneratorExit):
        cause = cause.__context__
    if cause is None:
        trace = request.extensions.get("trace")
        cause = trace.error if isinstance(trace, _Trace) else None
    return cause


def _closed_by(
    exit_: GeneratorExit, request: httpx.Request, dialect: Dialect, url: str, now: float
) -> TokenError | None:
    """Why httpx closed our flow while a token request was out, as our error.

    ``None`` when it was not the token request's fault (cancellation, say).
    """
    cause = _closing_cause(exit_, request)
    if isinstance(cause, _TRANSPORT_ERRORS):
        return _unreachable(url, cause)
    status: int | None = None
    headers: Mapping[str, str] = {}
    body = b""
    if isinstance(cause, httpx.HTTPStatusError):  # a user's raise_for_status event hook
        response = cause.response
        status, headers = response.status_code, response.headers
        with contextlib.suppress(httpx.ResponseNotRead):
            body = response.content
    elif cause is not None or not isinstance(request.extensions.get("trace"), _Trace):
        return None
    elif request.extensions["trace"].answer is not None:  # async: a hook raised after the answer
        status, headers = request.extensions["trace"].answer
    if status is None or 200 <= status < 300:
        return None
    try:
        parse_response(dialect, url, status, headers, body, now)
    except TokenError as exc:
        return exc
    return None


class ClientCredentialsAuth(requests.auth.AuthBase, httpx.Auth):
    """OAuth 2.0 client credentials (RFC 6749 §4.4) for requests and httpx.

    Use one object everywhere — ``session.auth = auth``, ``httpx.Client(auth=auth)``,
    ``httpx.AsyncClient(auth=auth)``. The token is fetched on first use, shared by
    every thread, task and auth object with the same identity, renewed ``leeway``
    seconds before it expires (never earlier than half its lifetime), and renewed
    with the request replayed once when the API answers 401.
    """

    dialect: ClassVar[Dialect] = OAUTH2
    requires_request_body = False
    requires_response_body = False

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
        cache: TokenCache | None = None,
        leeway: float = DEFAULT_LEEWAY,
        replay_on_401: bool = True,
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
        cid = _clean("client_id", client_id)
        assert cid is not None
        secret = _clean("client_secret", client_secret, required=private_key is None)
        if isinstance(private_key, str):
            private_key = _encodable("private_key", private_key).encode()
        given: dict[object, object] = dict((extra_params or {}).items())
        given.update((k, v) for k, v in (("audience", audience), ("resource", resource)) if v)
        extra: dict[str, str] = {}
        for name, value in given.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise ConfigurationError(f"extra parameter {name!r} must map a string to a string.")
            extra[_encodable("extra parameter name", name)] = _encodable(name, value)
        if leeway < 0 or max_attempts < 1 or deadline <= 0:
            raise ConfigurationError(
                "leeway must be >= 0, max_attempts >= 1 and deadline > 0 (seconds)."
            )
        if wait_timeout is not None and not 0 < wait_timeout < float("inf"):
            raise ConfigurationError("wait_timeout must be a positive number of seconds, or None.")
        connect_timeout, read_timeout = _check_timeout(timeout)
        self._settings = ClientSettings(
            token_url=url,
            client_id=cid,
            client_secret=secret,
            auth_method=auth_method,
            scope=_encodable("scope", normalize_scope(scope) or "") or None,
            extra=tuple(sorted(extra.items())),
            private_key=private_key,
            signing_alg=signing_alg,
            key_id=key_id,
        )
        identity = Identity.of(url, cid, secret or private_key or b"", self._settings.scope, extra)
        self._cache = cache if cache is not None else default_cache()
        self._manager = TokenManager(
            self.dialect,
            self._settings,
            identity,
            self._cache,
            clock=clock,
            policy=Policy(
                leeway=float(leeway),
                attempts=max_attempts,
                deadline=float(deadline),
                wait_timeout=None if wait_timeout is None else float(wait_timeout),
            ),
            use_refresh_token=use_refresh_token,
        )
        self.replay_on_401 = replay_on_401
        self._hosts = _host_matcher(only_hosts)
        self._session = session
        self._session_pid = None if session is not None else 0
        self._timeout = (connect_timeout, read_timeout)
        self._on_response_hook = self._on_response

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
    def stats(self) -> Stats:
        """A snapshot of this identity's counters in this process (for metrics)."""
        return self._manager.slot.stats.copy()

    # ---- construction from the environment -------------------------------------------------

    env_prefix: ClassVar[str] = "OAUTH"
    env_fields: ClassVar[tuple[tuple[str, str, bool | str], ...]] = (
        ("token_url", "TOKEN_URL", True),
        ("client_id", "CLIENT_ID", True),
        ("client_secret", "CLIENT_SECRET", True),
        ("scope", "SCOPE", False),
    )
    """``(argument, variable suffix, required)`` read by :meth:`from_env`.

    ``required`` may also name another argument: the variable is then required
    unless that argument is given (as a keyword or through its own variable).
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

        A missing required variable raises :class:`MissingSettingError` naming it.
        """
        env = os.environ if environ is None else environ
        prefix = cls.env_prefix if prefix is None else prefix
        variables = {argument: f"{prefix}_{suffix}" for argument, suffix, _ in cls.env_fields}
        for argument, name in variables.items():
            value = env.get(name, "").strip()
            if value and argument not in kwargs:
                kwargs[argument] = value
        missing: list[str] = []
        for argument, _, required in cls.env_fields:
            if argument in kwargs or required is False:
                continue
            if required is True:
                missing.append(variables[argument])
            elif required not in kwargs:
                missing.append(f"{variables[argument]} (or {variables.get(required, required)})")
        if missing:
            plural = len(missing) > 1
            raise MissingSettingError(
                f"{cls.__name__}.from_env() needs the environment variable{'s' if plural else ''}"
                f" {', '.join(missing)}; set {'them' if plural else 'it'} or pass the value"
                f"{'s' if plural else ''} as argument{'s' if plural else ''}.",
                names=tuple(name.partition(" ")[0] for name in missing),
            )
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
        session: requests.Session | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        allow_insecure_http: bool = False,
        **kwargs: Any,
    ) -> Self:
        """Build from the issuer's OpenID Connect discovery document.

        ``GET <issuer>/.well-known/openid-configuration`` (HTTPS, through
        ``session`` if given) gives the token endpoint and the client
        authentication methods it accepts: ``private_key_jwt`` when
        ``private_key`` is given, else the first of ``client_secret_basic``,
        ``client_secret_post`` and ``client_secret_jwt`` that it lists
        (``auth_method=`` overrides the choice). Each issuer is discovered once
        per process. Other keyword arguments are those of the constructor.
        """
        if not str(issuer or "").strip():  # None from os.environ.get, say
            raise MissingSettingError(
                "issuer is required: the provider's issuer URL, e.g. https://idp.example.com.",
                names=("issuer",),
            )
        base = check_url(issuer, allow_insecure_http=allow_insecure_http, what="issuer")
        base = base.rstrip("/")
        metadata = discovered.get(base, lambda: _discover(base, session, timeout))
        token_url = check_url(
            metadata.token_endpoint, allow_insecure_http=allow_insecure_http, what="token_endpoint"
        )
        method = auth_method or choose_auth_method(metadata, private_key=private_key is not None)
        return cls(
            token_url=token_url,
            client_id=client_id,
            client_secret=client_secret,
            auth_method=method,
            private_key=private_key,
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

    async def aget_token(self, *, client: httpx.AsyncClient | None = None) -> Token:
        """The current token, fetched or renewed if needed (asyncio or trio).

        The token request is sent with ``client`` when given (its TLS settings,
        proxies and transport apply), else with a short-lived client of our own.
        """
        token = self._manager.fresh_token()
        if token is not None:
            return token
        async with AsyncExitStack() as stack:
            if client is None:
                client = await stack.enter_async_context(httpx.AsyncClient())
            driver = run_async(self._manager.flow(None), self._cache)
            stack.push_async_callback(driver.aclose)
            item = await driver.asend(None)
            while isinstance(item, Send):
                try:
                    raw = await self._asend_httpx(client, item)
                except TokenError as exc:
                    item = await driver.athrow(exc)
                else:
                    item = await driver.asend(raw)
        assert isinstance(item, Token)
        return item

    # ---- requests ---------------------------------------------------------------------------

    def _applies(self, host: str | None) -> bool:
        hosts = self._hosts
        if hosts is None:
            return True
        host = (host or "").lower().rstrip(".")
        return host in hosts[0] or any(host.endswith(suffix) for suffix in hosts[1])

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        if self._hosts is not None and not self._applies(urlsplit(r.url or "").hostname):
            return r
        token = self._manager.fresh_token() or self._obtain_sync(None, background=True)
        r.headers["Authorization"] = token.authorization
        if self.replay_on_401:
            r.hooks["response"].append(self._on_response_hook)
        return r

    def _requests_session(self) -> requests.Session:
        # Our own session is remade in a fork()ed child: pooled connections are never shared.
        if self._session_pid is not None and self._session_pid != os.getpid():
            if self._session is not None:
                self._session.close()  # closes the child's copies only
            self._session, self._session_pid = requests.Session(), os.getpid()
        assert self._session is not None
        return self._session

    def _obtain_sync(self, stale: str | None, *, background: bool = False) -> Token:
        """Run the token flow with blocking requests calls.

        With ``background``, a still-valid token that is due for renewal is
        returned at once while a daemon thread renews it.
        """
        driver = run_sync(self._manager.flow(stale, background=background), self._cache)
        handed_over = False
        try:
            item = next(driver)
            while True:
                if isinstance(item, Send):
                    item = self._send_to_flow(driver, item)
                elif isinstance(item, Detach):
                    handed_over = self._renew_in_background(driver)
                    if handed_over:
                        return item.token
                    item = driver.send(None)  # no thread to be had: renew right here
                else:
                    return item
        finally:
            if not handed_over:
                driver.close()

    def _send_to_flow(
        self, driver: Generator[Send | Detach | Token, Any, None], item: Send
    ) -> Send | Detach | Token:
        try:
            raw = self._send_requests(item)
        except TokenError as exc:
            return driver.throw(exc)
        return driver.send(raw)

    def _renew_in_background(self, driver: Generator[Send | Detach | Token, Any, None]) -> bool:
        """Drive the rest of ``driver`` in a daemon thread; False if none could be started."""

        def renew() -> None:
            try:
                item = driver.send(None)
                while isinstance(item, Send):
                    item = self._send_to_flow(driver, item)
            except Exception:  # a bug: the flow itself logs every token failure
                logger.exception("token renewal in the background failed unexpectedly")
            finally:
                driver.close()

        thread = threading.Thread(target=renew, name=RENEWAL_THREAD, daemon=True)
        try:
            thread.start()
        except RuntimeError:  # interpreter shutting down, or out of threads
            return False
        return True

    def _send_requests(self, send: Send) -> RawResponse:
        request = send.request
        session = self._requests_session()
        connect, read = self._timeout
        try:
            response = session.request(
                request.method,
                request.url,
                headers=dict(request.headers),
                data=request.body,
                timeout=(min(connect, send.timeout), min(read, send.timeout)),
                allow_redirects=False,
                stream=True,
                auth=_as_is,  # not session.auth (it may be us) nor .netrc: our headers stand
                verify=session.verify,  # else REQUESTS_CA_BUNDLE would override it
            )
        except requests.HTTPError as exc:  # a raise_for_status hook on the session
            if exc.response is None:
                raise _unreachable(request.url, exc) from None
            response = exc.response
        except requests.RequestException as exc:
            raise _unreachable(request.url, exc) from None
        with response:
            if _declared_too_large(response.headers):
                raise _too_large(request.url)
            try:
                body = response.raw.read(MAX_BODY_BYTES + 1, decode_content=True)
            except (requests.RequestException, OSError, ValueError) as exc:
                raise _unreachable(request.url, exc) from None
            if len(body) > MAX_BODY_BYTES:
                raise _too_large(request.url)
            return RawResponse(response.status_code, dict(response.headers), body)

    def _on_response(self, r: requests.Response, **kwargs: Any) -> requests.Response:
        if r.status_code != 401:
            return r
        request = r.request
        sent = request.headers.get("Authorization")
        if not isinstance(sent, str) or getattr(request, "_chaveiro_replay", False):
            return r
        body: object = request.body
        rewind = isinstance(getattr(request, "_body_position", None), int)
        if body is not None and not isinstance(body, bytes | str) and not rewind:
            logger.info("API answered 401; the request body cannot be replayed")
            return r
        r.content  # noqa: B018 - consume the 401 first: its connection goes back to the pool
        r.close()
        stale = sent.partition(" ")[2]
        token = self._obtain_sync(stale)
        if token.access_token == stale:
            return r
        retry = request.copy()
        retry.headers["Authorization"] = token.authorization
        retry._chaveiro_replay = True  # type: ignore[attr-defined]
        if rewind:
            requests.utils.rewind_body(retry)
        self._replayed(token)
        replayed = r.connection.send(retry, **kwargs)
        replayed.history.append(r)
        replayed.request = retry
        return replayed

    def _replayed(self, token: Token) -> None:
        self._manager.replayed(token)

    # ---- httpx ------------------------------------------------------------------------------

    def _to_httpx(
        self, send: Send, user_request: httpx.Request | None, *, asynchronous: bool = False
    ) -> httpx.Request:
        """The token request for httpx, with the user's timeouts cut to the time left."""
        request = send.request
        token_request = httpx.Request(
            request.method, request.url, headers=list(request.headers), content=request.body
        )
        connect, read = self._timeout
        mine = {"connect": connect, "read": read, "write": read, "pool": connect}
        theirs = user_request.extensions.get("timeout") if user_request is not None else None
        limits = theirs if isinstance(theirs, dict) else mine
        token_request.extensions["timeout"] = {
            phase: send.timeout if limits.get(phase) is None else min(limits[phase], send.timeout)
            for phase in mine
        }
        user_trace = user_request.extensions.get("trace") if user_request is not None else None
        tracer = _AsyncTrace if asynchronous else _Trace
        token_request.extensions["trace"] = tracer(user_trace)
        return token_request

    async def _asend_httpx(self, client: httpx.AsyncClient, send: Send) -> RawResponse:
        url = send.request.url
        try:
            request = self._to_httpx(send, None, asynchronous=True)
            response = await client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise _unreachable(url, exc) from None
        try:
            body = await _aread_httpx(response, url)
        except httpx.TransportError as exc:
            raise _unreachable(url, exc) from None
        finally:
            await response.aclose()
        return RawResponse(response.status_code, response.headers, body)

    def _httpx_token(
        self, user_request: httpx.Request, stale: str | None
    ) -> Generator[httpx.Request, httpx.Response, Token]:
        """Obtain a token, yielding token requests through the user's own client."""
        driver = run_sync(self._manager.flow(stale), self._cache)
        url = self._settings.token_url
        try:
            item = next(driver)
            while isinstance(item, Send):
                token_request = self._to_httpx(item, user_request)
                try:
                    response = yield token_request
                except GeneratorExit as exit_:
                    now = self._manager.clock()
                    error = _closed_by(exit_, token_request, self.dialect, url, now)
                    if error is None:
                        raise
                    cause = _closing_cause(exit_, token_request)
                    try:
                        driver.throw(CannotRetry(error))  # the flow records the failure
                    except TokenError as final:
                        raise final from cause
                    raise error from cause
                try:
                    raw = RawResponse(
                        response.status_code, response.headers, _read_httpx(response, url)
                    )
                except (TokenError, httpx.TransportError) as exc:
                    error = exc if isinstance(exc, TokenError) else _unreachable(url, exc)
                    item = driver.throw(error)
                else:
                    item = driver.send(raw)
        finally:
            driver.close()
        assert isinstance(item, Token)
        return item

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        if self._hosts is not None and not self._applies(request.url.host):
            yield request
            return
        token = self._manager.fresh_token()
        if token is None:
            token = yield from self._httpx_token(request, None)
        request.headers["Authorization"] = token.authorization
        response = yield request
        if (
            response.status_code != 401
            or not self.replay_on_401
            or not _answered(response, token)
            or not _httpx_replayable(request)
        ):
            return
        response.read()  # frees its connection while we wait for a token
        renewed = yield from self._httpx_token(request, token.access_token)
        if renewed.access_token == token.access_token:
            return
        self._replayed(renewed)
        request.headers["Authorization"] = renewed.authorization
        yield request

    async def _ahttpx_token(
        self, user_request: httpx.Request, stale: str | None
    ) -> AsyncGenerator[httpx.Request | Token, httpx.Response | None]:
        """:meth:`_httpx_token` for async clients; the last item yielded is the token."""
        driver = run_async(self._manager.flow(stale), self._cache)
        url = self._settings.token_url
        try:
            item = await driver.asend(None)
            while isinstance(item, Send):
                token_request = self._to_httpx(item, user_request, asynchronous=True)
                try:
                    response = yield token_request
                except GeneratorExit as exit_:
                    now = self._manager.clock()
                    error = _closed_by(exit_, token_request, self.dialect, url, now)
                    if error is None:
                        raise
                    cause = _closing_cause(exit_, token_request)
                    try:
                        await driver.athrow(CannotRetry(error))  # the flow records the failure
                    except TokenError as final:
                        raise final from cause
                    raise error from cause
                assert response is not None
                try:
                    raw = RawResponse(
                        response.status_code, response.headers, await _aread_httpx(response, url)
                    )
                except (TokenError, httpx.TransportError) as exc:
                    error = exc if isinstance(exc, TokenError) else _unreachable(url, exc)
                    item = await driver.athrow(error)
                else:
                    item = await driver.asend(raw)
        finally:
            await driver.aclose()
        assert isinstance(item, Token)
        yield item

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self._hosts is not None and not self._applies(request.url.host):
            yield request
            return
        token = self._manager.fresh_token()
        stale = None
        for _ in range(2):
            if token is None:
                obtain = self._ahttpx_token(request, stale)
                try:
                    item = await obtain.asend(None)
                    while isinstance(item, httpx.Request):
                        item = await obtain.asend((yield item))
                finally:
                    await obtain.aclose()
                if item.access_token == stale:
                    return
                if stale is not None:
                    self._replayed(item)
                token = item
            request.headers["Authorization"] = token.authorization
            response = yield request
            if response.status_code != 401 or not self.replay_on_401 or stale is not None:
                return
            if not _answered(response, token):
                return
            if not _httpx_replayable(request):
                return
            await response.aread()  # frees its connection while we wait for a token
            stale, token = token.access_token, None
