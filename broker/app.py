"""One SP's broker process: assembles store, agents, WIM, catalog and servers, and owns their lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from broker.api import reflection
from broker.api.child_agent import ChildBrokerAgent
from broker.api.lower_presence import follow_presence
from broker.api.servicers import SERVICE_NAMES, Gate, add_servicers
from broker.config import BrokerConfig, DomainConfig
from broker.core.catalog import Catalog
from broker.core.faults import Faults
from broker.core.ledger import StoreLedger
from broker.core.lifecycle import SliceManager
from broker.core.monitoring import Mode, Monitor
from broker.core.offers import OfferDesk
from broker.core.reconciler import Reconciler
from broker.core.watchdog import Watchdog
from broker.descriptors import ConfigError, load_yaml
from broker.security.accounts import AccountBook
from broker.security.audit import AuditLog
from broker.security.auth import SERVER_OPTIONS, ClientIdentity, Guard, Principal, open_channel
from broker.security.keys import load_or_create_key
from broker.security.pki import TlsFiles
from broker.security.tokens import TokenMinter, TokenVerifier, TrustedKey
from broker.store import open_store
from capability_catalog.signing import TrustStore
from domain_agents.authored import fixes_expiry
from domain_agents.base import DomainAgent
from domain_agents.emulated import EmulatedDomainAgent
from domain_agents.emulated_config import EmulatedDomainConfig, with_authored
from domain_agents.openstack_config import OpenStackDomainConfig
from domain_agents.openstack_config import with_authored as openstack_authored
from schemas.note import parse_note, parse_policy
from slicing.errors import InvalidArgument
from wim.base import WimDriver
from wim.memory import MemoryWimDriver

if TYPE_CHECKING:  # loaded only when the config needs them: a broker's start is mostly imports
    from broker.api.metrics import Metrics
    from broker.api.rest import RestApi
    from broker.api.rest_events import EventHub
    from broker.core.orders import OrderDesk
    from broker.security.login import LoginEndpoint, SessionIssuer
    from domain_agents.netns import NetnsDomainAgent
    from domain_agents.openstack import OpenStackDomainAgent
    from wim.linux import LinuxWimDriver

log = logging.getLogger(__name__)

#: At most one re-published note per this interval under load (a quiet broker re-publishes at once).
NOTE_MIN_INTERVAL_S = 0.05
#: How often FAILED records past their retention are removed: often enough that a burst of failing
#: requests overshoots the count bound by seconds' worth only.
PRUNE_INTERVAL_S = 5.0
#: How long a starting broker waits for an OpenStack cloud that does not answer (each try is
#: bounded by the domain's ``api_timeout_s``) before it gives up naming the service.
OPENSTACK_START_PATIENCE_S = 30.0


def read_tls(config: BrokerConfig) -> TlsFiles:
    """The broker's TLS files, read once at start; errors name the setting and say how to make them."""
    sec = config.security
    where = f"{config.source}: " if config.source else ""
    if sec.ca is None or sec.cert is None or sec.key is None:
        raise ConfigError(
            f"{where}security: mutual TLS is on by default and needs security.ca, security.cert and security.key "
            "(make them with `fedbroker certs init`), or run `fedbroker serve --insecure` for plaintext"
        )
    for name, path in (("ca", sec.ca), ("cert", sec.cert), ("key", sec.key)):
        if not path.is_file():
            raise ConfigError(f"{where}security.{name}: cannot read {path} (make it with `fedbroker certs init`)")
    return TlsFiles.read(sec.ca, sec.cert, sec.key)


