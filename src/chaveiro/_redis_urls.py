"""Redis addresses: the URLs RedisCache is made from, and a client told as one.

- ``redis://``, ``rediss://``, ``unix://``: one server, in redis-py's own URL forms.
  A node of a Redis Cluster is one too: RedisCache finds out at first use (the node
  answers ``MOVED``) and goes on as a cluster client (:mod:`chaveiro._redis_link`).
- ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]``
  (``rediss+sentinel://`` over TLS): the master of ``service``, found through the
  Sentinels listed (port 26379 unless given). The user and password are the
  master's; ``?sentinel_username=...&sentinel_password=...`` are the Sentinels' own.
  Other query options are redis-py's.

:func:`url_of` turns a client back into such a URL, so that a cache made around
a client can travel to another process; :func:`address_of` names the server a
client talks to, without any password, for ``repr()`` and warnings.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlencode

from chaveiro._errors import ConfigurationError

if TYPE_CHECKING:
    import redis

__all__ = ["SENTINEL_SCHEMES", "address_of", "sentinel_client", "url_of"]

SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
_SENTINEL_PORT = 26379
_HOST = re.compile(
    r"\[(?P<v6>[^\]]+)\](?::(?P<v6port>\d+))?|(?P<host>[^:\[\]]+)(?::(?P<port>\d+))?"
)
_SENTINEL_EXAMPLE = "redis+sentinel://:password@sentinel-1:26379,sentinel-2:26379/mymaster/0"
_CERTIFICATE_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_UNTOLD = ("credential_provider", "ssl_ca_data", "ssl_password")
"""Connection settings that no URL can carry: a client using them cannot travel."""
_CERT_REQS = {ssl.CERT_NONE: "none", ssl.CERT_OPTIONAL: "optional", ssl.CERT_REQUIRED: "required"}


# ---- Sentinel URLs -----------------------------------------------------------------------


def sentinel_client(url: str, **options: Any) -> redis.Redis:
    """A client for the master named in a ``redis+sentinel://`` URL; ``options`` go to both.

    Makes no connection: the master is looked up when the client first needs one.
    """
    from redis.connection import parse_url  # noqa: PLC0415
    from redis.sentinel import Sentinel  # noqa: PLC0415

    parse: Any = parse_url  # untyped in redis-py
    sentinel: Any = Sentinel

    scheme, _, rest = url.partition("://")
    authority, _, tail = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    path, _, query = tail.partition("?")
    service, _, db = path.strip("/").partition("/")
    service = unquote(service)
    sentinels = [_host_port(part, url) for part in hosts.split(",")]
    if not service:
        raise _bad_sentinel_url(url, "it names no service (the master's name in Sentinel)")
    if db and not db.isdigit():
        raise _bad_sentinel_url(url, f"the database {db!r} is not a number")
    server_scheme = "rediss" if scheme.startswith("rediss") else "redis"
    try:
        kwargs = parse(f"{server_scheme}://{userinfo}{at}sentinel/{db}?{query}")
    except ValueError as exc:
        raise _bad_sentinel_url(url, str(exc)) from None
    for key in ("host", "port", "connection_class"):
        kwargs.pop(key, None)
    sentinel_kwargs = {
        key[len("sentinel_") :]: kwargs.pop(key)
        for key in ("sentinel_username", "sentinel_password")
        if key in kwargs
    }
    if server_scheme == "rediss":
        kwargs["ssl"] = True
        sentinel_kwargs.update({k: v for k, v in kwargs.items() if k.startswith("ssl")})
    kwargs.update(options)
    sentinel_kwargs.update(options)
    client: redis.Redis = sentinel(sentinels, sentinel_kwargs=sentinel_kwargs, **kwargs).master_for(
        service
    )
    return client


def _host_port(text: str, url: str) -> tuple[str, int]:
    match = _HOST.fullmatch(text.strip())
    if match is None:
        raise _bad_sentinel_url(url, f"{text!r} is not a host[:port]")
    host = match["v6"] or match["host"]
    port = match["v6port"] or match["port"]
    return host, int(port) if port else _SENTINEL_PORT


def _bad_sentinel_url(url: str, why: str) -> ConfigurationError:
    shown = url.rsplit("@", maxsplit=1)[-1]  # never the password
    return ConfigurationError(
        f"RedisCache: the Sentinel URL ...{shown!r} cannot be used: {why}. Write it as"
        f" {_SENTINEL_EXAMPLE} (the service, then the database number)."
    )


# ---- a client told as a URL --------------------------------------------------------------


def url_of(client: object) -> str | None:
    """A URL that makes a client for the same server(s) as ``client``, or None.

    What travels: the address (a cluster node, or the Sentinels and service), the
    database, the user and password, TLS and its certificate files. Timeouts and
    retries do not: RedisCache applies its own. None when the client depends on
    something a URL cannot say (a credential provider, a CA or key password in memory).
    """
    from redis.cluster import RedisCluster  # noqa: PLC0415
    from redis.sentinel import SentinelConnectionPool  # noqa: PLC0415

    if isinstance(client, RedisCluster):
        shared: Mapping[str, Any] = client.nodes_manager.connection_kwargs
        tls = bool(shared.get("ssl")) or _is_tls(shared.get("connection_class"))
        return _server_url(shared, f"{_first_node(client)}/0", tls=tls)
    pool = getattr(client, "connection_pool", None)
    settings: object = getattr(pool, "connection_kwargs", None)
    if not isinstance(settings, Mapping):
        return None
    tls = _is_tls(getattr(pool, "connection_class", None))
    if isinstance(pool, SentinelConnectionPool):
        return _sentinel_url(pool, settings, tls=tls)
    db = int(settings.get("db") or 0)
    if "path" in settings:
        location = quote(str(settings["path"]))
        return _server_url(settings, location, db=db, scheme="unix", tls=False)
    where = _netloc(settings.get("host", "localhost"), settings.get("port", 6379))
    return _server_url(settings, f"{where}/{db}", tls=tls)


def _sentinel_url(pool: Any, settings: Mapping[str, Any], *, tls: bool) -> str | None:
    manager = pool.sentinel_manager
    told = dict(manager.sentinel_kwargs or {})
    if any(told.get(key) is not None for key in _UNTOLD):
        return None
    extra = {f"sentinel_{key}": told[key] for key in ("username", "password") if told.get(key)}
    db = int(settings.get("db") or 0)
    where = f"{_sentinel_hosts(manager)}/{quote(pool.service_name, safe='')}/{db}"
    return _server_url(settings, where, scheme="redis+sentinel", tls=tls, extra=extra)


def _sentinel_hosts(manager: Any) -> str:
    addresses = (s.connection_pool.connection_kwargs for s in manager.sentinels)
    return ",".join(_netloc(a.get("host"), a.get("port")) for a in addresses)


def _server_url(
    settings: Mapping[str, Any],
    location: str,
    *,
    tls: bool,
    db: int | None = None,
    scheme: str = "redis",
    extra: Mapping[str, str] | None = None,
) -> str | None:
    if any(settings.get(key) is not None for key in _UNTOLD):
        return None
    query: dict[str, str] = dict(extra or {})
    if tls:
        scheme = scheme.replace("redis", "rediss", 1)
        query.update({k: str(settings[k]) for k in _CERTIFICATE_OPTIONS if settings.get(k)})
        reqs = settings.get("ssl_cert_reqs")
        if isinstance(reqs, ssl.VerifyMode):
            reqs = _CERT_REQS[reqs]
        if isinstance(reqs, str) and reqs != "required":
            query["ssl_cert_reqs"] = reqs
    if db is not None:
        query["db"] = str(db)
    user = quote(str(settings.get("username") or ""), safe="")
    password = quote(str(settings.get("password") or ""), safe="")
    userinfo = f"{user}:{password}@" if password else f"{user}@" if user else ""
    return f"{scheme}://{userinfo}{location}" + (f"?{urlencode(query)}" if query else "")


def _is_tls(connection_class: object) -> bool:
    return "SSL" in getattr(connection_class, "__name__", "")


def _first_node(client: Any) -> str:
    """The node a cluster client was pointed at (the first one, if several)."""
    nodes = (  # newer redis-py keeps the nodes given; older, only its nodes manager
        getattr(client, "startup_nodes", None)
        or list(client.nodes_manager.startup_nodes.values())
        or [client.get_default_node()]
    )
    return _netloc(nodes[0].host, nodes[0].port)


def _netloc(host: object, port: object) -> str:
    host = str(host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ---- naming where a client points --------------------------------------------------------


def address_of(client: object) -> str:
    """``127.0.0.1:6379/0``, ``cluster 10.0.0.5:7000``, ``'mymaster'/0 via Sentinel ...``."""
    from redis.cluster import RedisCluster  # noqa: PLC0415
    from redis.sentinel import SentinelConnectionPool  # noqa: PLC0415

    if isinstance(client, RedisCluster):
        return f"cluster {_first_node(client)}"
    pool = getattr(client, "connection_pool", None)
    settings: object = getattr(pool, "connection_kwargs", None)
    if not isinstance(settings, Mapping):
        return f"<a {type(client).__name__} client>"
    db = int(settings.get("db") or 0)
    if isinstance(pool, SentinelConnectionPool):
        return f"{pool.service_name!r}/{db} via Sentinel {_sentinel_hosts(pool.sentinel_manager)}"
    if "path" in settings:
        return f"{settings['path']}/{db}"
    return f"{_netloc(settings.get('host', 'localhost'), settings.get('port', 6379))}/{db}"
