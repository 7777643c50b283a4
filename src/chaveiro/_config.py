"""Settings validation: every argument an auth object takes is checked here, at construction.

Nothing in this module sends a request. Each check raises a
:class:`~chaveiro._errors.ConfigurationError` whose message says what to pass
instead, so a wrong setting fails where it is written, not at the first call.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, TypedDict
from urllib.parse import urlsplit

from chaveiro._errors import ConfigurationError, InsecureURLError, MissingSettingError, excerpt
from chaveiro._token import Clock

if TYPE_CHECKING:
    import requests

    from chaveiro._caches import TokenCache
    from chaveiro._certs import ClientCert, ClientTLS
    from chaveiro._dpop import DPoPKey

__all__ = [
    "COMMON_ENV_FIELDS",
    "DEFAULT_TIMEOUT",
    "AuthOptions",
    "EnvField",
    "HostMatcher",
    "check_options",
    "check_renew_on",
    "check_timeout",
    "check_url",
    "clean",
    "encodable",
    "extra_parameters",
    "host_matcher",
    "read_env",
]

DEFAULT_TIMEOUT = (5.0, 15.0)
"""Connect and read timeouts of token requests that chaveiro sends itself."""

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})

HostMatcher = tuple[frozenset[str], tuple[str, ...]]
"""``only_hosts`` compiled: exact host names, and suffixes (``.example.org``)."""

EnvField = tuple[str, str, "bool | str | tuple[str, ...]"]
"""``(argument, variable suffix, required)``; ``required`` may name other arguments instead."""

CREDENTIAL_ALTERNATIVES = ("client_assertion_file", "client_assertion")
"""What may stand in for a secret's environment variable."""

COMMON_ENV_FIELDS: tuple[EnvField, ...] = (
    ("client_cert", "CLIENT_CERT", False),
    ("client_cert_password", "CLIENT_CERT_PASSWORD", False),
    ("client_assertion_file", "CLIENT_ASSERTION_FILE", False),
    ("dpop_key", "DPOP_KEY", False),
)
"""Read by the ``from_env()`` of every class, on top of its own ``env_fields``; the assertion
file stands in for a secret."""


class AuthOptions(TypedDict, total=False):
    """The keyword arguments of :class:`~chaveiro.ClientCredentialsAuth` every adapter takes."""

    cache: TokenCache | None
    client_cert: ClientCert | ClientTLS | None
    client_cert_password: str | bytes | None
    client_assertion: Callable[[], str] | None
    client_assertion_file: str | os.PathLike[str] | None
    dpop_key: DPoPKey
    dpop_alg: str | None
    dpop_allow_bearer: bool
    leeway: float
    replay_on_401: bool
    renew_on: Iterable[int]
    only_hosts: Iterable[str] | None
    session: requests.Session | None
    timeout: float | tuple[float, float]
    max_attempts: int
    deadline: float
    wait_timeout: float | None
    allow_insecure_http: bool
    clock: Clock


def check_options(owner: str, options: Mapping[str, object]) -> None:
    """Refuse what an adapter's ``**options`` would otherwise pass on unchecked.

    ``BitizeAuth(..., scope="x")`` type-checks as an error, but at run time the
    scope would reach the token request and the provider would refuse it there.
    """
    allowed = AuthOptions.__required_keys__ | AuthOptions.__optional_keys__
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(
            f"{owner}() got an unexpected keyword argument {unknown[0]!r}; besides its own"
            f" arguments it takes {', '.join(sorted(allowed))}."
        )


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


def clean(name: str, value: object, *, required: bool = True) -> str | None:
    """A text setting, stripped; ``None`` when absent and not ``required``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise MissingSettingError(f"{name} is required and was not given.", names=(name,))
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string, not {type(value).__name__}.")
    return encodable(name, value).strip()


def encodable(name: str, value: str) -> str:
    """``value``, if it can be sent: lone surrogates (undecodable bytes from os.environ) cannot."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        message = f"{name} is not valid text: it cannot be encoded as UTF-8."
        raise ConfigurationError(message) from None
    return value


