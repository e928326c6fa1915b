"""The ``fedbroker`` command: run a broker, order and inspect slices, run scenarios.

One module per command group (``run``, ``slices``, ``credentials``, ``catalog``, ``faults``, ``schema``), each
adding its sub-parsers with a ``handler``; ``client`` holds what the client commands share, ``output`` what they
print.

Exit status: 0 done, 1 refused by a broker (or a check failed), 2 a bad option, file or input, 130
interrupted. With ``--json`` an error is printed on stdout as ``{"error": {"code", "message", "field"}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import NoReturn

import grpc
from rich.markup import escape

from broker.cli import catalog, credentials, faults, monitor, run, schema, slices
from broker.cli.client import print_explanation, transport_hint
from broker.cli.output import err, error_json, print_json
from broker.descriptors import ConfigError


def _version() -> str:
    try:
        return metadata.version("fedbroker")
    except metadata.PackageNotFoundError:  # run from a tree that was never installed
        return "unknown"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are JSON when the command line asks for ``--json``."""

    def error(self, message: str) -> NoReturn:
        if "--json" in _ARGV:
            option = message.split(":", 1)[0].removeprefix("argument ").split("/")[0]
            print_json(error_json("INVALID_ARGUMENT", message, option if option.startswith("-") else ""))
            self.exit(2)
        super().error(message)


_ARGV: list[str] = []


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fedbroker``."""
    parser = _Parser(prog="fedbroker", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"fedbroker {_version()}")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND", parser_class=_Parser)
    for group in (run, slices, monitor, credentials, catalog, faults, schema):
        group.register(sub)
    _name_commands(parser)
    return parser


def _name_commands(parser: argparse.ArgumentParser) -> None:
    # Every group of sub-commands gets a help line too, so no positional argument goes unexplained.
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            action.help = action.help or f"one of: {', '.join(action.choices)}"
            for child in action.choices.values():
                _name_commands(child)


def _field_of(message: str) -> str:
    # Our messages start with the path of what is wrong ("--broker: …", "chain[0].type: …").
    head, sep, _ = message.partition(": ")
    return head if sep and " " not in head and "/" not in head else ""


def _fail(as_json: bool, code: str, message: str, field: str, status: int) -> int:
    if as_json:
        print_json(error_json(code, message, field))
    else:
        label = "error" if code == "INVALID_ARGUMENT" and status == 2 else code
        err.print(f"[red]{label}:[/] {escape(message)}", highlight=False)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedbroker`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    _ARGV[:] = args
    parser = build_parser()
    ns = parser.parse_args(args)
    as_json = bool(getattr(ns, "json", False))
    try:
        result = ns.handler(ns)
        status: int = asyncio.run(result) if inspect.iscoroutine(result) else result
        return status
    except (ConfigError, ValueError) as exc:
        field = getattr(exc, "field", "") or _field_of(str(exc))
        return _fail(as_json, "INVALID_ARGUMENT", str(exc), field, 2)
    except grpc.aio.AioRpcError as exc:
        from broker.api.status import explanation

        tree = explanation(exc)
        message = exc.details() or exc.code().name
        hint = transport_hint(ns, exc)
        if as_json:
            text = f"{message} ({hint})" if hint else message
            return _fail(True, exc.code().name, text, tree.field if tree is not None else "", 1)
        err.print(f"[red]{exc.code().name}:[/] {escape(message)}", highlight=False)
        if hint:
            err.print(f"[yellow]hint:[/] {escape(hint)}", highlight=False)
        print_explanation(exc)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `fedbroker … | head`: the reader has gone; say nothing more, no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except EOFError:
        return _fail(as_json, "INVALID_ARGUMENT", "stdin ended before the input this command reads", "stdin", 2)


__all__ = ["build_parser", "main"]
