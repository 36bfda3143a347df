"""`python -m dispatcher.sandbox --port 0`: run the sandbox Catapush API in the foreground."""

from __future__ import annotations

import argparse
import sys

from dispatcher.sandbox import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_HOST,
    DEFAULT_PERMANENT_TOKEN,
    DEFAULT_PORT,
    serve,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dispatcher.sandbox",
        description="A local Catapush API for trials, tests and benchmarks.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument(
        "--token-ttl",
        type=float,
        default=None,
        metavar="SECONDS",
        help="lifetime of OAuth tokens (default: they never expire)",
    )
    parser.add_argument("--latency-ms", type=int, default=0, help="delay of every send answer")
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    parser.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET)
    parser.add_argument("--permanent-token", default=DEFAULT_PERMANENT_TOKEN)
    parser.add_argument(
        "--no-log-bodies",
        dest="log_bodies",
        action="store_false",
        help="keep message bodies out of the request log (benchmarks)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.token_ttl is not None and args.token_ttl < 0:
        print("sandbox: --token-ttl must not be negative", file=sys.stderr)
        return 2
    if args.latency_ms < 0:
        print("sandbox: --latency-ms must not be negative", file=sys.stderr)
        return 2
    try:
        serve(
            args.host,
            args.port,
            token_ttl_s=args.token_ttl,
            latency_ms=args.latency_ms,
            client_id=args.client_id,
            client_secret=args.client_secret,
            permanent_token=args.permanent_token,
            log_bodies=args.log_bodies,
        )
    except OSError as exc:
        print(f"sandbox: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
