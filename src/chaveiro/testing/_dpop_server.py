"""The fake server's DPoP mode (``FakeTokenServer(dpop=True)``): proofs, bound tokens, nonces.

At the token endpoint (the dialects that support DPoP), a request with a
proof gets a token bound to the proof's key (``cnf.jkt``, ``token_type:
DPoP``); a bad proof gets ``400 invalid_dpop_proof``. At the API, a bound
token must come with the ``DPoP`` scheme and a proof made with its key for
that very request. With ``dpop_nonce=True`` every proof must carry the
server's current nonce (``use_dpop_nonce`` otherwise), and every answer
carries it in ``DPoP-Nonce``.
"""

from __future__ import annotations

import json
import ssl
import threading
from dataclasses import replace
from typing import TYPE_CHECKING

from chaveiro.testing._dpop import (
    ALGS,
    DPoPRefusal,
    Expected,
    NonceMint,
    NonceRotation,
    check_proof,
    htu_of,
)
from chaveiro.testing._knobs import Knob, Stat, non_negative
from chaveiro.testing._wire import DialectError, RecordedRequest, Response, json_response

if TYPE_CHECKING:
    from chaveiro.testing._registry import Issued

__all__ = ["DPoPServer"]

_ROTATIONS = ("never", "each_answer", "each_request")


class DPoPServer:
    """The DPoP half of ``FakeTokenServer``."""

    _lock: threading.Lock
    _ssl_context: ssl.SSLContext | None

    dpop_required = Knob[bool]()
    """The token endpoint refuses token requests without a DPoP proof (Keycloak's "require")."""
    dpop_iat_window = Knob[float](non_negative)
    """Seconds a proof's ``iat`` may be away from the server's clock (60 by default)."""
    dpop_nonce_rotation = Knob[NonceRotation](lambda v: v in _ROTATIONS)
    """When the nonce changes (``dpop_nonce=True``): ``never`` (until
    ``rotate_dpop_nonce()``), ``each_answer`` (after every accepted proof; that answer
    carries the new one) or ``each_request`` (before every check: no proof ever has it)."""
    dpop_refusals = Stat[list[str]]()
    """Why each refused proof was refused, in order (nonce challenges included)."""
    dpop_nonce_challenges = Stat[int]()
    """Answers that asked for a nonce (``use_dpop_nonce``), token endpoint and API."""
    dpop_proofs = Stat[int]()
    """Proofs accepted, token endpoint and API."""

    def _init_dpop(self, dpop: bool, dpop_nonce: bool) -> None:
        if dpop_nonce and not dpop:
            raise ValueError("dpop_nonce=True needs dpop=True")
        self._dpop_on, self._nonces = dpop, (NonceMint() if dpop_nonce else None)
        self.dpop_required, self.dpop_iat_window = False, 60.0
        self.dpop_nonce_rotation = "never"
        self._dpop_refusals: list[str] = []
        self._dpop_nonce_challenges = self._dpop_proofs = 0

    _api_unauthorized: int

    def _fresh_jti(self, client_id: str, jti: object) -> bool:
        raise NotImplementedError

    @property
    def dpop_nonce(self) -> str | None:
        """The nonce proofs must carry now (``dpop_nonce=True``), else None."""
        return None if self._nonces is None else self._nonces.current

    def rotate_dpop_nonce(self) -> str:
        """Make a new nonce (the old one is refused from now on); return it."""
        if self._nonces is None:
            raise RuntimeError("nonces need FakeTokenServer(dpop=True, dpop_nonce=True)")
        return self._nonces.rotate()

    def _check(self, req: RecordedRequest, access_token: str | None) -> str:
        """Check ``req``'s proof: the thumbprint of its key, or :class:`DPoPRefusal`."""
        mint = self._nonces
        nonce = None
        if mint is not None:
            nonce = mint.rotate() if self.dpop_nonce_rotation == "each_request" else mint.current
        scheme = "https" if self._ssl_context is not None else "http"
        expected = Expected(
            req.method, htu_of(scheme, req), access_token, nonce, self.dpop_iat_window
        )
        try:
            jkt, jti = check_proof(req.headers.get("dpop"), expected)
        except DPoPRefusal as refusal:
            raise self._refused(refusal) from None
        if not self._fresh_jti("dpop " + jkt, jti):
            replayed = DPoPRefusal("invalid_dpop_proof", "jti was seen before: a replayed proof")
            raise self._refused(replayed)
        with self._lock:
            self._dpop_proofs += 1
        if mint is not None and self.dpop_nonce_rotation == "each_answer":
            mint.rotate()
        return jkt

    def _refused(self, refusal: DPoPRefusal) -> DPoPRefusal:
        with self._lock:
            self._dpop_refusals.append(refusal.description)
            self._dpop_nonce_challenges += refusal.error == "use_dpop_nonce"
        return refusal

    def _token_proof(self, req: RecordedRequest, supported: bool) -> RecordedRequest:
        """A token request, its proof checked: ``dpop_jkt`` set, or a :class:`DialectError`."""
        if not self._dpop_on or not supported:
            return req  # a server without DPoP ignores the header
        if "dpop" not in req.headers and not self.dpop_required:
            return req
        try:
            return replace(req, dpop_jkt=self._check(req, None))
        except DPoPRefusal as refusal:
            raise DialectError(400, refusal.error, refusal.description) from None

    def _bound_type(self, req: RecordedRequest, response: Response) -> Response:
        """A token answer to a DPoP request says ``token_type: DPoP``; every answer the nonce."""
        if req.dpop_jkt is not None and response.status == 200:
            body = json.loads(response.body)
            if isinstance(body, dict) and "token_type" in body:
                response = replace(
                    response, body=json.dumps({**body, "token_type": "DPoP"}).encode()
                )
        return self._with_nonce(response)

    def _with_nonce(self, response: Response) -> Response:
        if self._nonces is not None:
            response.headers["DPoP-Nonce"] = self._nonces.current
        return response

    def _refused_token(self, req: RecordedRequest, scheme: str, issued: Issued) -> Response | None:
        """The 401 for ``issued`` presented with ``scheme``; None if the API accepts it."""
        refusal = None
        if issued.bound_to not in (None, req.client_cert_thumbprint):
            refusal = "the token is bound to another client certificate (RFC 8705)"
        elif not self._dpop_on:
            refusal = None if scheme == "bearer" else "unknown authorization scheme"
        elif issued.jkt is None:
            refusal = None if scheme == "bearer" else "not a DPoP-bound token"
        elif scheme != "dpop":
            refusal = "a DPoP-bound token goes with Authorization: DPoP and a proof (RFC 9449 §7.1)"
        else:
            token = req.headers.get("authorization", "").partition(" ")[2].strip()
            try:
                jkt = self._check(req, token)
            except DPoPRefusal as exc:
                return self._unauthorized(exc.description, exc.error)
            if jkt != issued.jkt:
                refusal = "the token is bound to another DPoP key"
        return None if refusal is None else self._unauthorized(refusal)

    def _unauthorized(self, description: str = "", error: str = "invalid_token") -> Response:
        """A 401 with its challenge (RFC 6750 §3; RFC 9449 §7.1 in DPoP mode)."""
        with self._lock:
            self._api_unauthorized += 1
        challenge = f'{"DPoP" if self._dpop_on else "Bearer"} error="{error}"'
        body = {"error": error}
        if description:
            challenge += f', error_description="{description}"'
            body["error_description"] = description
        if self._dpop_on:
            challenge += f', algs="{" ".join(ALGS)}"'
        return self._with_nonce(json_response(401, body, {"WWW-Authenticate": challenge}))
