"""DPoP proofs for the redirect hops of an httpx-family request.

httpx follows redirects below the auth flow: a hop is a copy of the request
with its headers (the ``Authorization`` dropped when the hop leaves the
origin), and the auth flow never sees it. So a request that carries a DPoP
proof also carries :class:`HopProofs` as its ``trace`` extension: right before
a hop's headers go out, the hop gets a proof of its own (its method and URL,
a new ``jti``, the server's newest nonce), or, when it carries no token, no
proof at all. Every answer's ``DPoP-Nonce``, a redirect's included, is
remembered on the way. Events go on to the user's own ``trace``, if any.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chaveiro._token import Token
    from chaveiro._transport import AuthCore

__all__ = ["AsyncHopProofs", "HopProofs", "prove"]


def prove(auth: AuthCore, request: Any, token: Token, asynchronous: bool) -> str | None:
    """Attach ``request``'s DPoP proof, and the trace that proves its redirect hops."""
    proof = auth._proof(request.method, str(request.url), token)
    if proof is not None:
        request.headers["DPoP"] = proof
        hops = request.extensions.get("trace")
        if not isinstance(hops, HopProofs):
            hops = (AsyncHopProofs if asynchronous else HopProofs)(auth, hops)
            request.extensions["trace"] = hops
        hops.attach(proof)
    return proof


def _url_of(request: Any) -> str | None:
    """The URL an httpcore ``request`` goes to (forward proxies name it in the target)."""
    try:
        target = request.url.target.decode("ascii")
        if target.startswith(("http://", "https://")):
            return str(target)
        host = request.url.host.decode("ascii")
        host = f"[{host}]" if ":" in host else host
        port = request.url.port
        netloc = host if port is None else f"{host}:{port}"
        return f"{request.url.scheme.decode('ascii')}://{netloc}{target}"
    except (AttributeError, UnicodeDecodeError, TypeError):
        return None


class HopProofs:
    """The ``trace`` extension of a DPoP request: a fresh proof for each redirect hop."""

    def __init__(self, auth: AuthCore, user_trace: Any) -> None:
        self.auth = auth
        self.unsent: bytes | None = None
        """The proof the auth flow attached and that has not gone out yet."""
        self.user_trace = user_trace
        """The user's own ``trace``, if the request had one: events go on to it."""
        self._url: str | None = None
        self._tunnel = False

    def attach(self, proof: str) -> None:
        """The auth flow attached ``proof``: the next request to go out is its own."""
        self.unsent = proof.encode("ascii")

    def _record(self, event: str, info: Mapping[str, Any]) -> None:
        if event.endswith("send_request_headers.started"):
            request = info.get("request")
            self._tunnel = getattr(request, "method", None) == b"CONNECT"
            if request is not None and not self._tunnel:
                self._url = _url_of(request)
                self._prove(request)
        elif event.endswith("receive_response_headers.complete") and not self._tunnel:
            answer = info.get("return_value")
            # HTTP/1.1: (version, status, reason, headers); HTTP/2: (status, headers)
            dpop = self.auth._dpop
            if dpop is not None and self._url and isinstance(answer, tuple) and answer:
                with contextlib.suppress(TypeError, ValueError, AttributeError):
                    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in answer[-1]}
                    dpop.heard(self._url, headers)

    def _prove(self, request: Any) -> None:
        """Give a hop (any request but the one the flow made the proof for) its own proof."""
        headers: list[tuple[bytes, bytes]] = request.headers
        proofs = [value for name, value in headers if name.lower() == b"dpop"]
        if proofs == [self.unsent]:
            self.unsent = None  # the request the auth flow proved: it goes as it is
            return
        authorization = next((v for k, v in headers if k.lower() == b"authorization"), b"")
        kept = [(name, value) for name, value in headers if name.lower() != b"dpop"]
        proof = None
        if self._url is not None:
            method = request.method.decode("ascii", "replace")
            proof = self.auth._reproof(method, self._url, authorization.decode("latin-1"))
        if proof is not None:
            kept.append((b"DPoP", proof.encode("ascii")))
        headers[:] = kept  # what httpcore sends: the hop's headers, before they go out

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        self._record(event, info)
        if self.user_trace is not None:
            self.user_trace(event, info)


class AsyncHopProofs(HopProofs):
    async def __call__(self, event: str, info: dict[str, Any]) -> None:  # type: ignore[override]
        self._record(event, info)
        if self.user_trace is not None:
            await self.user_trace(event, info)
