"""The ``fedbroker`` command: run a broker, order and inspect slices, run scenarios.

One module per command group (``run``, ``slices``, ``credentials``, ``catalog``), each adding its
sub-parsers with a ``handler``; ``client`` holds what the client commands share.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import sys
from collections.abc import Sequence

import grpc

from broker.cli import catalog, credentials, run, slices
from broker.cli.client import err, print_explanation
from broker.descriptors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fedbroker``."""
    parser = argparse.ArgumentParser(prog="fedbroker", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for group in (run, slices, credentials, catalog):
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedbroker`` console script."""
    parser = build_parser()
    ns = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        result = ns.handler(ns)
        status: int = asyncio.run(result) if inspect.iscoroutine(result) else result
        return status
    except (ConfigError, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}")
        return 2
    except grpc.aio.AioRpcError as exc:
        err.print(f"[red]{exc.code().name}:[/] {exc.details()}")
        print_explanation(exc)
        return 1
    except KeyboardInterrupt:
        return 130


__all__ = ["build_parser", "main"]
