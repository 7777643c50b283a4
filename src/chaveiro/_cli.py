"""The ``chaveiro`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from chaveiro._demo import run  # noqa: PLC0415 - starts servers; only when asked

    return run(lifetime=args.lifetime)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chaveiro",
        description="OAuth 2.0 client-credentials tokens, fetched once and shared.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  chaveiro demo",
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
