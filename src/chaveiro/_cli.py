"""The ``chaveiro`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

__all__ = ["main"]


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chaveiro",
        description="OAuth 2.0 client-credentials tokens, fetched once and shared.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  chaveiro demo\n  chaveiro inspect eyJhbGciOi...\n"
        "  chaveiro token cidadao | chaveiro inspect -",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run requests and httpx against a built-in local provider",
        description="Start a local token server on 127.0.0.1 and show fetch, reuse, renewal"
        " and a 401 replay. Needs no credentials and no network.",
    )
    demo.add_argument("--lifetime", type=float, default=3.0, help="token lifetime in seconds")
    demo.set_defaults(handler=_demo)
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
