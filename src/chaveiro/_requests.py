"""The requests room: an ``AuthBase`` that attaches the token and replays a refused request once.

Token requests are sent with blocking requests calls, through the ``session=``
the user gave or a session of our own (closed by :meth:`RequestsAuth.close`
or when the auth object goes away). A renewal of a still-valid token runs in a
daemon thread, so no API request waits for it.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import weakref
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, cast, overload
from urllib.parse import urlsplit

import requests
import requests.adapters
import sniffio
from requests.structures import CaseInsensitiveDict

from chaveiro._certs import ClientTLS
from chaveiro._dialect import MAX_BODY_BYTES
from chaveiro._discovery import ProviderMetadata, discovery_url, parse_configuration
from chaveiro._errors import ConfigurationError, IssuerUnreachableError, TokenError
from chaveiro._flight import RENEWAL_THREAD
from chaveiro._requests_dpop import ready_next_hop
from chaveiro._steps import Detach, RawResponse, Send, run_sync
from chaveiro._token import Token
from chaveiro._transport import RENEW, AuthCore, declared_too_large, too_large, unreachable

if TYPE_CHECKING:
    from aiohttp import ClientHandlerType, ClientRequest, ClientResponse

__all__ = ["RequestsAuth", "ResponseHook", "discover"]

logger = logging.getLogger("chaveiro")

_Driver = Generator[Send | Detach | Token, Any, None]


def _as_is(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """A requests auth that changes nothing: the token request carries its own credentials."""
    return request


class _ClientCertAdapter(requests.adapters.HTTPAdapter):
    """HTTPS with an :class:`ssl.SSLContext` that presents the client certificate.

    The context verifies the server (``client_tls(verify=...)``) and holds the
    key in memory: requests' own ``cert=`` would need the key in a clear file.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:  # requests < 2.32
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        proxy_kwargs["ssl_context"] = self._context
        return super().proxy_manager_for(proxy, **proxy_kwargs)

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: bool | str, cert: Any = None
    ) -> Any:  # requests >= 2.32
        host, pool = super().build_connection_pool_key_attributes(request, verify, cert)
        options = cast("dict[str, Any]", pool)
        for name in ("ca_certs", "ca_cert_dir", "cert_file", "key_file"):
            options.pop(name, None)
        options.update(ssl_context=self._context, cert_reqs="CERT_REQUIRED")
        return host, pool

    def cert_verify(self, conn: Any, url: str, verify: bool | str, cert: Any) -> None:
        # The context decides what to trust; bundles loaded here would widen it.
        conn.cert_reqs, conn.ca_certs, conn.ca_cert_dir = "CERT_REQUIRED", None, None


def _new_session(tls: ClientTLS | None) -> requests.Session:
    """A session for chaveiro's own requests: with ``tls``, it presents the certificate and
    trusts what the certificate's context trusts (not ``REQUESTS_CA_BUNDLE``)."""
    session = requests.Session()
    if tls is not None:
        session.mount("https://", _ClientCertAdapter(tls.ssl_context))
    return session


class _OwnSession:
    """The session chaveiro makes for its token requests when none was given.

    Made at first use, remade in a ``fork()``ed child (pooled connections are
    never shared between processes), closed by :meth:`close` or when its owner
    is garbage-collected.
    """

    __slots__ = ("__weakref__", "_finalizer", "_pid", "_session", "_tls")

    def __init__(self, tls: ClientTLS | None = None) -> None:
        self._tls = tls
        self._session: requests.Session | None = None
        self._pid = 0
        self._finalizer: weakref.finalize[[], _OwnSession] | None = None

    def get(self) -> requests.Session:
        session = self._session
        if session is None or self._pid != os.getpid():
            self.close()  # in a child: closes this process's copies of the parent's sockets
            session = self._session = _new_session(self._tls)
            self._pid = os.getpid()
            self._finalizer = weakref.finalize(self, session.close)
        return session

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._session = self._finalizer = None


