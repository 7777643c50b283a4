"""A fake OAuth 2.0 token provider and protected API, served on 127.0.0.1 only."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs

from chaveiro.testing._dialects import BITIZE_FORMATS, ROUTES, BitizeExpiryFormat, Dialect
from chaveiro.testing._dpop_server import DPoPServer
from chaveiro.testing._federation import federation
from chaveiro.testing._http import HTTPServer
from chaveiro.testing._knobs import (
    Failure,
    FailureQueue,
    Knob,
    Stat,
    failure_response,
    non_negative,
)
from chaveiro.testing._registry import Client, TokenRegistry, public_key
from chaveiro.testing._tls import ClientCertificate, PrivateCA, cert_rule
from chaveiro.testing._wire import (
    DialectError,
    RecordedRequest,
    Response,
    fields,
    json_response,
)

__all__ = ["DIALECTS", "FakeTokenServer"]

DIALECTS = tuple(ROUTES)
_SECRET_METHODS = [
    "client_secret_basic",
    "client_secret_post",
    "client_secret_jwt",
    "private_key_jwt",
]
_TLS_METHODS = ["tls_client_auth", "self_signed_tls_client_auth"]


class FakeTokenServer(TokenRegistry, DPoPServer):
    """Fake token provider + protected API on 127.0.0.1; use it as a context manager.

    With ``mtls=True`` it serves HTTPS with certificates from a private CA of its
    own and requires a client certificate on every connection, like the Pix APIs
    of Brazilian banks: clients may authenticate by certificate alone
    (``tls_client_auth``, ``self_signed_tls_client_auth``), and every token is
    bound to the certificate it was obtained with (RFC 8705 §3), so the API
    answers 401 to a token presented with another certificate. ``ca_file`` is
    what the client must trust; ``issue_client_cert()`` makes client certificates.

    With ``dpop=True`` it supports DPoP (RFC 9449) at the generic and StackSpot
    (Keycloak) token endpoints and at the API, checking every proof strictly;
    ``dpop_nonce=True`` makes it demand its nonce in every proof (§8, §9).
    """

    lifetime = Knob[float](non_negative)
    """Seconds new access tokens live (``expires_in`` and the JWT ``exp``)."""
    token_delay = Knob[float](non_negative)
    """Seconds every token request waits before being answered."""
    refresh_lifetime = Knob[float | None](lambda v: v is None or v >= 0)
    """Seconds new refresh tokens live; None means ``lifetime + 1``."""
    bitize_expiry_format = Knob[BitizeExpiryFormat](lambda v: v in BITIZE_FORMATS)
    """How Bitize writes expiry times."""
    auth_methods_supported = Knob[list[str]]()
    """Client auth methods advertised in discovery and accepted by the oauth dialect."""
    bind_tokens = Knob[bool]()
    """Bind tokens to the client certificate they were obtained with (on by default)."""
    strict_assertions = Knob[bool]()
    """Accept only RFC 10070 client assertions: ``typ: client-authentication+jwt`` and
    ``aud`` the issuer, as one string (off by default: the token endpoint URL is
    accepted too, as most servers still do)."""
    token_requests = Stat[int]()
    """Token endpoint hits, failed ones included."""
    token_requests_by_dialect = Stat[dict[str, int]]()
    """Token endpoint hits per dialect (keys: ``DIALECTS``)."""
    grants = Stat[list[str]]()
    """``grant_type`` of every successful issue, in order."""
    api_requests = Stat[int]()
    """Requests to ``/api/...``."""
    api_unauthorized = Stat[int]()
    """API requests answered 401."""
    discovery_requests = Stat[int]()
    """Requests to the OIDC discovery document."""
    handshake_failures = Stat[int]()
    """TLS handshakes that failed (no client certificate, an untrusted one...)."""
    issued_tokens = Stat[list[str]]()
    """Every access and refresh token ever issued."""
    token_request_log = Stat[list[RecordedRequest]]()
    """Every token endpoint request."""
    api_request_log = Stat[list[RecordedRequest]]()
    """Every API request."""

    def __init__(
        self,
        *,
        lifetime: float = 3600.0,
        ssl_context: ssl.SSLContext | None = None,
        mtls: bool = False,
        token_delay: float = 0.0,
        bitize_expiry_format: BitizeExpiryFormat = "iso_z",
        refresh_lifetime: float | None = None,
        dpop: bool = False,
        dpop_nonce: bool = False,
    ) -> None:
        if mtls and ssl_context is not None:
            raise ValueError("mtls=True makes its own ssl_context; pass one or the other")
        self._lock = threading.Lock()
        self._ca = PrivateCA() if mtls else None
        self._ssl_context = self._ca.server_context() if self._ca is not None else ssl_context
        self._ca_dir: str | None = None
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._url = ""
        self._failures = FailureQueue()
        self._init_registry()
        self.lifetime, self.token_delay = lifetime, token_delay
        self.bitize_expiry_format, self.refresh_lifetime = bitize_expiry_format, refresh_lifetime
        self.auth_methods_supported = _SECRET_METHODS + (_TLS_METHODS if mtls else [])
        self.bind_tokens = True
        self.strict_assertions = False
        self._init_dpop(dpop, dpop_nonce)
        self.reset_counters()

    def start(self) -> FakeTokenServer:
        """Bind 127.0.0.1 on a free port and serve in a daemon thread."""
        if self._httpd is not None:
            raise RuntimeError("FakeTokenServer is already running")
        self._httpd = HTTPServer(self, self._ssl_context)
        scheme = "https" if self._ssl_context is not None else "http"
        self._url = f"{scheme}://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.01,), name=self._url, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut every open connection."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
            httpd.close_connections()
        if self._thread is not None:
            self._thread.join()
        ca_dir, self._ca_dir = self._ca_dir, None
        if ca_dir is not None:
            shutil.rmtree(ca_dir, ignore_errors=True)

    def __enter__(self) -> FakeTokenServer:
        return self.start()

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https`` with an ssl_context or mtls)."""
        if not self._url:
            raise RuntimeError("FakeTokenServer is not started")
        return self._url

    @property
    def issuer(self) -> str:
        """OIDC issuer; discovery lives at ``issuer + '/.well-known/openid-configuration'``."""
        return self.url

    @property
    def oauth_token_url(self) -> str:
        """Generic RFC 6749 token endpoint (every client authentication method; mTLS too)."""
        return self.url + "/oauth2/token"

    def stackspot_token_url(self, realm: str = "acme") -> str:
        """StackSpot (Keycloak) token endpoint of ``realm``."""
        return f"{self.url}/{realm}/oidc/oauth/token"

    def entra_token_url(self, tenant: str = "contoso") -> str:
        """Microsoft Entra ID's token endpoint of ``tenant`` (the generic dialect); with
        ``AZURE_AUTHORITY_HOST`` set to :attr:`url`, Azure workload identity reaches it."""
        return f"{self.url}/{tenant}/oauth2/v2.0/token"

    @property
    def cidadao_token_url(self) -> str:
        """Acesso Cidadão (IdentityServer) token endpoint."""
        return self.url + "/is/connect/token"

    @property
    def bitize_token_url(self) -> str:
        """Bitize token endpoint."""
        return self.url + "/auth"

    @property
    def scorepositivo_token_url(self) -> str:
        """Score Positivo (Laravel Passport) token endpoint."""
        return self.url + "/oauth/token"

    def api_url(self, path: str = "/api/resource") -> str:
        """URL of the protected API; ``path`` should start with ``/api``."""
        return self.url + path

    # --- mTLS

    def _private_ca(self) -> PrivateCA:
        if self._ca is None:
            raise RuntimeError("client certificates need FakeTokenServer(mtls=True)")
        return self._ca

    @property
    def ca_pem(self) -> bytes:
        """The private CA's certificate (PEM): what clients must trust (mtls only)."""
        return self._private_ca().cert_pem

    @property
    def ca_file(self) -> str:
        """Path of a file holding ``ca_pem``, for ``verify=``; removed by ``stop()``."""
        pem = self.ca_pem
        with self._lock:
            if self._ca_dir is None:
                self._ca_dir = tempfile.mkdtemp(prefix="chaveiro-fake-ca-")
            path = Path(self._ca_dir, "ca.pem")
            if not path.exists():
                path.write_bytes(pem)
        return os.fspath(path)

    def issue_client_cert(
        self,
        *identities: str,
        common_name: str | None = "chaveiro test client",
        organization_name: str | None = None,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> ClientCertificate:
        """A client certificate from the server's CA; ``identities`` become its SANs."""
        return self._private_ca().issue(
            *identities,
            common_name=common_name,
            organization_name=organization_name,
            not_before=not_before,
            not_after=not_after,
        )

    # --- clients and knobs

    def add_client(
        self,
        client_id: str,
        client_secret: str | None = None,
        *,
        scopes: Iterable[str] | None = None,
        public_key_pem: bytes | None = None,
        tls_client_auth_subject_dn: str | None = None,
        tls_client_auth_san_dns: str | None = None,
        tls_client_auth_san_uri: str | None = None,
        tls_client_auth_san_ip: str | None = None,
        tls_client_auth_san_email: str | None = None,
        self_signed_cert: bytes | str | None = None,
        federated_issuer: str | None = None,
        federated_subject: str | None = None,
    ) -> None:
        """Register a client; ``scopes=None`` allows any scope.

        A secret works in every dialect. ``public_key_pem`` enables
        ``private_key_jwt``. One ``tls_client_auth_*`` value (RFC 8705 §2.1.2:
        the subject DN as an RFC 4514 string, or one SAN) enables
        ``tls_client_auth``; ``self_signed_cert`` (PEM) enables
        ``self_signed_tls_client_auth`` with that certificate, which the server
        then accepts in the handshake. ``federated_subject`` (with
        ``federated_issuer``, registered by ``trust_issuer()``) lets the workload
        tokens that issuer signs for that ``sub`` authenticate the client, as
        Keycloak's federated client authentication and Entra's workload identity do.
        """
        rule = cert_rule(
            subject_dn=tls_client_auth_subject_dn,
            san_dns=tls_client_auth_san_dns,
            san_uri=tls_client_auth_san_uri,
            san_ip=tls_client_auth_san_ip,
            san_email=tls_client_auth_san_email,
            self_signed_cert=self_signed_cert,
        )
        federated = federation(federated_issuer, federated_subject)
        if client_secret is None and public_key_pem is None and rule is None and not federated:
            raise ValueError(
                "give the client a secret, a public key or a certificate to match, or a"
                " federated_issuer and federated_subject"
            )
        if self_signed_cert:
            if self._ssl_context is None or self._ca is None:
                raise ValueError("self_signed_cert needs FakeTokenServer(mtls=True)")
            pem = (
                self_signed_cert if isinstance(self_signed_cert, str) else self_signed_cert.decode()
            )
            self._ssl_context.load_verify_locations(cadata=pem)
        key = None if public_key_pem is None else public_key(public_key_pem)
        chosen = None if scopes is None else frozenset(scopes)
        self._register(client_id, Client(client_secret, chosen, key, rule, federated))

    def fail(self, failure: Failure, *, times: int | None = None) -> None:
        """Make the next ``times`` token requests fail (None: until cleared or replaced).

        Calls queue up in order; a new call replaces an unlimited failure at the queue's end.
        """
        self._failures.add(failure, times)

    def clear_failures(self) -> None:
        """Answer token requests normally again."""
        self._failures.clear()

    def reset_counters(self) -> None:
        """Zero the counters and empty ``grants`` and the request logs; tokens stay valid."""
        with self._lock:
            self._token_requests = self._api_requests = 0
            self._api_unauthorized = self._discovery_requests = self._handshake_failures = 0
            self._token_requests_by_dialect = dict.fromkeys(DIALECTS, 0)
            self._grants = []
            self._token_request_log: list[RecordedRequest] = []
            self._api_request_log: list[RecordedRequest] = []

    # --- request handling

    def _handshake_failed(self) -> None:
        with self._lock:
            self._handshake_failures += 1

    def _dispatch(self, req: RecordedRequest) -> Response:
        for name, dialect in ROUTES.items():
            match = dialect.route.fullmatch(req.path)
            if match is not None:
                realm = match.groupdict().get("realm")
                return self._token_endpoint(replace(req, dialect=name, realm=realm), dialect)
        if req.path == "/.well-known/openid-configuration":
            return self._discovery(req)
        if req.path == "/api" or req.path.startswith("/api/"):
            return self._api(req)
        return json_response(404, {"error": "not_found", "path": req.path})

    def _token_endpoint(self, req: RecordedRequest, dialect: Dialect) -> Response:
        req = replace(req, fields=fields(req))
        with self._lock:
            self._token_requests += 1
            self._token_requests_by_dialect[str(req.dialect)] += 1
            self._token_request_log.append(req)
        failure = self._failures.next()
        time.sleep(self.token_delay + (failure.seconds if failure is not None else 0.0))
        if failure is not None and failure.kind != "slow":
            return failure_response(failure, dialect.render)
        if req.method != "POST":
            return json_response(405, {"error": "invalid_request"}, {"Allow": "POST"})
        try:
            req = self._token_proof(req, dialect.dpop)
            response = dialect.handle(self, req)
        except DialectError as exc:
            nonce = exc.error == "use_dpop_nonce"
            response = dialect.render(exc) if not nonce else self._with_nonce(dialect.render(exc))
        return self._bound_type(req, response)

    def _discovery(self, req: RecordedRequest) -> Response:
        with self._lock:
            self._discovery_requests += 1
        if req.method not in ("GET", "HEAD"):
            return json_response(405, {"error": "method_not_allowed"}, {"Allow": "GET"})
        document: dict[str, object] = {
            "issuer": self.issuer,
            "token_endpoint": self.oauth_token_url,
            "token_endpoint_auth_methods_supported": self.auth_methods_supported,
            "grant_types_supported": ["client_credentials"],
        }
        if self._ca is not None:
            document["tls_client_certificate_bound_access_tokens"] = self.bind_tokens
        return json_response(200, document)

    def _api(self, req: RecordedRequest) -> Response:
        with self._lock:
            self._api_requests += 1
            self._api_request_log.append(req)
        query = {k: v[0] for k, v in parse_qs(req.query).items()}
        if req.path == "/api/redirect" and req.method in ("GET", "HEAD"):
            target = query.get("to", "")
            if not target:
                return json_response(400, {"error": "missing ?to="})
            return json_response(302, {"location": target}, {"Location": target})
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        scheme = scheme.lower()
        issued = self._valid(token.strip(), "access") if scheme in ("bearer", "dpop") else None
        status = int(query["status"]) if query.get("status", "").isdigit() else 200
        refused = None if issued is None else self._refused_token(req, scheme, issued)
        if refused is not None:
            return refused
        if issued is None or status == 401:
            return self._unauthorized()
        if not 200 <= status <= 599 or status in (204, 304):
            return json_response(400, {"error": "?status= must be 200-599, not 204 or 304"})
        body = {"ok": status < 400, "client_id": issued.client_id, "path": req.path}
        body |= {"method": req.method, "body_length": len(req.body)}
        return self._with_nonce(json_response(status, body))
