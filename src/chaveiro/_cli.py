"""The ``chaveiro`` command line."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from chaveiro._version import __version__

if TYPE_CHECKING:
    from chaveiro._auth import ClientCredentialsAuth
    from chaveiro._file_cache import FileCache
    from chaveiro._token import Token

__all__ = ["ENV_PREFIXES", "main"]

ENV_PREFIXES = {
    "stackspot": "STACKSPOT",
    "cidadao": "CIDADAO",
    "bitize": "BITIZE",
    "scorepositivo": "SCOREPOSITIVO",
    "oauth": "OAUTH",
}
"""The ``env_prefix`` of each provider's class (a test keeps the two equal)."""
_SHORTCUT_FORMAT = 1


def _demo(args: argparse.Namespace) -> int:
    from chaveiro._demo import run  # noqa: PLC0415 - starts servers; only when asked

    return run(lifetime=args.lifetime)


def _inspect(args: argparse.Namespace) -> int:
    from chaveiro._inspect import describe, duration, jwt_parts  # noqa: PLC0415

    raw = sys.stdin.read() if args.token == "-" else args.token
    token = raw.strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    parts = jwt_parts(token)
    if parts is None:
        print(
            "chaveiro inspect: that is not a JWT (three base64url parts of JSON).", file=sys.stderr
        )
        return 2
    summary = describe(*parts, now=time.time())
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return 0
    print("Decoded, NOT verified: the signature was not checked. Do not trust these claims.")
    print("header:", json.dumps(summary["header"], ensure_ascii=False))
    print("claims:", json.dumps(summary["claims"], indent=2, ensure_ascii=False))
    for claim, label in (("iat", "issued"), ("nbf", "valid from"), ("exp", "expires")):
        if claim + "_utc" in summary:
            print(f"{label + ':':<12}{summary[claim + '_utc']}")
    left = summary.get("expires_in")
    if isinstance(left, float):
        state = f"expires in {duration(left)}" if left > 0 else f"EXPIRED {duration(left)} ago"
        print(f"{'time left:':<12}{state}")
    return 0


# ---- chaveiro token ---------------------------------------------------------------------
#
# A shell loop calls ``chaveiro token`` again and again, so a fresh token already in the
# file cache is answered without loading authlib or any HTTP library. The slow path, after
# getting a token, leaves a shortcut file: its name is a digest of everything the command
# was given (the provider, its environment variables, the options), its content the cache
# key and leeway that the auth object computed. The fast path computes only that digest,
# never an identity of its own: it answers only when a run with the same inputs did, from
# the same cache entry, with the same freshness rule (Token.is_fresh).


def _file_state(path: str) -> list[int]:
    """What changes when a file is replaced: a new certificate under the same name."""
    try:
        found = os.stat(path)
    except OSError:
        return []
    return [found.st_mtime_ns, found.st_size, found.st_ino]


def _shortcut_name(args: argparse.Namespace) -> str:
    prefix = ENV_PREFIXES[args.provider] + "_"
    given: list[object] = [*sorted((k, v) for k, v in os.environ.items() if k.startswith(prefix))]
    certificate = os.environ.get(prefix + "CLIENT_CERT", "").strip()
    if certificate:  # its thumbprint is part of the identity: a new file, another token
        given.append(_file_state(certificate))
    options = [args.token_url, args.scope, args.allow_insecure_http]
    canonical = json.dumps([_SHORTCUT_FORMAT, args.provider, given, options])
    digest = hashlib.sha256(b"chaveiro-cli\0" + canonical.encode("utf-8", "surrogatepass"))
    return "cli-" + digest.hexdigest()[:40]