class RequestsAuth(AuthCore, requests.auth.AuthBase):
    """``session.auth = auth``: the token (and its DPoP proof) on every request, one replay
    when it is refused."""

    _session: requests.Session | None
    _own_session: _OwnSession
    _on_response_hook: Any
    _middleware: Callable[[Any, Any], Any]
    """The aiohttp middleware (:mod:`chaveiro._aiohttp`), which shares ``__call__``."""

    @overload
    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest: ...

    @overload
    def __call__(
        self, r: ClientRequest, handler: ClientHandlerType
    ) -> Coroutine[Any, Any, ClientResponse]: ...

    def __call__(self, r: Any, handler: Any = None) -> Any:
        """requests calls ``auth(prepared_request)``; aiohttp calls ``auth(request, handler)``."""
        if handler is not None:
            return self._middleware(r, handler)
        if self._hosts is not None and not self._applies(urlsplit(r.url or "").hostname):
            return r
        token = self._manager.fresh_token()
        if token is None:
            _refuse_async_niquests(r)
            token = self._obtain_sync(None, background=True)
        proof = None if self._dpop is None else self._proof(r.method or "GET", r.url or "", token)
        headers = r.headers
        if type(headers) is CaseInsensitiveDict:
            # What its __setitem__ does, without the call: this is every request's hot path.
            store = headers._store  # type: ignore[attr-defined]
            store["authorization"] = ("Authorization", token.authorization)
            if proof is not None:
                store["dpop"] = ("DPoP", proof)
        else:  # not a requests request (niquests, a subclass)
            _refuse_async_niquests(r)
            headers["Authorization"] = token.authorization
            if proof is not None:
                headers["DPoP"] = proof
        if proof is not None or self.replay_on_401:  # a DPoP answer's nonce is always read
            r.hooks["response"].append(self._on_response_hook)
        return r

    def close(self) -> None:
        """Close the session chaveiro made for its own token requests (a given one stays open).

        The auth object stays usable: a later token request opens a new session.
        """
        self._own_session.close()

    def _requests_session(self) -> requests.Session:
        return self._session if self._session is not None else self._own_session.get()

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

    def _send_to_flow(self, driver: _Driver, item: Send) -> Send | Detach | Token:
        try:
            raw = self._send_requests(item)
        except TokenError as exc:
            return driver.throw(exc)
        return driver.send(raw)

    def _renew_in_background(self, driver: _Driver) -> bool:
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

    async def _send_in_thread(self, send: Send) -> RawResponse:
        """:meth:`_send_requests` in a worker thread, awaited (asyncio or trio)."""
        from anyio import to_thread  # noqa: PLC0415 - only for aget_token() without a client

        return await to_thread.run_sync(self._send_requests, send, abandon_on_cancel=True)

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
                allow_redirects=False,  # credentials go to token_url and nowhere else
                stream=True,
                auth=_as_is,  # not session.auth (it may be us) nor .netrc: our headers stand
                verify=session.verify,  # else REQUESTS_CA_BUNDLE would override it
            )
        except requests.HTTPError as exc:  # a raise_for_status hook on the session
            if exc.response is None:
                raise unreachable(request.url, exc) from None
            response = exc.response
        except requests.RequestException as exc:
            raise unreachable(request.url, exc) from None
        with response:
            if declared_too_large(response.headers):
                raise too_large(request.url)
            try:
                body = response.raw.read(MAX_BODY_BYTES + 1, decode_content=True)
            except (requests.RequestException, OSError, ValueError) as exc:
                raise unreachable(request.url, exc) from None
            if len(body) > MAX_BODY_BYTES:
                raise too_large(request.url)
            return RawResponse(response.status_code, dict(response.headers), body)

    def _on_response(self, r: requests.Response, **kwargs: Any) -> requests.Response:
        """Read an API answer; send the request once more when it calls for it.

        A DPoP nonce challenge is answered by one resend with a new proof, a
        refused token by one renewal and replay: at most one of each, so the
        request is sent at most three times. A redirect of a DPoP request gets
        its next hop ready (:func:`~chaveiro._requests_dpop.ready_next_hop`).
        """
        request = r.request
        sent = request.headers.get("Authorization")
        if not isinstance(sent, str) or getattr(request, "_chaveiro_replay", False):
            return r
        proof = request.headers.get("DPoP") if self._dpop is not None else None
        if proof is not None and r.is_redirect:
            self._after(request.url or "", r.status_code, r.headers, proof)  # its nonce
            ready_next_hop(self, r)
            return r
        nonce_retried = renewed = False
        while True:
            step = self._after(
                request.url or "",
                r.status_code,
                r.headers,
                proof,
                nonce_retried=nonce_retried,
                renewed=renewed,
            )
            if step is None:
                return r
            body: object = request.body
            rewind = isinstance(getattr(request, "_body_position", None), int)
            if body is not None and not isinstance(body, bytes | str) and not rewind:
                logger.info("API answered %d; the request body cannot be replayed", r.status_code)
                return r
            r.content  # noqa: B018 - consume the answer first: its connection goes back to the pool
            r.close()
            if step == RENEW:
                stale = sent.partition(" ")[2]
                token = self._obtain_sync(stale)
                if token.access_token == stale:
                    return r
                renewed, sent = True, token.authorization
                self._replayed(token)
            else:
                nonce_retried = True
            retry = request.copy()
            retry.headers["Authorization"] = sent
            proof = self._reproof(retry.method or "GET", retry.url or "", sent)
            if proof is not None:
                retry.headers["DPoP"] = proof
            retry._chaveiro_replay = True  # type: ignore[attr-defined]
            if rewind:
                requests.utils.rewind_body(retry)
            replayed = r.connection.send(retry, **kwargs)
            replayed.history = [*r.history, r]
            replayed.request = retry
            r, request = replayed, retry


