"""Broker processes on loopback: start each as its own OS process, wait for health, stop them all.

Used by the scenario runner, the integration tests and the benchmarks, so all start federations
the same way: ephemeral ports (the broker writes its bound address to ``<data_dir>/address``), data
in a temporary folder, logs captured per SP, and every process stopped at the end, whatever happened.

Security is on as in production: the fleet keeps a lab CA in ``<root>/pki``, gives every SP a
server certificate and an account book, registers each upper-SP as a ``peer-sp`` service account
at its lower-SPs (with the upper's token key), and makes client identities on demand, each with a
certificate and an Ed25519 token key (``identity``). Every SP knows the two default users,
``customer`` (role customer) and ``operator`` (role operator); ``channel(sp, name)`` opens an
authenticated channel as anyone (tokens minted per call), ``metadata(sp, name)`` gives one call's
metadata for a channel opened with ``authenticate=False``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from broker.core.faults import CRASH_EXIT_STATUS
from broker.security.accounts import Account, AccountKind, Role, dump_accounts, hash_password
from broker.security.auth import ClientIdentity, Metadata
from broker.security.keys import load_key, write_key
from broker.security.pki import Authority, TlsFiles, load_or_create_authority
from broker.security.tokens import TokenMinter
from capability_catalog.signing import generate_key
from fedbroker.v1 import northsouth_pb2 as pb
from fedbroker.v1 import northsouth_pb2_grpc as pb_grpc

FEDBROKER = Path(sys.executable).with_name("fedbroker")
START_TIMEOUT_S = 60.0  # generous: a loaded CI machine imports slowly; a healthy start takes ~1 s
STOP_TIMEOUT_S = 5.0
CUSTOMER = "customer"
OPERATOR = "operator"


FAULTS_FILE = "faults.json"


class StartError(RuntimeError):
    """A broker did not come up; the message carries the tail of its log."""


@dataclass(frozen=True)
class Exit:
    """A broker process that ended: how, and whether someone meant it."""

    sp_id: str
    status: int
    expected: bool  # killed or stopped on purpose (a ``kill`` step, ``stop_all``)

    @property
    def crashed(self) -> bool:
        """Whether it was an injected crash (``CRASH_EXIT_STATUS``)."""
        return self.status == CRASH_EXIT_STATUS

    def describe(self) -> str:
        """``L3 crashed (injected fault, status 86)`` and the like."""
        if self.crashed:
            return f"{self.sp_id} crashed (injected fault, status {self.status})"
        if self.expected:
            return f"{self.sp_id} was stopped on purpose (status {self.status})"
        return f"{self.sp_id} died unexpectedly (status {self.status})"


@dataclass
class BrokerProcess:
    """One SP's broker process and a channel to it."""

    sp_id: str
    folder: Path
    proc: subprocess.Popen[bytes] | None = None
    address: str = ""
    rest_address: str = ""  # the REST API's HOST:PORT when the SP serves one (``rest_listen``)
    channel: grpc.aio.Channel | None = None  # as the default customer
    operator_channel: grpc.aio.Channel | None = None  # as the SP's operator
    public_key: str = ""
    frozen: bool = False  # SIGSTOPped and not yet SIGCONTed
    exit_expected: bool = False  # the fleet killed it on purpose
    exit_reported: bool = False  # ``Fleet.exits`` has told about this process's end
    #: 0 for an SP's first process; n for its n-th replica (same identity and database, own data folder).
    replica: int = 0

    @property
    def _suffix(self) -> str:
        return f"-r{self.replica}" if self.replica else ""

    @property
    def name(self) -> str:
        """The process's name in the fleet: the SP id, ``T#2`` for T's second replica."""
        return f"{self.sp_id}#{self.replica}" if self.replica else self.sp_id

    @property
    def config_path(self) -> Path:
        """The generated broker config."""
        return self.folder / f"broker{self._suffix}.yaml"

    @property
    def data_dir(self) -> Path:
        """The broker's data directory."""
        return self.folder / f"data{self._suffix}"

    @property
    def log_path(self) -> Path:
        """Where the broker's output goes."""
        return self.folder / f"broker{self._suffix}.log"

    @property
    def accounts_path(self) -> Path:
        """The SP's account book, written by the fleet."""
        return self.folder / "accounts.yaml"

    @property
    def audit_path(self) -> Path:
        """The SP's audit log."""
        return self.data_dir / "audit.log"

    def _open(self, channel: grpc.aio.Channel | None) -> grpc.aio.Channel:
        # A step that calls a broker which never started (or was stopped) fails as a step, naming it.
        if channel is None:
            raise StartError(f"{self.sp_id} is not running")
        return channel

    @property
    def slices(self) -> pb_grpc.SlicesStub:
        """A Slices stub on this broker, acting as the default customer."""
        return pb_grpc.SlicesStub(self._open(self.channel))

    @property
    def operator_slices(self) -> pb_grpc.SlicesStub:
        """A Slices stub acting as the SP's operator (sees every slice, reads usage)."""
        return pb_grpc.SlicesStub(self._open(self.operator_channel))

    @property
    def caps(self) -> pb_grpc.CapabilitiesStub:
        """A Capabilities stub acting as the SP's operator."""
        return pb_grpc.CapabilitiesStub(self._open(self.operator_channel))

    @property
    def faults_path(self) -> Path:
        """The broker's faults file (``faults_file`` in its config, when the fleet armed it)."""
        return self.folder / FAULTS_FILE

    def running(self) -> bool:
        """True while the process lives."""
        return self.proc is not None and self.proc.poll() is None

    def exit_status(self) -> int | None:
        """The process's exit status (negative: the signal that ended it), or None while it lives."""
        return None if self.proc is None else self.proc.poll()

    def fired(self) -> list[str]:
        """Ids of the one-shot fault rules that fired in this broker (``<faults file>.fired``), in order."""
        with contextlib.suppress(FileNotFoundError):
            return self.faults_path.with_name(FAULTS_FILE + ".fired").read_text(encoding="utf-8").split()
        return []

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the broker wrote."""
        with contextlib.suppress(FileNotFoundError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


@dataclass
class Fleet:
    """The brokers of one federation, started bottom-up and always stopped together."""

    root: Path
    brokers: dict[str, BrokerProcess] = field(default_factory=dict)
    secure: bool = True  # False: brokers run with --insecure (plaintext; tokens still checked)
    _accounts: dict[str, dict[str, Account]] = field(default_factory=dict)
    _identities: dict[str, tuple[ClientIdentity, Role]] = field(default_factory=dict)
    _channels: list[grpc.aio.Channel] = field(default_factory=list)
    _ca: Authority | None = None

    def __getitem__(self, sp_id: str) -> BrokerProcess:
        return self.brokers[sp_id]

    # --- credentials --------------------------------------------------------------------------

    @property
    def pki_dir(self) -> Path:
        """The fleet's CA and client credentials."""
        return self.root / "pki"

    @property
    def ca(self) -> Authority:
        """The fleet's lab CA (created on first use)."""
        if self._ca is None:
            self._ca = load_or_create_authority(self.pki_dir)
        return self._ca

    def identity(self, name: str, role: Role = Role.CUSTOMER) -> ClientIdentity:
        """A client principal with a certificate and a token key, made once and then reused."""
        if name in self._identities:
            return self._identities[name][0]
        folder = self.pki_dir  # laid out as `fedbroker certs init` does, so `--creds` can point at it
        if not (folder / f"{name}.crt").exists():
            self.ca.issue_to(folder, name, server=False)
            write_key(folder / f"{name}.ed25519", generate_key())
        tls = (
            TlsFiles.read(self.pki_dir / "ca.crt", folder / f"{name}.crt", folder / f"{name}.key")
            if self.secure
            else None
        )
        ident = ClientIdentity(name, tls, TokenMinter(load_key(folder / f"{name}.ed25519"), name))
        self._identities[name] = (ident, role)
        return ident

    def grant(self, sp_id: str, name: str, role: Role = Role.CUSTOMER, *, password: str = "") -> ClientIdentity:
        """Make ``name`` an account at ``sp_id`` (a running broker picks it up at its first call)."""
        ident = self.identity(name, role)
        public = (self.pki_dir / f"{name}.ed25519").with_suffix(".pub").read_text().strip()
        kind = AccountKind.SERVICE if role is Role.PEER_SP else AccountKind.USER
        self._set_account(sp_id, Account(name, kind, role, (public,), hash_password(password) if password else ""))
        return ident

    def revoke(self, sp_id: str, name: str) -> None:
        """Remove the account ``name`` at ``sp_id`` (the broker notices within a second)."""
        self._accounts.get(sp_id, {}).pop(name, None)
        self._write_accounts(sp_id)

    def _set_account(self, sp_id: str, account: Account) -> None:
        self._accounts.setdefault(sp_id, {})[account.id] = account
        self._write_accounts(sp_id)

    def _write_accounts(self, sp_id: str) -> None:
        book = self._accounts.get(sp_id, {})
        path = self.root / sp_id / "accounts.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(dump_accounts(list(book.values())), sort_keys=False))
        os.replace(tmp, path)

    def _client_channel(self, broker: BrokerProcess, name: str, *, authenticate: bool = True) -> grpc.aio.Channel:
        ident = self._identities[name][0] if name in self._identities else self.identity(name)
        channel: grpc.aio.Channel = ident.channel(
            broker.address, broker.sp_id, server_name=broker.sp_id if self.secure else "", authenticate=authenticate
        )
        self._channels.append(channel)
        return channel

    def channel(self, sp_id: str, name: str = CUSTOMER, *, authenticate: bool = True) -> grpc.aio.Channel:
        """A channel to ``sp_id`` as ``name`` (closed by ``stop_all``); every call carries a fresh token."""
        return self._client_channel(self.brokers[sp_id], name, authenticate=authenticate)

    def metadata(self, sp_id: str, name: str = CUSTOMER) -> Metadata:
        """One call's metadata (a freshly minted token) for ``name`` calling ``sp_id``."""
        return self.identity(name).metadata(sp_id)

    async def start(
        self,
        sp_id: str,
        settings: Mapping[str, Any] | None = None,
        lowers: Sequence[str] = (),
        faults: Sequence[Mapping[str, Any]] | None = None,
        spare_addresses: Mapping[str, Sequence[str]] | None = None,
    ) -> BrokerProcess:
        """Write the SP's config (lower-SP addresses taken from running brokers) and start it.

        With ``faults`` (a list of rules, possibly empty) the broker gets a faults file
        (``faults_file`` in its config), so ``write_faults`` can arm it later. ``spare_addresses``
        lists, per lower SP, more addresses it may answer at (its entry gets ``addresses``).
        """
        folder = self.root / sp_id
        folder.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "sp_id": sp_id,
            "listen": "127.0.0.1:0",
            "data_dir": "data",
            "key_file": "sp.key",
            **(settings or {}),
        }
        if faults is not None:
            self.write_faults(sp_id, faults)
            config["faults_file"] = FAULTS_FILE
        security: dict[str, Any] = {"accounts_file": "accounts.yaml", **config.get("security", {})}
        if self.secure:
            self.ca.issue_to(folder, sp_id, server=True, stem="tls")
            security.update({"ca": str(self.pki_dir / "ca.crt"), "cert": "tls.crt", "key": "tls.key"})
        config["security"] = security
        if lowers:
            missing = [lo for lo in lowers if not self.brokers.get(lo) or not self.brokers[lo].address]
            if missing:
                raise StartError(f"{sp_id}: lower-SPs {missing} are not running")
            spare = {lo: list((spare_addresses or {}).get(lo, ())) for lo in lowers}
            for replica in self.brokers.values():  # a lower SP's replicas answer for it too
                if replica.replica and replica.sp_id in spare and replica.address:
                    spare[replica.sp_id].append(replica.address)
            config["lower_sps"] = [
                {
                    "id": lo,
                    **(
                        {"addresses": [self.brokers[lo].address, *spare[lo]]}
                        if spare.get(lo)
                        else {"address": self.brokers[lo].address}
                    ),
                    "keys": [self.brokers[lo].public_key],
                }
                for lo in lowers
            ]
        broker = BrokerProcess(sp_id, folder)
        key_path = folder / str(config["key_file"])
        broker.public_key = (
            write_key(key_path, generate_key())
            if not key_path.exists()
            else (key_path.with_suffix(".pub").read_text().strip())
        )
        for name, role in ((CUSTOMER, Role.CUSTOMER), (OPERATOR, Role.OPERATOR)):
            self.grant(sp_id, name, role)
        for lo in lowers:  # the lower-SP learns this SP's token key; it re-reads its book at the first call
            self._set_account(lo, Account(sp_id, AccountKind.SERVICE, Role.PEER_SP, (broker.public_key,)))
        broker.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.brokers[sp_id] = broker
        await self._launch(broker)
        return broker

    async def start_replica(self, sp_id: str, n: int) -> BrokerProcess:
        """Start replica ``n`` of a running SP: its config, key, certificate and store; own data folder and port.

        The SP's store must be shared (``store: {backend: postgresql, replicas: true}``). The replica
        is in ``brokers`` as ``SP#n``.
        """
        first = self.brokers[sp_id]
        config = yaml.safe_load(first.config_path.read_text())
        replica = BrokerProcess(sp_id, first.folder, public_key=first.public_key, replica=n)
        config.update(listen="127.0.0.1:0", data_dir=replica.data_dir.name)
        replica.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.brokers[f"{sp_id}#{n}"] = replica
        await self._launch(replica)
        return replica

    async def _launch(self, broker: BrokerProcess) -> None:
        broker.frozen = broker.exit_expected = broker.exit_reported = False
        addr_file = broker.data_dir / "address"
        with contextlib.suppress(FileNotFoundError):
            addr_file.unlink()
        with broker.log_path.open("ab") as log:
            # Popen only forks and execs; the broker must outlive any one event loop, so no asyncio transport.
            broker.proc = subprocess.Popen(  # noqa: ASYNC220
                [
                    str(FEDBROKER),
                    "serve",
                    "--config",
                    str(broker.config_path),
                    *(() if self.secure else ("--insecure",)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not addr_file.exists():
            if broker.proc.poll() is not None:
                raise StartError(f"{broker.sp_id} exited with status {broker.proc.returncode}:\n{broker.log_tail()}")
            if time.monotonic() > deadline:
                raise StartError(f"{broker.sp_id} did not listen within {START_TIMEOUT_S:g} s:\n{broker.log_tail()}")
            await asyncio.sleep(0.05)
        broker.address = addr_file.read_text().strip()
        rest_file = broker.data_dir / "rest_address"  # written before the gRPC address, when served
        broker.rest_address = rest_file.read_text().strip() if rest_file.exists() else ""
        for old in (broker.channel, broker.operator_channel):
            if old is not None:
                await old.close()
        broker.channel = self._client_channel(broker, CUSTOMER)
        broker.operator_channel = self._client_channel(broker, OPERATOR)
        # wait_for_ready: on a loaded machine the first connection to a server that just bound its port
        # may be refused once; the channel's retry (bounded by the timeout) is not a failed start.
        reply = await health_pb2_grpc.HealthStub(broker.channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=START_TIMEOUT_S, wait_for_ready=True
        )
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise StartError(f"{broker.sp_id} reports health {reply.status}")

    def signal(self, sp_id: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send a signal to a broker; after SIGKILL, reap it."""
        broker = self.brokers[sp_id]
        if not broker.running():
            raise StartError(f"{sp_id} is not running")
        assert broker.proc is not None
        if sig in (signal.SIGKILL, signal.SIGTERM):
            broker.exit_expected = True
        broker.proc.send_signal(sig)
        if sig is signal.SIGSTOP:
            broker.frozen = True
        elif sig is signal.SIGCONT:
            broker.frozen = False
        if sig is signal.SIGKILL:
            broker.proc.wait(timeout=STOP_TIMEOUT_S)
            broker.frozen = False

    def thaw_all(self) -> list[str]:
        """SIGCONT every broker a ``stop`` froze (before reading them back or tearing down); never raises."""
        thawed = []
        for broker in self.brokers.values():
            if broker.frozen and broker.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    broker.proc.send_signal(signal.SIGCONT)
                broker.frozen = False
                thawed.append(broker.name)
        return thawed

    def exits(self) -> list[Exit]:
        """Brokers that ended since the last call (each process's end is told once)."""
        ended = []
        for broker in self.brokers.values():
            status = broker.exit_status()
            if status is not None and not broker.exit_reported:
                broker.exit_reported = True
                ended.append(Exit(broker.name, status, broker.exit_expected))
        return ended

    def write_faults(self, sp_id: str, rules: Sequence[Mapping[str, Any]] = (), partitions: Sequence[str] = ()) -> Path:
        """Replace the SP's faults file (empty lists clear it); the broker picks it up at its next point.

        The file is replaced atomically and its mtime always moves forward, so two writes within the
        file system's timestamp granularity are still two changes to the broker.
        """
        path = self.root / sp_id / FAULTS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            before = path.stat().st_mtime_ns
        except FileNotFoundError:
            before = 0
        tmp = path.with_name(FAULTS_FILE + ".tmp")
        tmp.write_text(json.dumps({"rules": list(rules), "partitions": list(partitions)}, indent=1), encoding="utf-8")
        os.replace(tmp, path)
        mtime = max(time.time_ns(), before + 1_000_000)
        os.utime(path, ns=(mtime, mtime))
        return path

    async def restart(self, sp_id: str, listen: str = "") -> BrokerProcess:
        """Start a stopped broker again with the same config, data and address (its uppers know it).

        ``listen``: another address instead (one its uppers list among its ``addresses``).
        """
        broker = self.brokers[sp_id]
        if broker.running():
            raise StartError(f"{sp_id} is still running; kill it first")
        config = yaml.safe_load(broker.config_path.read_text())
        config["listen"] = listen or broker.address or config["listen"]
        broker.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        await self._launch(broker)
        return broker

    async def wait_exit(self, sp_id: str, timeout_s: float = 15.0) -> int:
        """Wait (bounded) until the SP's broker process has ended; its exit status.

        A broker that an injected crash hit may still be ending when its callers already see it
        gone (its sockets close first): wait for this before ``restart``.
        """
        broker = self.brokers[sp_id]
        deadline = time.monotonic() + timeout_s
        while (status := broker.exit_status()) is None:
            if time.monotonic() > deadline:
                raise StartError(f"{sp_id} is still running after {timeout_s:g} s")
            await asyncio.sleep(0.05)
        return status

    def crashed(self) -> list[str]:
        """SPs whose broker ended with ``CRASH_EXIT_STATUS`` and has not been restarted yet."""
        return [sp for sp, b in self.brokers.items() if b.exit_status() == CRASH_EXIT_STATUS]

    async def wait_terminals(
        self, sp_id: str, terminals: Sequence[str], timeout_s: float = 20.0, absent: Sequence[str] = ()
    ) -> pb.CapabilityNote:
        """Wait until the SP's published note lists ``terminals`` and none of ``absent``.

        Notes climb one level at a time; the loop is bounded by ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                cat: pb.GetCatalogResponse = await self.brokers[sp_id].caps.GetCatalog(
                    pb.GetCatalogRequest(), timeout=5
                )
            except grpc.aio.AioRpcError as exc:
                # A broker that just started may fail the first TLS handshakes on a loaded machine.
                if exc.code() is not grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
                continue
            have = {e.id for e in cat.own.endpoints} | {p.id for p in cat.own.ports}
            if set(terminals) <= have and not have & set(absent):
                return cat.own
            if time.monotonic() > deadline:
                missing, still = sorted(set(terminals) - have), sorted(have & set(absent))
                raise TimeoutError(
                    f"after {timeout_s:g} s {sp_id} still"
                    + (f" does not publish {missing}" if missing else "")
                    + (f" publishes {still}" if still else "")
                )
            await asyncio.sleep(0.01)

    async def usage(self, sp_id: str) -> pb.Usage:
        """What the SP holds now."""
        usage: pb.Usage = await self.brokers[sp_id].operator_slices.GetUsage(pb.GetUsageRequest(), timeout=5)
        return usage

    async def holdings(self, sp_ids: Sequence[str] = ()) -> dict[str, str]:
        """What each named SP (default: every running one) still holds, described; empty when idle."""
        held: dict[str, str] = {}
        for sp_id in sp_ids or [s for s, b in self.brokers.items() if b.running()]:
            u = await self.usage(sp_id)
            parts = [f"{u.holding_slices} slices"] if u.holding_slices else []
            for d in u.domains:
                if d.bandwidth_mbps or d.labels or d.function_slots or d.addresses:
                    parts.append(
                        f"{d.domain}: {d.bandwidth_mbps} Mb/s, {d.labels} labels, "
                        f"{d.function_slots} slots, {d.addresses} addresses"
                    )
            if u.wim_services or u.wim_labels or u.wim_bandwidth_mbps:
                parts.append(f"WIM: {u.wim_services} services, {u.wim_labels} labels, {u.wim_bandwidth_mbps} Mb/s")
            if parts:
                held[sp_id] = "; ".join(parts)
        return held

    async def stop_all(self) -> None:
        """Stop every broker: SIGTERM, then SIGKILL after a bounded wait. Never raises."""
        for channel in self._channels:
            with contextlib.suppress(Exception):
                await channel.close()
        self._channels.clear()
        for broker in self.brokers.values():
            broker.channel = broker.operator_channel = None
            if broker.running():
                assert broker.proc is not None
                broker.exit_expected = True
                with contextlib.suppress(ProcessLookupError):
                    broker.proc.send_signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
                    broker.frozen = False
                    broker.proc.terminate()
        for broker in self.brokers.values():
            if broker.proc is None:
                continue
            try:
                broker.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                broker.proc.kill()
                broker.proc.wait(timeout=STOP_TIMEOUT_S)
