"""``fedbroker serve|scenario|dataplane|openstack``: run a broker, a federation scenario, and their helpers."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from broker.cli.client import err
from broker.config import load_config
from broker.descriptors import ConfigError
from slicing.errors import FedError


def _serve(ns: argparse.Namespace) -> int:
    from broker.app import serve

    config = load_config(Path(ns.config))
    logging.basicConfig(
        level=ns.log_level.upper(),
        format=f"%(asctime)s %(levelname)s {config.sp_id} %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(serve(config, insecure=ns.insecure))
    except FedError as exc:  # e.g. a domain's cloud refused the login: say which setting, no traceback
        err.print(f"[red]error:[/] {config.sp_id} cannot start: {exc}")
        return 1
    return 0


def _scenario(ns: argparse.Namespace) -> int:
    from scenarios.runner import main as scenario_main

    status: int = scenario_main(list(ns.scenario_args))
    return status


def _dataplane(ns: argparse.Namespace) -> int:
    """``dataplane audit|clean [--prefix P]``: what the data plane left behind under a prefix."""
    from wim import netlink

    try:
        prefix = netlink.check_prefix(ns.prefix, "--prefix")
    except FedError as exc:
        raise ConfigError(str(exc)) from None
    if ns.dataplane_cmd == "clean":
        removed = netlink.clean(prefix)
        for item in removed:
            print(f"removed {item}")
        err.print(f"{len(removed)} objects removed under prefix {prefix}")
        return 0
    left = netlink.leftovers(prefix)
    for item in left:
        print(item)
    if left:
        err.print(f"[red]{len(left)} objects left under prefix {prefix}[/]")
        return 1
    err.print(f"nothing left under prefix {prefix}")
    return 0


def _openstack(ns: argparse.Namespace) -> int:
    from scenarios.openstack_services import main as openstack_main

    return openstack_main(list(ns.openstack_args))


def register(sub: Any) -> None:
    """Add ``serve``, ``scenario``, ``dataplane`` and ``openstack`` to the command's sub-parsers."""
    p = sub.add_parser("serve", help="run one SP's broker")
    p.add_argument("--config", required=True, help="the SP's YAML config")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--insecure", action="store_true", help="serve plaintext gRPC, no TLS (logs a warning)")
    p.set_defaults(handler=_serve)

    dp = sub.add_parser("dataplane", help="the Linux data plane: find or remove what is left (needs root)")
    dsub = dp.add_subparsers(dest="dataplane_cmd", required=True)
    for name, text in (
        ("audit", "list namespaces and interfaces left under the prefix; exit 1 if there are any"),
        ("clean", "remove everything under the prefix"),
    ):
        d = dsub.add_parser(name, help=text)
        d.add_argument("--prefix", default="fb", help="an installation's prefix (default: every fedbroker one)")
        d.set_defaults(handler=_dataplane)
    sc = sub.add_parser("scenario", help="run a federation scenario (see scenarios/README.md)")
    sc.add_argument("scenario_args", nargs=argparse.REMAINDER, help="run FILE [--report-json OUT] [--keep]")
    sc.set_defaults(handler=_scenario)

    op = sub.add_parser("openstack", help="real Keystone, Placement and Neutron on loopback (for OpenStack leaves)")
    op.add_argument("openstack_args", nargs=argparse.REMAINDER, help="up|down|status|install [--dir DIR]")
    op.set_defaults(handler=_openstack)
