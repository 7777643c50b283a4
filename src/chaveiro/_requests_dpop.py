"""DPoP proofs for the redirect hops of a requests call.

requests follows a redirect with a copy of the request that the redirect
answered (``response.request``), headers and all, and never calls the auth
object for it. So when a DPoP request is redirected, its response hook readies
that request before it is copied: a proof for the method and URL the hop will
have, worked out as requests does; or, when the hop leaves the origin (or
``only_hosts``), neither token nor proof.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

import requests

from chaveiro._dpop import target

if TYPE_CHECKING:
    from chaveiro._transport import AuthCore

__all__ = ["ready_next_hop"]


def ready_next_hop(auth: AuthCore, response: requests.Response) -> None:
    """Give ``response.request``, which requests copies for the next hop, the hop's proof."""
    request = response.request
    location = response.headers.get("Location") or ""
    url = requests.utils.requote_uri(urljoin(response.url, location))
    method = request.method or "GET"
    if (response.status_code in (302, 303) and method != "HEAD") or (
        response.status_code == 301 and method == "POST"
    ):
        method = "GET"  # requests' rebuild_method
    headers = request.headers
    if target(url)[0] != target(request.url or "")[0] or not auth._applies(urlsplit(url).hostname):
        headers.pop("Authorization", None)
        headers.pop("DPoP", None)
        return
    proof = auth._reproof(method, url, headers.get("Authorization") or "")
    if proof is not None:
        headers["DPoP"] = proof