def read_note_file(dom: DomainConfig, config: BrokerConfig, now: float) -> DomainConfig:
    """``dom`` with the note its ``note_file`` holds, parsed as ``fedbroker catalog validate`` parses it.

    The path is relative to the config file's folder; every problem names the setting, the file and
    the field in it (``domains[0].note_file: note.yaml: transit[0].latency_ms: …``).
    """
    if not isinstance(dom, EmulatedDomainConfig | OpenStackDomainConfig) or dom.note_file is None:
        return dom
    where = f"{config.source}: " if config.source else ""
    path = (config.source.parent if config.source else Path.cwd()) / dom.note_file
    try:
        data = load_yaml(path)
    except ConfigError as exc:
        raise ConfigError(f"{where}{dom.note_field}: {exc}", field=dom.note_field) from None
    note, problems = parse_note(data, now)
    if problems or note is None:
        raise ConfigError(
            f"{where}{dom.note_field}: {path}: {'; '.join(problems)} "
            f"(check it with `fedbroker catalog validate {path}`)",
            field=dom.note_field,
        )
    # A file that fixes when it expires caps every note served (domain_agents.authored).
    until = note.expires_at if isinstance(data, dict) and fixes_expiry(data) else None
    if until is not None and until <= now:
        said = "expires_at" if "expires_at" in data else "issued_at + valid_for_s"
        raise ConfigError(
            f"{where}{dom.note_field}: {path}: {said} {until:.0f} is in the past (now {now:.0f}): the note has "
            "expired; write a note file with a later expires_at",
            field=dom.note_field,
        )
    if isinstance(dom, OpenStackDomainConfig):
        return openstack_authored(dom, note, until)
    return with_authored(dom, note, until)