def check_timeout(timeout: object) -> tuple[float, float]:
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


def check_renew_on(statuses: object) -> frozenset[int]:
    """``renew_on=``: the API statuses that mean "this token is dead" (401, 403)."""
    if isinstance(statuses, int):
        statuses = (statuses,)
    allowed = {401, 403}
    if (
        isinstance(statuses, str | bytes)
        or not isinstance(statuses, Iterable)
        or not (codes := list(statuses))
        or not all(isinstance(c, int) and not isinstance(c, bool) for c in codes)
        or not set(codes) <= allowed
    ):
        raise ConfigurationError(
            f"renew_on={statuses!r} is not valid: give the API statuses that mean the token"
            " is no longer accepted, (401,) by default or (401, 403) for APIs that answer 403"
            " to a revoked or expired token."
        )
    chosen = frozenset(codes)
    return _RENEW_ON.setdefault(chosen, chosen)  # one of three: shared, not one per object


_RENEW_ON: dict[frozenset[int], frozenset[int]] = {}


def host_matcher(patterns: Iterable[str] | None) -> HostMatcher | None:
    """``only_hosts`` compiled for :func:`host_allowed`; ``None`` means every host."""
    if patterns is None:
        return None
    if isinstance(patterns, str):
        patterns = [patterns]
    exact: set[str] = set()
    suffixes: list[str] = []
    for raw in patterns:
        if not isinstance(raw, str):
            raise ConfigurationError(f"only_hosts holds {raw!r}: give host names as strings.")
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


def read_env(
    owner: str,
    fields: Iterable[EnvField],
    prefix: str,
    environ: Mapping[str, str] | None,
    kwargs: dict[str, object],
) -> dict[str, object]:
    """``kwargs`` completed from ``<prefix>_<suffix>`` variables; arguments win over them.

    ``fields`` are the class's own; :data:`COMMON_ENV_FIELDS` are read too. A
    missing required variable raises :class:`MissingSettingError` naming it.
    """
    env = os.environ if environ is None else environ
    fields = tuple(fields)
    own = {argument for argument, _, _ in fields}
    fields += tuple(field for field in COMMON_ENV_FIELDS if field[0] not in own)
    variables = {argument: f"{prefix}_{suffix}" for argument, suffix, _ in fields}
    for argument, name in variables.items():
        value = env.get(name, "").strip()
        if value and argument not in kwargs:
            kwargs[argument] = value
    missing: list[str] = []
    for argument, _, required in fields:
        if argument in kwargs or required is False:
            continue
        if required is True:
            missing.append(variables[argument])
            continue
        others = (required,) if isinstance(required, str) else required
        if not any(other in kwargs for other in others):
            instead = ", ".join(variables[other] for other in others if other in variables)
            missing.append(f"{variables[argument]} (or {instead})")
    if missing:
        plural = len(missing) > 1
        raise MissingSettingError(
            f"{owner}.from_env() needs the environment variable{'s' if plural else ''}"
            f" {', '.join(missing)}; set {'them' if plural else 'it'} or pass the value"
            f"{'s' if plural else ''} as argument{'s' if plural else ''}.",
            names=tuple(name.partition(" ")[0] for name in missing),
        )
    return kwargs


def extra_parameters(
    extra_params: Mapping[str, str] | None, audience: str | None, resource: str | None
) -> dict[str, str]:
    """The token request's extra form fields: ``extra_params``, ``audience=`` and ``resource=``."""
    given: dict[object, object] = dict((extra_params or {}).items())
    given.update((k, v) for k, v in (("audience", audience), ("resource", resource)) if v)
    extra: dict[str, str] = {}
    for name, value in given.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ConfigurationError(f"extra parameter {name!r} must map a string to a string.")
        extra[encodable("extra parameter name", name)] = encodable(name, value)
    return extra
