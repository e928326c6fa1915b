"""``fedbroker serve|scenario|dataplane|openstack``: run a broker, a federation scenario, and their helpers."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from broker.cli.output import err
from broker.config import load_config
from broker.descriptors import ConfigError
from slicing.errors import FedError


def _serve(ns: argparse.Namespace) -> int:
    from broker.app import serve
    from broker.cli import logs

    config = load_config(Path(ns.config))
    logs.configure(ns.log_level, ns.log_format, config.sp_id)
    try:
        asyncio.run(serve(config, insecure=ns.insecure))
    except FedError as exc:  # e.g. a domain's cloud refused the login: say which setting, no traceback
        err.print(f"[red]error:[/] {config.sp_id} cannot start: {exc}")
        return 1
    return 0


def _scenario(ns: argparse.Namespace) -> int:
    from scenarios.runner import main as scenario_main

    argv = ["run", ns.file]
    if ns.report_json:
        argv += ["--report-json", ns.report_json]
    if ns.keep:
        argv.append("--keep")
    status: int = scenario_main(argv)
    return status


def _dataplane(ns: argparse.Namespace) -> int:
    """``dataplane audit|clean [--prefix P]``: what the data plane left behind under a prefix."""
    from wim import netlink

    if ns.dataplane_cmd == "clean" and ns.prefix is None and not ns.all:
        # The family prefix matches every installation on the host, running ones included.
        raise ConfigError(
            "--prefix: say which installation to clean (its `dataplane: {prefix: …}`), "
            "or --all for every fedbroker installation on this host, running ones included"
        )
    try:
        prefix = netlink.check_prefix(ns.prefix or netlink.FAMILY_PREFIX, "--prefix")
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

    return openstack_main([ns.action, *(["--dir", ns.dir] if ns.dir else [])])


def register(sub: Any) -> None:
    """Add ``serve``, ``scenario``, ``dataplane`` and ``openstack`` to the command's sub-parsers."""
    p = sub.add_parser("serve", help="run one SP's broker")
    p.add_argument("--config", required=True, help="the SP's YAML config")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help="default info")
    p.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="json: one object per line with sp_id, slice_id, request_id as fields (default text)",
    )
    p.add_argument("--insecure", action="store_true", help="serve plaintext gRPC, no TLS (logs a warning)")
    p.set_defaults(handler=_serve)

    dp = sub.add_parser("dataplane", help="the Linux data plane: find or remove what is left (needs root)")
    dsub = dp.add_subparsers(dest="dataplane_cmd", required=True)
    audit = dsub.add_parser("audit", help="list namespaces and interfaces left under the prefix; exit 1 if any")
    audit.add_argument("--prefix", help="an installation's prefix (default: every fedbroker one)")
    audit.set_defaults(handler=_dataplane, all=False)
    clean = dsub.add_parser("clean", help="remove everything under an installation's prefix")
    which = clean.add_mutually_exclusive_group()
    which.add_argument("--prefix", help="the installation's prefix (its config's dataplane.prefix)")
    which.add_argument("--all", action="store_true", help="every fedbroker installation on the host, even running ones")
    clean.set_defaults(handler=_dataplane)
    sc = sub.add_parser("scenario", help="run a federation scenario (see scenarios/README.md)")
    scsub = sc.add_subparsers(dest="scenario_cmd", required=True, metavar="COMMAND")
    scr = scsub.add_parser(
        "run",
        help="start every SP of a scenario as its own process, run its steps, check every expectation",
        description="Exit status 0 exactly when every expectation held, 1 when one failed, 2 for a bad file.",
    )
    scr.add_argument("file", metavar="FILE", help="the scenario's YAML file, e.g. scenarios/three-tier.yaml")
    scr.add_argument("--report-json", metavar="OUT", help="write the JSON report here")
    scr.add_argument("--keep", action="store_true", help="keep the work folder (configs, data, logs)")
    scr.set_defaults(handler=_scenario)

    op = sub.add_parser("openstack", help="real Keystone, Placement and Neutron on loopback (for OpenStack leaves)")
    op.add_argument(
        "action",
        choices=["up", "down", "status", "install"],
        help="up: install (cached) and start; down: stop; status: what runs; install: only install",
    )
    op.add_argument("--dir", help="run folder (default $FEDBROKER_OPENSTACK_RUN or the cache's run/)")
    op.set_defaults(handler=_openstack)