class ResponseHook:
    """requests' response hook, holding its auth object weakly.

    A bound method kept on the object would be a reference cycle: a dropped auth
    object would wait for the cycle collector, and keep its identity's state held
    until then. Without one it goes (and lets go) at once.
    """

    __slots__ = ("_auth",)

    def __init__(self, auth: RequestsAuth) -> None:
        self._auth = weakref.ref(auth)

    def __call__(self, r: requests.Response, **kwargs: Any) -> requests.Response:
        auth = self._auth()
        return r if auth is None else auth._on_response(r, **kwargs)


def _refuse_async_niquests(request: Any) -> None:
    """niquests' AsyncSession calls a requests-style auth synchronously, on its event loop.

    A token request from there would block the loop, and a replay would hand it a
    coroutine where it expects a response: refuse at once, saying what works.
    """
    if not type(request).__module__.startswith("niquests"):
        return
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return  # niquests.Session, outside any event loop: the requests flow works as is
    raise ConfigurationError(
        f"chaveiro cannot authenticate niquests requests made inside a running {library} event"
        " loop (niquests.AsyncSession): it would block the loop for every token request. Use"
        " httpx.AsyncClient(auth=auth) or aiohttp.ClientSession(middlewares=(auth,)), or"
        " niquests.Session outside the event loop (asyncio.to_thread)."
    )


def discover(
    issuer: str,
    session: requests.Session | None,
    timeout: float | tuple[float, float],
    tls: ClientTLS | None = None,
) -> ProviderMetadata:
    """Fetch and parse the discovery document of ``issuer`` (no redirects, bounded size).

    Sent as the token requests will be: through ``session`` with its own ``verify``
    (which wins over ``REQUESTS_CA_BUNDLE``), else through a session of our own that
    presents the client certificate ``tls`` and trusts what it trusts.
    """
    url = discovery_url(issuer)
    client = session if session is not None else _new_session(tls)
    try:
        with client.get(
            url,
            headers={"Accept": "application/json"},
            timeout=timeout,
            allow_redirects=False,
            stream=True,
            verify=client.verify,  # else REQUESTS_CA_BUNDLE would override it
        ) as response:
            body = response.raw.read(MAX_BODY_BYTES + 1, decode_content=True)
            status, headers = response.status_code, response.headers
    except (requests.RequestException, OSError, ValueError) as exc:
        found = unreachable(url, exc, what=f"the issuer {issuer} at")
        raise IssuerUnreachableError(str(found), issuer=issuer) from None
    finally:
        if session is None:
            client.close()
    return parse_configuration(issuer, status, headers, body)