def _cached_token(args: argparse.Namespace) -> Token | None:
    """The token a previous run with the same inputs left in the file cache, if fresh."""
    from chaveiro._file_cache import FileCache  # noqa: PLC0415 - no HTTP library behind it

    cache = FileCache(args.cache_dir)
    shortcut = cache._read_note(_shortcut_name(args))
    if shortcut is None:
        return None
    try:
        found = json.loads(shortcut)
        key, leeway = found["key"], float(found["leeway"])
    except (ValueError, TypeError, KeyError):
        return None
    token = cache.get(key) if isinstance(key, str) else None
    return token if token is not None and token.is_fresh(time.time(), leeway) else None


def _leave_shortcut(
    args: argparse.Namespace, cache: FileCache, auth: ClientCredentialsAuth
) -> None:
    manager = auth._manager  # the key and leeway the auth object itself uses
    note = {"key": manager.identity.key, "leeway": manager.policy.leeway}
    cache._write_note(_shortcut_name(args), json.dumps(note).encode())


def _print_token(args: argparse.Namespace, token: Token) -> None:
    from datetime import datetime, timezone  # noqa: PLC0415

    if args.json:
        summary = {
            "token_type": token.token_type,
            "expires_at": datetime.fromtimestamp(token.expires_at, tz=timezone.utc).isoformat(),
            "expires_in": max(0, int(token.expires_at - time.time())),
            "scope": token.scope,
        }
        print(json.dumps(summary))
    elif args.header:
        print(f"Authorization: {token.authorization}")
    else:
        print(token.access_token)


