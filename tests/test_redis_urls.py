"""Redis URLs: Sentinel URLs parsed, clients told back as URLs, addresses named (no server)."""

from __future__ import annotations

from urllib.parse import quote, urlencode

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from redis.credentials import UsernamePasswordCredentialProvider
from redis.sentinel import Sentinel

from chaveiro import ConfigurationError, RedisCache
from chaveiro._redis_urls import address_of, sentinel_client, url_of

hosts = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True),
    st.ip_addresses().map(str),
)
ports = st.integers(min_value=1, max_value=65535)
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@given(
    sentinels=st.lists(st.tuples(hosts, ports), min_size=1, max_size=3),
    service=texts.filter(bool),
    db=st.integers(min_value=0, max_value=15),
    password=texts,
    sentinel_password=texts,
    tls=st.booleans(),
)
def test_a_sentinel_url_makes_a_client_told_back_as_the_same_url(
    sentinels: list[tuple[str, int]],
    service: str,
    db: int,
    password: str,
    sentinel_password: str,
    tls: bool,
):
    """Hosts (IPv6 too), service, db, passwords and TLS survive url -> client -> url."""
    userinfo = f":{quote(password, safe='')}@" if password else ""
    hosts_part = ",".join(_netloc(host, port) for host, port in sentinels)
    query = f"?{urlencode({'sentinel_password': sentinel_password})}" if sentinel_password else ""
    scheme = "rediss+sentinel" if tls else "redis+sentinel"
    url = f"{scheme}://{userinfo}{hosts_part}/{quote(service, safe='')}/{db}{query}"
    client = sentinel_client(url)
    pool = client.connection_pool
    assert pool.service_name == service
    assert pool.connection_kwargs.get("db", 0) == db
    assert pool.connection_kwargs.get("password") == (password or None)
    assert pool.sentinel_manager.sentinel_kwargs.get("password") == (sentinel_password or None)
    assert [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in pool.sentinel_manager.sentinels
    ] == sentinels
    assert url_of(client) == url
    assert "sentinel_password" not in address_of(client)


def test_a_sentinel_port_defaults_to_26379():
    client = sentinel_client("redis+sentinel://s1,s2:26380/mymaster")
    assert url_of(client) == "redis+sentinel://s1:26379,s2:26380/mymaster/0"
    assert address_of(client) == "'mymaster'/0 via Sentinel s1:26379,s2:26380"


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://:sentinel-password@s1:26379",
        "redis+sentinel://:sentinel-password@s1:26379/",
        "redis+sentinel://:sentinel-password@s1:port/mymaster",
        "redis+sentinel://:sentinel-password@s1:26379/mymaster/zero",
        "redis+sentinel://:sentinel-password@/mymaster",
    ],
)
def test_a_bad_sentinel_url_says_how_to_write_one(url: str):
    """A ConfigurationError with an example, and never the password."""
    with pytest.raises(ConfigurationError, match="redis\\+sentinel://") as caught:
        RedisCache(url)
    assert "sentinel-password" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://:p%40ss%3Aword@cache.internal:6380/3",
        "redis://user:password@[::1]:6379/1",
        "rediss://user:password@cache.internal:6379/0?ssl_ca_certs=%2Fetc%2Fca.pem",
        "rediss://cache.internal:6379/0?ssl_cert_reqs=none",
        "unix:///run/redis.sock?db=2",
        "unix://:password@/run/redis.sock?db=0",
    ],
)
def test_a_client_is_told_back_as_its_url(url: str):
    """A redis.Redis made from a URL is told as that URL: address, db, user, password, TLS."""
    client = redis.Redis.from_url(url)
    assert url_of(client) == url
    assert "password" not in address_of(client)
    assert "p@ss" not in address_of(client)


def test_a_sentinel_client_object_is_told_as_a_sentinel_url():
    sentinel = Sentinel([("s1", 26379), ("s2", 26380)], sentinel_kwargs={"password": "sp"})
    client = sentinel.master_for("mymaster", password="mp", db=1)
    assert (
        url_of(client) == "redis+sentinel://:mp@s1:26379,s2:26380/mymaster/1?sentinel_password=sp"
    )
    assert repr(RedisCache(client=client)) == (
        "RedisCache(<Redis 'mymaster'/1 via Sentinel s1:26379,s2:26380>, prefix='chaveiro:')"
    )


def test_a_client_with_a_credential_provider_has_no_url():
    provider = UsernamePasswordCredentialProvider("user", "password")
    assert url_of(redis.Redis(host="h", credential_provider=provider)) is None
    sentinel = Sentinel([("s1", 26379)], sentinel_kwargs={"credential_provider": provider})
    assert url_of(sentinel.master_for("mymaster")) is None