class Broker:
    """A running broker: start it, read ``address``, stop it.

    The SP's Ed25519 key (``key_file``) signs both its capability notes and the call tokens it sends
    to its lower-SPs, and the session tokens its login endpoint issues: one identity key per SP,
    rotated as one. The encodings cannot be confused: a note signature covers canonical JSON, a
    token signature covers ``base64url(header).base64url(claims)``.
    """

    def __init__(self, config: BrokerConfig, clock: Callable[[], float] = time.time, *, insecure: bool = False) -> None:
        self.config = config
        self._clock = clock
        self.tls = None if insecure else read_tls(config)
        where = f"{config.source}: " if config.source else ""
        if config.key_file is not None and not config.key_file.exists():
            # A typo must not give the SP a new identity that its upper-SPs then refuse.
            raise ConfigError(
                f"{where}key_file: {config.key_file} does not exist (create it with `fedbroker keys init --out "
                f"{config.key_file}`, or leave key_file out to use sp.key in the data directory)"
            )
        if config.security.accounts_file is not None and not config.security.accounts_file.is_file():
            raise ConfigError(
                f"{where}security.accounts_file: cannot read {config.security.accounts_file} (write it with "
                "`fedbroker certs init --out DIR --client NAME:ROLE`); without it every call would be refused"
            )
        # Note files are read and checked before anything is opened: a bad one names its field and starts nothing.
        domains = [read_note_file(dom, config, clock()) for dom in config.domains]
        self._data_lock = lock_data_dir(config.data_dir)  # before anything in it is opened
        key = load_or_create_key(config.signing_key_path)
        self.accounts = AccountBook(config.accounts_path)
        if not len(self.accounts):
            log.warning(
                "no accounts in %s: every call will be refused (see `fedbroker certs init`)", config.accounts_path
            )
        self.minter = TokenMinter(key, config.sp_id, ttl_s=config.security.call_ttl_s, clock=clock)
        verifier = TokenVerifier(
            config.sp_id, self._trusted_key, own_key=key.public_key(), on_unknown_kid=self.accounts.reload, clock=clock
        )
        self.guard = Guard(verifier, self.accounts, require_tls=self.tls is not None)
        self.audit = AuditLog(config.sp_id, config.audit_log_path, clock)
        self.identity = ClientIdentity(config.sp_id, self.tls, self.minter)
        self.store = open_store(
            config.store.backend,
            path=config.data_dir / "state.db",
            dsn=config.store.dsn,
            owner=config.sp_id,
            replicas=config.store.replicas,
        )
        trust = TrustStore.of({lower.id: lower.keys for lower in config.lower_sps})
        self.catalog = Catalog(
            config.sp_id, clock, key=key, trust=trust, ttl_s=config.note_ttl_s, min_interval_s=NOTE_MIN_INTERVAL_S
        )
        self.faults = Faults(config.faults_file)
        agents: dict[str, DomainAgent] = {}
        local: dict[str, EmulatedDomainAgent] = {}
        # Replicas keep an emulated domain's books (and the memory WIM's services) in the shared store.
        shared_books = StoreLedger(self.store) if config.store.replicas else None
        prefix = config.dataplane.prefix
        # The parts that need a start of their own: data-plane workers, clouds to log in to.
        self._dataplane: list[LinuxWimDriver | NetnsDomainAgent] = []
        self._clouds: list[OpenStackDomainAgent] = []
        for dom in domains:
            agent: EmulatedDomainAgent
            if isinstance(dom, OpenStackDomainConfig):
                from domain_agents.openstack import OpenStackDomainAgent

                agents[dom.id] = cloud = OpenStackDomainAgent(dom, clock, health_interval_s=config.probe_interval_s)
                self._clouds.append(cloud)
                continue
            try:
                if (config.domain_kinds or {}).get(dom.id) == "netns":
                    from domain_agents.netns import NetnsDomainAgent, ProbeSettings

                    probing = ProbeSettings(config.probe_interval_s, config.probe_count, config.probe_timeout_s)
                    agent = netns_agent = NetnsDomainAgent(dom, clock, prefix=prefix, probing=probing)
                    self._dataplane.append(netns_agent)
                else:
                    agent = EmulatedDomainAgent(dom, clock, ledger=shared_books)
            except InvalidArgument as exc:  # a note file promising what the domain cannot keep
                self._data_lock.close()
                raise ConfigError(f"{where}{exc}", field=exc.field) from None
            agents[dom.id] = local[dom.id] = agent
        self.offers = OfferDesk(
            local,
            config.data_dir / "offers.json",
            read_policy=parse_policy,
            shared=self.store if config.store.replicas else None,
            clock=self._clock,
        )
        self._lower_channels: dict[str, grpc.aio.Channel] = {}
        for lower in config.lower_sps:
            # The lower-SP's certificate must name its SP id, whatever address it is reached at.
            # Replicas (several addresses): calls spread over those that pass gRPC health checks.
            channel = open_channel(
                lower.target, self.identity if self.tls else None, server_name=lower.id, balanced=lower.balanced
            )
            self._lower_channels[lower.id] = channel
            agents[lower.id] = ChildBrokerAgent(
                lower.id,
                ",".join(lower.addresses) or lower.address,
                requester=config.sp_id,
                timeout_s=config.lower_timeout_s,
                channel=channel,
                auth=partial(self.identity.metadata, lower.id),
                faults=self.faults,
                failover=lower.balanced,
            )
        self.agents = agents
        capacity = dict(config.wim.capacity_mbps or {})
        # Replicas keep the memory WIM's services in the shared store too, so a label one of them
        # stitched is freed by whichever releases the slice.
        self.wim: WimDriver = MemoryWimDriver(capacity, ledger=shared_books)
        self._linux_wim: LinuxWimDriver | None = None
        if config.wim.driver == "linux":
            from wim.linux import LinuxWimDriver

            self.wim = self._linux_wim = LinuxWimDriver(
                prefix,
                capacity,
                probe_interval_s=config.probe_interval_s,
                probe_count=config.probe_count,
                probe_timeout_s=config.probe_timeout_s,
                clock=clock,
            )
            self._dataplane.insert(0, self._linux_wim)
        self.manager = SliceManager(
            sp_id=config.sp_id,
            faults=self.faults,
            store=self.store,
            agents=agents,
            local_domains=[d.id for d in config.domains],
            wim=self.wim,
            notes=self.catalog.current,
            heard=self.catalog.heard,
            clock=clock,
            default_hold_s=config.hold_time_s,
            child_timeout_s=config.lower_timeout_s,
            activation_timeout_s=config.activation_timeout_s,
        )
        self.reconciler = Reconciler(self.manager, clock, interval_s=config.reconcile_interval_s)
        self.labs = local
        monitor = Monitor(config.sp_id, clear_s=config.monitoring_clear_s)
        self.watchdog = Watchdog(
            self.manager, agents, clock, monitor, qos_loss=self._qos_loss, wim=self.wim, store=self.store
        )
        self.watchdog.set_mode(Mode(config.monitoring_mode), config.monitoring_delta)
        self.metrics: Metrics | None = None
        if config.metrics_listen:
            from broker.api.metrics import Metrics, check_listen

            try:
                check_listen(config.metrics_listen, tls=self.tls is not None)
            except ConfigError as exc:
                raise ConfigError(f"{where}{exc}") from None
            self.metrics = Metrics(config.sp_id, self.manager, self.store, self.catalog, self.watchdog)
        self.orders: OrderDesk | None = None
        self.rest: RestApi | None = None
        self._hub: EventHub | None = None
        if config.rest_listen:
            from broker.api.metrics import check_listen
            from broker.core.orders import OrderDesk

            try:
                check_listen(config.rest_listen, tls=self.tls is not None, setting="rest_listen")
            except ConfigError as exc:
                raise ConfigError(f"{where}{exc}", field="rest_listen") from None
            self.orders = OrderDesk(self.manager, self.store, clock)
        self._server: grpc.aio.Server | None = None
        self._gate: Gate | None = None
        self.login: LoginEndpoint | None = None
        self._sessions: SessionIssuer | None = None
        self._health = health.aio.HealthServicer()
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.address = ""

    def _account_holds(self, principal: Principal) -> bool:
        """Whether the account a kept subscription was made by still exists with the same role."""
        account = self.accounts.get(principal.id)
        return account is not None and account.role is principal.role

    def _account_holds_now(self, principal: Principal) -> bool:
        """``_account_holds`` against the accounts file as it is now (read again at most once a second)."""
        self.accounts.refresh()
        return self._account_holds(principal)

    def _child_connected(self, domain: str) -> None:
        """A lower SP's Watch (re)connected: compare holdings, and ask which alerts fire there now."""
        log.info("the Watch stream of lower SP %s is connected", domain)
        self.reconciler.compare_soon(domain)
        self.watchdog.resync_soon(domain)

    def _qos_loss(self, qos_class: str) -> float | None:
        """The loss the slice's QoS class promises, from the note this SP publishes (None: unknown)."""
        own = self.catalog.own
        for q in own.qos_classes if own is not None else ():
            if q.name == qos_class:
                return q.loss
        return None

    def _trusted_key(self, kid: str) -> TrustedKey | None:
        found = self.accounts.by_key_id(kid)
        return TrustedKey(found[0].id, found[1]) if found else None

    def _spawn(self, coro: object, name: str) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s died", task.get_name(), exc_info=task.exception())

    async def start(self) -> str:
        """Recover state, follow children's notes, serve; returns the bound address."""
        if self._dataplane:
            # Start the data-plane worker process now, in the background, not inside the first activation.
            self._spawn(_warm_up_dataplane(), "dataplane-worker")
            for part in self._dataplane:
                await part.warm_up()  # the link watcher's process, before any activation
        for cloud in self._clouds:
            # A refused login stops the start, naming the setting; a busy cloud is waited for.
            await cloud.connect(patience_s=OPENSTACK_START_PATIENCE_S)
        self._open_events()  # before anything can change a slice: recovery's changes are kept as events too
        await self.manager.recover()
        self.watchdog.restore()  # before serving: the SP above may ask at once what fires here
        for cloud in self._clouds:
            # With what it holds restored: a note file promising what the cloud cannot keep stops the start.
            cloud.check_authored()
        self.offers.restore()
        for agent in self.agents.values():
            self._spawn(self.catalog.follow(agent), f"follow-notes-{agent.domain_id}")
        self._spawn(self.reconciler.run(self._stop), "reconciler")
        for lower in self.config.lower_sps:
            self._spawn(
                self.manager.follow_child(
                    lower.id,
                    on_connect=self._child_connected,
                    on_change=self.reconciler.retry_now,
                    on_alert=self.watchdog.relay,
                ),
                f"follow-{lower.id}",
            )
            self._spawn(
                follow_presence(lower.id, lower.address, self._lower_channels[lower.id]), f"presence-{lower.id}"
            )
        if self.config.store.replicas:  # what the other replicas change, told to this one's watchers
            self._spawn(self.store.follow_changes(self.manager.changed_elsewhere), "replica-changes")
            self._spawn(self.offers.follow(), "replica-offer-edits")
        self._spawn(self._prune_failed(), "prune-failed")
        self._spawn(self.watchdog.run(self._stop), "watchdog")
        server = grpc.aio.server(options=list(SERVER_OPTIONS))
        self._gate = gate = Gate(self.guard, self.audit, self.metrics.observe if self.metrics else None)
        add_servicers(server, self.manager, self.catalog, self.offers, gate, self.store, self.watchdog, self.labs)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable((*SERVICE_NAMES, health.SERVICE_NAME), server)
        host, _, port = self.config.listen.rpartition(":")
        if self.tls is not None:
            creds = grpc.ssl_server_credentials(
                [(self.tls.key, self.tls.cert)], root_certificates=self.tls.ca, require_client_auth=True
            )
        else:
            log.warning(
                "SP %s serves PLAINTEXT (--insecure): no TLS, callers unverified by certificate", self.config.sp_id
            )
        try:
            if self.tls is not None:
                bound = server.add_secure_port(f"{host}:{port}", creds)
            else:
                bound = server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:  # grpc's "Failed to bind": say which setting and what to do
            bound = 0
        if bound == 0:
            raise ConfigError(
                f"listen: cannot listen on {self.config.listen}: the port is in use (another broker?) or the "
                "address is not local; pick a free port, or 0 for any"
            )
        await server.start()
        self._server = server
        self.address = f"{host}:{bound}"
        await self._start_login()
        await self._start_metrics()
        await self._start_rest()
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._write_address()
        log.info("SP %s serving on %s (data in %s)", self.config.sp_id, self.address, self.config.data_dir)
        return self.address

    async def _prune_failed(self) -> None:
        """Keep FAILED records within ``retention`` (a documented time and count); checked every few seconds."""
        keep = self.config.retention
        while not self._stop.is_set():
            removed = self.store.prune_failed(before=self._clock() - keep.failed_s, keep=keep.failed_max)
            if removed:
                log.info("removed %d failed slice record(s) past retention", removed)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), PRUNE_INTERVAL_S)

    def _session_issuer(self) -> SessionIssuer:
        """The one password check and session minter of this broker (its failure counts shared by both surfaces)."""
        if self._sessions is None:
            from broker.security.login import SessionIssuer

            sec = self.config.security
            self._sessions = SessionIssuer(
                self.config.sp_id,
                self.accounts,
                self.minter,
                self.audit,
                session_ttl_s=sec.session_ttl_s,
                clock=self._clock,
            )
        return self._sessions

    async def _start_login(self) -> None:
        sec = self.config.security
        if not sec.login_listen:
            return
        from broker.security.login import LoginEndpoint, server_ssl_context

        ctx = None
        if self.tls is not None:
            assert sec.cert is not None and sec.key is not None
            ctx = server_ssl_context(self.tls.ca, str(sec.cert), str(sec.key))
        self.login = LoginEndpoint(self._session_issuer(), ssl_context=ctx)
        address = await self.login.start(sec.login_listen)
        self._write_file("login_address", address)

    async def _start_metrics(self) -> None:
        if self.metrics is None:
            return
        from broker.security.login import server_ssl_context

        ctx = None
        sec = self.config.security
        if self.tls is not None and sec.cert is not None and sec.key is not None:
            ctx = server_ssl_context(self.tls.ca, str(sec.cert), str(sec.key))
        address = await self.metrics.start(self.config.metrics_listen, ctx)
        self._write_file("metrics_address", address)

    def _open_events(self) -> None:
        """With a REST API: the event hub, whose log numbers and keeps every slice event from now on."""
        if self.orders is None:
            return
        from broker.api.rest_events import EventHub

        self._hub = EventHub(
            self.config.sp_id,
            self.manager,
            self.orders,
            allowed_hosts=self.config.rest_callback_hosts,
            client_ssl=self.identity.ssl_context if self.tls is not None else None,
            monitor=self.watchdog.monitor,
            store=self.store,
            still_allowed=self._account_holds_now,
            keep_events=self.config.retention.events_max,
        )

    async def _start_rest(self) -> None:
        if self.orders is None:
            return
        from broker.api.rest import RestApi
        from broker.api.rest_tmf import TmfApi
        from broker.api.rest_web import FederationView, add_pages, login_handler
        from broker.security.login import server_ssl_context

        ctx = None
        sec = self.config.security
        if self.tls is not None and sec.cert is not None and sec.key is not None:
            ctx = server_ssl_context(self.tls.ca, str(sec.cert), str(sec.key))
        self._spawn(self.orders.run(self._stop), "orders")
        monitor = self.watchdog.monitor
        tmf = TmfApi(self.config.sp_id, self.manager, self.orders, self.store, self.catalog, monitor)
        hub = self._hub
        assert hub is not None  # opened before the recovery (``_open_events``)
        self.accounts.refresh()  # once, for every kept subscription checked against it
        restored = hub.restore(self._account_holds)
        if restored:
            log.info("REST hub: %d subscriptions delivered to again", restored)
        federation = FederationView(self.config.sp_id, self.catalog, self.offers, self._clock)
        handlers = {
            "createServiceOrder": tmf.create_order,
            "listServiceOrder": tmf.list_orders,
            "retrieveServiceOrder": tmf.get_order,
            "createCancelServiceOrder": tmf.create_cancel,
            "listCancelServiceOrder": tmf.list_cancels,
            "retrieveCancelServiceOrder": tmf.get_cancel,
            "registerListener": hub.register,
            "retrieveListener": hub.retrieve,
            "unregisterListener": hub.unregister,
            "streamEvents": hub.stream,
            "listService": tmf.list_services,
            "retrieveService": tmf.get_service,
            "deleteService": tmf.delete_service,
            "listServiceSpecification": tmf.list_specs,
            "retrieveServiceSpecification": tmf.get_spec,
            "retrieveFederation": federation.retrieve,
            "listOffer": federation.list_offers,
            "patchOffer": federation.patch_offer,
        }
        observe = self.metrics.observe if self.metrics else None
        self.rest = RestApi(
            self.config.sp_id,
            self.guard,
            self.audit,
            handlers,
            public={"createSession": login_handler(self._session_issuer())},
            observe=observe,
            pages=add_pages,
        )
        try:
            address = await self.rest.start(self.config.rest_listen, ctx)
        except OSError as exc:
            raise ConfigError(
                f"rest_listen: cannot listen on {self.config.rest_listen} ({exc.strerror or exc}); pick a free port, "
                "or 0 for any",
                field="rest_listen",
            ) from None
        self._write_file("rest_address", address)

    def _write_file(self, name: str, text: str) -> None:
        path = self.config.data_dir / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, path)

    def _write_address(self) -> None:
        self._write_file("address", self.address)

    async def stop(self, grace_s: float = 2.0) -> None:
        """Stop serving, cancel background work, close connections and the store."""
        self._stop.set()
        with contextlib.suppress(Exception):
            await self._health.enter_graceful_shutdown()
        if self._gate is not None:
            self._gate.close_streams()  # the grace time is for operations in flight, not for endless streams
        if self._server is not None:
            await self._server.stop(grace_s)
        if self.login is not None:
            await self.login.stop()
        if self.metrics is not None:
            await self.metrics.stop()
        if self._hub is not None:
            await self._hub.close()  # the SSE streams end, so the REST runner need not wait for them
        if self.rest is not None:
            await self.rest.stop()
        with contextlib.suppress(TimeoutError):  # operations in flight get the grace time to finish
            await asyncio.wait_for(self.manager.drain(), timeout=grace_s)
        await self.manager.cancel_running()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.catalog.close()
        for agent in self.agents.values():
            await agent.close()
        if self._linux_wim is not None:
            await self._linux_wim.close()
        for name in ("address", "login_address", "metrics_address", "rest_address"):
            with contextlib.suppress(FileNotFoundError):
                (self.config.data_dir / name).unlink()
        self.store.close()
        self.audit.close()
        self._data_lock.close()

    async def wait(self) -> None:
        """Run until ``stop`` is called."""
        await self._stop.wait()


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Hold ``data_dir/lock`` for this process's life: a second broker on the same data is refused."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fh = (data_dir / "lock").open("a+", encoding="utf-8")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "?"
        fh.close()
        raise ConfigError(
            f"data_dir: {data_dir} is in use by another broker (pid {holder}); stop it, or give this one "
            "its own data_dir"
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


async def _warm_up_dataplane() -> None:
    from wim import netlink

    await netlink.call(netlink.namespaces)


async def serve(config: BrokerConfig, *, insecure: bool = False) -> None:
    """Run a broker until SIGTERM or SIGINT."""
    import signal

    broker = Broker(config, insecure=insecure)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, broker._stop.set)
    await broker.start()
    try:
        await broker.wait()
    finally:
        log.info("SP %s stopping", config.sp_id)
        await broker.stop()