class _Warnings(logging.Handler):
    """chaveiro's warnings on stderr, once each, as the command's own lines.

    A failed token request is not among them: the command reports that error itself.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "chaveiro_event", None) == "failed":
            return
        try:
            print(f"chaveiro token: warning: {record.getMessage()}", file=sys.stderr)
        except Exception:  # noqa: BLE001 - a log line must never end the command
            self.handleError(record)


def _takes_scope(provider: type) -> bool:
    """Whether the adapter has a ``scope`` argument (Bitize and Score Positivo have none)."""
    import inspect  # noqa: PLC0415

    return "scope" in inspect.signature(provider).parameters


def _token(args: argparse.Namespace) -> int:
    if not args.no_cache:
        cached = _cached_token(args)
        if cached is not None:
            _print_token(args, cached)
            return 0

    from chaveiro._auth import ClientCredentialsAuth  # noqa: PLC0415
    from chaveiro.providers import PROVIDERS  # noqa: PLC0415

    provider = PROVIDERS.get(args.provider, ClientCredentialsAuth)
    if args.scope is not None and not _takes_scope(provider):
        print(
            f"chaveiro token: {args.provider} does not take --scope: its token endpoint"
            " takes no scope (stackspot, cidadao and oauth do).",
            file=sys.stderr,
        )
        return 2
    chaveiro_logger = logging.getLogger("chaveiro")
    handler, propagate = _Warnings(), chaveiro_logger.propagate
    chaveiro_logger.addHandler(handler)
    chaveiro_logger.propagate = False  # or Python's last-resort handler prints them again
    try:
        return _fetch_and_print(args, provider)
    finally:
        chaveiro_logger.removeHandler(handler)
        chaveiro_logger.propagate = propagate


def _fetch_and_print(args: argparse.Namespace, provider: type[ClientCredentialsAuth]) -> int:
    from chaveiro._caches import MemoryCache  # noqa: PLC0415
    from chaveiro._errors import ChaveiroError, ConfigurationError  # noqa: PLC0415
    from chaveiro._file_cache import FileCache  # noqa: PLC0415
    from chaveiro._flight import wait_for_renewals  # noqa: PLC0415

    cache = MemoryCache() if args.no_cache else FileCache(args.cache_dir)
    options: dict[str, Any] = {"cache": cache}
    for name in ("token_url", "scope"):
        value = getattr(args, name)
        if value is not None:
            options[name] = value
    if args.allow_insecure_http:
        options["allow_insecure_http"] = True
    try:
        auth = provider.from_env(**options)
        token = auth.get_token()
    except ConfigurationError as exc:
        print(f"chaveiro token: {exc}", file=sys.stderr)
        return 2
    except ChaveiroError as exc:
        print(f"chaveiro token: {exc}", file=sys.stderr)
        return 1
    finally:
        wait_for_renewals(15.0)  # a renewal started in the background lands in the cache
    if isinstance(cache, FileCache):
        _leave_shortcut(args, cache, auth)
    _print_token(args, token)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chaveiro",
        description="OAuth 2.0 client-credentials tokens, fetched once and shared.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  chaveiro demo\n  chaveiro inspect eyJhbGciOi...\n"
        "  chaveiro token cidadao | chaveiro inspect -",
    )
    parser.add_argument("--version", action="version", version=f"chaveiro {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run requests and httpx against a built-in local provider",
        description="Start a local token server on 127.0.0.1 and show fetch, reuse, renewal"
        " and a 401 replay. Needs no credentials and no network.",
    )
    demo.add_argument("--lifetime", type=float, default=3.0, help="token lifetime in seconds")
    demo.set_defaults(handler=_demo)
    token = commands.add_parser(
        "token",
        help="print an access token for shell use",
        description="Print an access token, reading the same environment variables as"
        " from_env(). Tokens are kept in the user cache directory (FileCache), so calling"
        " this in a loop does not ask the provider for a new token each time. Exit status:"
        " 0 ok, 1 the provider refused or failed, 2 usage or configuration error.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="providers and their variables:\n"
        "  stackspot      STACKSPOT_CLIENT_ID, STACKSPOT_CLIENT_KEY, STACKSPOT_REALM\n"
        "  cidadao        CIDADAO_CLIENT_ID, CIDADAO_CLIENT_SECRET, CIDADAO_SCOPE\n"
        "  bitize         BITIZE_CONSUMER_KEY, BITIZE_SECRET_KEY\n"
        "  scorepositivo  SCOREPOSITIVO_CLIENT_ID, SCOREPOSITIVO_CLIENT_SECRET\n"
        "  oauth          OAUTH_TOKEN_URL, OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET, OAUTH_SCOPE\n"
        "  (each also reads <PREFIX>_TOKEN_URL)\n\n"
        "examples:\n"
        '  curl -H "Authorization: Bearer $(chaveiro token cidadao)" https://api.es.gov.br/...\n'
        '  curl -H "$(chaveiro token stackspot --header)" https://...\n'
        "  chaveiro token bitize --json",
    )
    token.add_argument(
        "provider",
        metavar="PROVIDER",
        choices=list(ENV_PREFIXES),
        help="stackspot, cidadao, bitize, scorepositivo or oauth (any RFC 6749 server)",
    )
    token.add_argument("--token-url", help="token endpoint URL (overrides <PREFIX>_TOKEN_URL)")
    token.add_argument(
        "--scope",
        help="scope(s), space-separated (overrides <PREFIX>_SCOPE; stackspot, cidadao, oauth)",
    )
    output = token.add_mutually_exclusive_group()
    output.add_argument(
        "--json", action="store_true", help="print token_type, expires_at, expires_in, scope"
    )
    output.add_argument("--header", action="store_true", help="print the Authorization line")
    token.add_argument("--cache-dir", help="directory of the token cache (default: user cache)")
    token.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    token.add_argument(
        "--allow-insecure-http", action="store_true", help="allow a plain-HTTP token URL"
    )
    token.set_defaults(handler=_token)
    inspect = commands.add_parser(
        "inspect",
        help="decode a JWT access token (without verifying it)",
        description="Show a JWT's header, claims and time left. The signature is NOT"
        " verified: use this to look, never to trust.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='examples:\n  chaveiro inspect eyJhbGciOi...\n  echo "$TOKEN" | chaveiro inspect -',
    )
    inspect.add_argument("token", metavar="TOKEN", help="the token, or - to read it from stdin")
    inspect.add_argument("--json", action="store_true", help="print the summary as JSON")
    inspect.set_defaults(handler=_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    result: int = handler(args)
    return result
