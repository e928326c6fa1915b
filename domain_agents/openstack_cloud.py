"""Thin, typed, synchronous verbs over openstacksdk for the OpenStack domain agent.

Everything here blocks (openstacksdk is synchronous): the agent calls it through
``asyncio.to_thread``. Every openstacksdk / keystoneauth exception is translated here into the
fedbroker error tree, so the agent only ever sees ``FedError``::

    409 "tunnel ID … in use"          -> VniInUse (a ResourceExhausted naming the VNI)
    409 "No more IP addresses …"      -> ResourceExhausted naming the subnet
    409 Placement capacity            -> ResourceExhausted with Placement's reason
    409 Placement generation conflict -> Unavailable (retryable) naming the consumer / provider
    401 / 403                         -> Unauthenticated / PermissionDenied
    404                               -> NotFound
    400                               -> InvalidArgument (``field`` given by the caller)
    5xx, connection failures          -> Unavailable (retryable)

    no answer within ``api_timeout_s`` -> NoAnswer (an Unavailable: the call's effect is unknown)

Every Neutron object a segment makes is named for its reservation from its first call
(``fedbroker-<domain>-<consumer uuid>``, ports ``…:<terminal>``: this Neutron takes no tags in a
create request) and tagged (``fedbroker-res:<consumer uuid>``, the domain's tag, the hold deadline)
in the next; deleting "everything of a reservation" and the sweep find objects by tag or by name,
so one whose tagging a crash or a timeout cut off is found too.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openstack
import openstack.config
import openstack.connection
import openstack.exceptions
import openstack.warnings
from keystoneauth1 import exceptions as ks_exc

from capability_catalog.model import TerminalId
from domain_agents.openstack_model import (
    CONSUMER_TYPE,
    PLACEMENT_VERSION,
    Credentials,
    MadeNetwork,
    NetworkSpec,
    NoAnswer,
    VniInUse,
    consumer_of,
    domain_tag,
    hold_tag,
    object_name,
    reservation_tag,
)
from slicing.errors import (
    FedError,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger(__name__)

_GENERATION_RETRIES = 3


def _detail(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    if details:
        return str(details)
    return str(exc)


def _status(exc: BaseException) -> tuple[int | None, str]:
    """The HTTP status and detail of an openstacksdk or keystoneauth error (None when it has none)."""
    if isinstance(exc, openstack.exceptions.HttpException):
        return exc.status_code, _detail(exc)
    if isinstance(exc, ks_exc.HttpError):
        return exc.http_status, str(exc)
    return None, str(exc)


def translate(
    exc: Exception, doing: str, *, field: str = "", service: str = "OpenStack", timeout_s: float | None = None
) -> FedError:
    """An openstacksdk/keystoneauth exception as a ``FedError`` whose message says what was being done."""
    if isinstance(exc, FedError):
        return exc
    inner = exc.__cause__ or exc.__context__
    for candidate in (exc, inner):
        if isinstance(candidate, ks_exc.ConnectTimeout):
            within = f" within {timeout_s:g} s" if timeout_s is not None else " in time"
            return NoAnswer(f"{doing}: {service} did not answer{within} ({candidate})")
    status, detail = _status(exc)
    if status is None and isinstance(inner, ks_exc.HttpError):
        # openstacksdk wraps keystoneauth's answer (e.g. a 401 while logging in) in a bare SDKException.
        status, detail = _status(inner)
    if status is not None:
        if status == 401:
            return Unauthenticated(f"{doing}: Keystone refused the credentials ({detail})")
        if status == 403:
            return PermissionDenied(f"{doing}: not allowed ({detail})")
        if status == 404:
            return NotFound(f"{doing}: not found ({detail})")
        if status == 409:
            if "No more IP addresses" in detail:
                return ResourceExhausted(f"{doing}: the address pool is exhausted ({detail})")
            return Unavailable(f"{doing}: conflict, try again ({detail})")
        if status == 400:
            if field:
                return InvalidArgument(field, f"{doing}: refused by OpenStack ({detail})")
            return Internal(f"{doing}: OpenStack refused the request ({detail})")
        if status >= 500:
            return Unavailable(f"{doing}: OpenStack failed ({status}: {detail})")
        return Internal(f"{doing}: unexpected answer {status} ({detail})")
    if isinstance(exc, ks_exc.ConnectFailure | ks_exc.DiscoveryFailure):
        return Unavailable(f"{doing}: cannot reach {service} ({exc})")
    if isinstance(exc, ks_exc.ClientException | openstack.exceptions.SDKException | OSError):
        return Unavailable(f"{doing}: {exc}")
    return Internal(f"{doing}: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def _translated(
    doing: str, *, field: str = "", service: str = "OpenStack", timeout_s: float | None = None
) -> Iterator[None]:
    try:
        yield
    except FedError:
        raise
    except (openstack.exceptions.SDKException, ks_exc.ClientException, OSError) as exc:
        raise translate(exc, doing, field=field, service=service, timeout_s=timeout_s) from exc


@dataclass(frozen=True)
class Found:
    """Neutron objects of one domain (or one reservation), by tag or by name."""

    networks: tuple[Any, ...] = ()
    subnets: tuple[Any, ...] = ()
    ports: tuple[Any, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.networks or self.subnets or self.ports)

    def consumers(self, domain: str) -> set[str]:
        """The reservations these objects belong to."""
        found = (consumer_of(domain, o) for o in (*self.networks, *self.subnets, *self.ports))
        return {c for c in found if c}


class Cloud:
    """One authenticated connection to Keystone, Placement and Neutron, with the verbs the agent needs."""

    def __init__(self, creds: Credentials) -> None:
        self.creds = creds
        self._conn = self._connect(creds)
        finding = "finding Placement in the Keystone catalog"
        with _translated(finding, service="Keystone", timeout_s=creds.api_timeout_s):
            self._placement_url = str(self._conn.endpoint_for("placement")).rstrip("/")

    @staticmethod
    def _connect(creds: Credentials) -> openstack.connection.Connection:
        setting = creds.setting()
        try:
            with warnings.catch_warnings():
                # openstacksdk warns about its own defaults (an empty InfluxDB section); nothing to act on.
                warnings.simplefilter("ignore", openstack.warnings.RemovedInSDK60Warning)
                conn = Cloud._open(creds)
            conn.authorize()
        except openstack.exceptions.ConfigException as exc:
            raise InvalidArgument(setting, f"no usable OpenStack cloud: {exc}") from None
        except (openstack.exceptions.SDKException, ks_exc.ClientException) as exc:
            err = translate(
                exc, f"logging in to Keystone with {setting}", service="Keystone", timeout_s=creds.api_timeout_s
            )
            if isinstance(err, Unauthenticated | PermissionDenied):
                err.field = setting
            raise err from None
        return conn

    @staticmethod
    def _open(creds: Credentials) -> openstack.connection.Connection:
        if creds.cloud:
            files = [str(Path(creds.clouds_file).expanduser())] if creds.clouds_file else None
            cfg = openstack.config.OpenStackConfig(config_files=files) if files else openstack.config.OpenStackConfig()
            # api_timeout becomes the keystoneauth session's timeout: every request (logins too) is bounded.
            region = cfg.get_one(cloud=creds.cloud, api_timeout=creds.api_timeout_s)
            return openstack.connection.Connection(config=region)
        # openstack.connect's typed positional parameters hide that it takes Keystone settings as keywords.
        connect: Any = openstack.connect
        conn: openstack.connection.Connection = connect(
            load_yaml_config=False, load_envvars=False, api_timeout=creds.api_timeout_s, **dict(creds.auth or {})
        )
        return conn

    def _neutron(self, doing: str, *, field: str = "") -> contextlib.AbstractContextManager[None]:
        return _translated(doing, field=field, service="Neutron", timeout_s=self.creds.api_timeout_s)

    @property
    def project_id(self) -> str:
        """The project the service account is scoped to."""
        return str(self._conn.current_project_id)

    @property
    def user_id(self) -> str:
        """The service account's user id."""
        return str(self._conn.current_user_id)

    def close(self) -> None:
        """Close the HTTP sessions."""
        self._conn.close()

    # --- Placement ----------------------------------------------------------------------------

    def _placement(self, method: str, path: str, doing: str, body: object = None) -> tuple[int, Any]:
        with _translated(doing, service="Placement", timeout_s=self.creds.api_timeout_s):
            # The raw keystoneauth session: openstacksdk's Placement proxy covers no allocations.
            resp = self._conn.session.request(
                self._placement_url + path,
                method,
                json=body,
                headers={"OpenStack-API-Version": f"placement {PLACEMENT_VERSION}"},
                raise_exc=False,
            )
        status = int(resp.status_code)
        try:
            data = resp.json() if resp.content else None
        except ValueError:
            data = None
        return status, data

    @staticmethod
    def _placement_error(status: int, data: Any, doing: str) -> FedError:
        errors = data.get("errors", []) if isinstance(data, dict) else []
        first = errors[0] if errors else {}
        detail = str(first.get("detail", "")).replace("\n", " ").strip() or f"HTTP {status}"
        code = str(first.get("code", ""))
        if status == 409 and code == "placement.concurrent_update":
            return Unavailable(f"{doing}: Placement generation conflict, another writer got there first ({detail})")
        if status == 409:
            return ResourceExhausted(f"{doing}: Placement refused ({detail})")
        if status in (401, 403):
            return PermissionDenied(f"{doing}: Placement refused the service account ({detail})")
        if status >= 500:
            return Unavailable(f"{doing}: Placement failed ({detail})")
        return Internal(f"{doing}: Placement answered {status} ({detail})")

    def provider(self, name: str) -> str | None:
        """The uuid of the resource provider with that name, if it exists."""
        status, data = self._placement("GET", f"/resource_providers?name={name}", f"finding provider {name}")
        if status != 200:
            raise self._placement_error(status, data, f"finding provider {name}")
        found = data.get("resource_providers", [])
        return str(found[0]["uuid"]) if found else None

    def ensure_provider(self, name: str, inventory: Mapping[str, int]) -> str:
        """Create the provider if missing and set its inventory to ``inventory`` (custom classes too)."""
        uuid = self.provider(name)
        if uuid is None:
            status, data = self._placement("POST", "/resource_providers", f"creating provider {name}", {"name": name})
            if status not in (200, 201):
                raise self._placement_error(status, data, f"creating provider {name}")
            uuid = str(data["uuid"])
        for cls in inventory:
            if cls.startswith("CUSTOM_"):
                status, data = self._placement("PUT", f"/resource_classes/{cls}", f"creating resource class {cls}")
                if status not in (201, 204):
                    raise self._placement_error(status, data, f"creating resource class {cls}")
        doing = f"setting the inventory of provider {name}"
        for _ in range(_GENERATION_RETRIES):
            status, data = self._placement("GET", f"/resource_providers/{uuid}/inventories", doing)
            if status != 200:
                raise self._placement_error(status, data, doing)
            current = {k: int(v["total"]) for k, v in data["inventories"].items()}
            if current == dict(inventory):
                return uuid
            body = {
                "resource_provider_generation": data["resource_provider_generation"],
                "inventories": {k: {"total": int(v)} for k, v in inventory.items()},
            }
            status, data = self._placement("PUT", f"/resource_providers/{uuid}/inventories", doing, body)
            if status == 200:
                return uuid
            err = self._placement_error(status, data, doing)
            if not isinstance(err, Unavailable):
                raise err
        raise Unavailable(f"{doing}: generation conflicts {_GENERATION_RETRIES} times in a row")

    def free(self, uuid: str, name: str) -> dict[str, int]:
        """What the provider can still give, per resource class: (total - reserved) × ratio - used."""
        doing = f"reading the capacity of provider {name}"
        status, inv = self._placement("GET", f"/resource_providers/{uuid}/inventories", doing)
        if status != 200:
            raise self._placement_error(status, inv, doing)
        status, use = self._placement("GET", f"/resource_providers/{uuid}/usages", doing)
        if status != 200:
            raise self._placement_error(status, use, doing)
        used = use.get("usages", {})
        out = {}
        for cls, v in inv.get("inventories", {}).items():
            cap = int((int(v["total"]) - int(v.get("reserved", 0))) * float(v.get("allocation_ratio", 1.0)))
            out[cls] = max(0, cap - int(used.get(cls, 0)))
        return out

    def consumers(self, uuid: str, name: str) -> set[str]:
        """The consumers holding allocations on a provider."""
        doing = f"reading the allocations on provider {name}"
        status, data = self._placement("GET", f"/resource_providers/{uuid}/allocations", doing)
        if status != 200:
            raise self._placement_error(status, data, doing)
        return set(data.get("allocations", {}))

    def allocate(self, consumer: str, resources: Mapping[str, Mapping[str, int]]) -> None:
        """Allocate ``{provider uuid: {class: amount}}`` to a new consumer, all or nothing."""
        doing = f"allocating in Placement for consumer {consumer}"
        body = {
            "allocations": {rp: {"resources": dict(res)} for rp, res in resources.items() if res},
            "project_id": self.project_id,
            "user_id": self.user_id,
            "consumer_generation": None,
            "consumer_type": CONSUMER_TYPE,
        }
        status, data = self._placement("PUT", f"/allocations/{consumer}", doing, body)
        if status != 204:
            raise self._placement_error(status, data, doing)

    def allocations(self, consumer: str) -> dict[str, dict[str, int]]:
        """The consumer's allocations, ``{provider uuid: {class: amount}}`` (empty when none)."""
        doing = f"reading the allocations of consumer {consumer}"
        status, data = self._placement("GET", f"/allocations/{consumer}", doing)
        if status != 200:
            raise self._placement_error(status, data, doing)
        return {rp: {k: int(v) for k, v in a["resources"].items()} for rp, a in data.get("allocations", {}).items()}

    def release(self, consumer: str) -> None:
        """Delete the consumer's allocations; none is not an error."""
        doing = f"releasing the allocations of consumer {consumer}"
        status, data = self._placement("DELETE", f"/allocations/{consumer}", doing)
        if status not in (204, 404):
            raise self._placement_error(status, data, doing)

    # --- Neutron ------------------------------------------------------------------------------

    def used_vnis(self) -> set[int]:
        """Every VXLAN VNI any Neutron network uses now (single- and multi-segment networks)."""
        used: set[int] = set()
        with self._neutron("listing Neutron networks"):
            for net in self._conn.network.networks():
                if net.provider_network_type == "vxlan" and net.provider_segmentation_id is not None:
                    used.add(int(net.provider_segmentation_id))
                for seg in net.segments or ():
                    if seg.get("provider:network_type") == "vxlan" and seg.get("provider:segmentation_id") is not None:
                        used.add(int(seg["provider:segmentation_id"]))
        return used

    def make_network(self, spec: NetworkSpec) -> MadeNetwork:
        """Network (VXLAN on the given VNIs), subnet and ports, each named for the reservation from its create
        request on and tagged right after; on any failure none of what this call made stays.

        A create that got no answer may still take effect later: its object carries the name, so
        ``delete_reservation`` and the sweep find it.
        """
        tags = [reservation_tag(spec.consumer), domain_tag(spec.domain), hold_tag(spec.hold_until)]
        name = object_name(spec.domain, spec.consumer)
        description = f"fedbroker order {spec.key}, held until {spec.hold_until}"[:255]
        net_id = ""
        try:
            attrs: dict[str, Any] = {"name": name, "description": description, "admin_state_up": False}
            if len(spec.vnis) == 1:
                attrs.update(provider_network_type="vxlan", provider_segmentation_id=spec.vnis[0])
            elif spec.vnis:
                attrs["segments"] = [
                    {"provider:network_type": "vxlan", "provider:segmentation_id": v} for v in spec.vnis
                ]
            try:
                net = self._conn.network.create_network(**attrs)
            except openstack.exceptions.ConflictException as exc:
                detail = _detail(exc)
                vni = next((v for v in spec.vnis if f"tunnel ID {v} " in detail), None)
                if vni is not None:
                    raise VniInUse(vni, detail) from None
                raise
            net_id = str(net.id)
            self._conn.network.set_tags(net, tags)
            with self._neutron(f"making subnet {spec.subnet}", field="request.subnet"):
                sub = self._conn.network.create_subnet(
                    network_id=net_id, cidr=spec.subnet, ip_version=_ip_version(spec.subnet),
                    gateway_ip=None, enable_dhcp=False, name=name, description=description,
                )  # fmt: skip
            self._conn.network.set_tags(sub, tags)
            port_ids: dict[TerminalId, str] = {}
            addresses: dict[TerminalId, str] = {}
            prefix = spec.subnet.rsplit("/", 1)[1]
            for p in spec.ports:
                attrs = {
                    "network_id": net_id,
                    "name": object_name(spec.domain, spec.consumer, p.terminal),
                    "description": description,
                }
                if not p.with_address:
                    attrs["fixed_ips"] = []
                try:
                    port = self._conn.network.create_port(**attrs)
                except openstack.exceptions.ConflictException as exc:
                    if "No more IP addresses" in _detail(exc):
                        raise ResourceExhausted(
                            f"no free address left in subnet {spec.subnet} for {p.terminal} (Neutron: {_detail(exc)})"
                        ) from None
                    raise
                self._conn.network.set_tags(port, tags)
                port_ids[p.terminal] = str(port.id)
                if p.with_address and port.fixed_ips:
                    addresses[p.terminal] = f"{port.fixed_ips[0]['ip_address']}/{prefix}"
            return MadeNetwork(net_id, port_ids, addresses)
        except BaseException as exc:
            err: BaseException = exc
            if isinstance(exc, openstack.exceptions.SDKException | ks_exc.ClientException):
                err = translate(
                    exc, f"making the Neutron network of {spec.key or name}", service="Neutron",
                    timeout_s=self.creds.api_timeout_s,
                )  # fmt: skip
            try:
                # Only what this attempt made: the network (its subnet and ports go with it).
                if net_id:
                    self.delete_network(net_id)
            except FedError as cleanup:
                log.error("cleaning up the half-made network of %s failed: %s", spec.consumer, cleanup)
            if err is not exc:
                raise err from exc
            raise

    def find(self, domain: str, consumer: str) -> Found:
        """The networks, subnets and ports of one reservation, tagged or only named for it."""
        tag = reservation_tag(consumer)
        name = object_name(domain, consumer)
        with self._neutron(f"finding the Neutron objects of {consumer}"):
            nets = {n.id: n for n in self._conn.network.networks(tags=[tag])}
            nets.update((n.id, n) for n in self._conn.network.networks(name=name))
            subnets = {s.id: s for s in self._conn.network.subnets(tags=[tag])}
            subnets.update((s.id, s) for s in self._conn.network.subnets(name=name))
            ports = {p.id: p for p in self._conn.network.ports(tags=[tag])}
            for net_id in nets:
                ports.update((p.id, p) for p in self._conn.network.ports(network_id=net_id))
        return Found(tuple(nets.values()), tuple(subnets.values()), tuple(ports.values()))

    def domain_objects(self, domain: str) -> Found:
        """Every network, subnet and port ``domain``'s agent made: with its tag, or with a name marking it ours."""
        with self._neutron(f"listing the Neutron objects of domain {domain}"):
            nets = [n for n in self._conn.network.networks() if consumer_of(domain, n)]
            subnets = [s for s in self._conn.network.subnets() if consumer_of(domain, s)]
            ports = [p for p in self._conn.network.ports() if consumer_of(domain, p)]
        return Found(tuple(nets), tuple(subnets), tuple(ports))

    def networks(self, tag: str) -> list[Any]:
        """Networks carrying ``tag``."""
        with self._neutron(f"listing networks tagged {tag}"):
            return list(self._conn.network.networks(tags=[tag]))

    def get_network(self, network_id: str) -> Any | None:
        """One network by id, or None when it is gone."""
        with self._neutron(f"reading network {network_id}"):
            return self._conn.network.find_network(network_id, ignore_missing=True)

    def ports(self, tag: str) -> list[Any]:
        """Ports carrying ``tag``."""
        with self._neutron(f"listing ports tagged {tag}"):
            return list(self._conn.network.ports(tags=[tag]))

    def segment_health(self, network_id: str, terminals: Iterable[str]) -> str:
        """Why a segment's network cannot carry traffic now, read from Neutron ("" when it can).

        Down: the network is gone, admin down or not ACTIVE; a terminal's port is gone, admin down or
        in ERROR. A port's DOWN is not counted: it is what an unbound port reports (no agent binds a
        fedbroker port), so it says nothing about the segment.
        """
        with self._neutron(f"reading the status of network {network_id}"):
            net = self._conn.network.find_network(network_id, ignore_missing=True)
            if net is None:
                return "its network is gone"
            if not net.is_admin_state_up:
                return "its network is admin down"
            if net.status != "ACTIVE":
                return f"its network is {net.status}"
            ports = {str(p.name).rsplit(":", 1)[-1]: p for p in self._conn.network.ports(network_id=network_id)}
        for term in sorted(terminals):
            port = ports.get(term)
            if port is None:
                return f"the port of {term} is gone"
            if not port.is_admin_state_up:
                return f"the port of {term} is admin down"
            if port.status == "ERROR":
                return f"the port of {term} is in ERROR"
        return ""

    def add_tag(self, network_id: str, tag: str) -> None:
        """Tag a network (e.g. committed)."""
        with self._neutron(f"tagging network {network_id}"):
            net = self._conn.network.get_network(network_id)
            self._conn.network.add_tag(net, tag)

    def retag(self, found: Found, tags: list[str]) -> None:
        """Give every object found the tags it is missing (after a crash cut its tagging off)."""
        with self._neutron("tagging Neutron objects"):
            for obj in (*found.networks, *found.subnets, *found.ports):
                have = set(obj.tags or ())
                if not set(tags) <= have:
                    self._conn.network.set_tags(obj, sorted(have | set(tags)))

    def set_admin_state(self, network_id: str, up: bool) -> None:
        """Bring a network into service (or out of it)."""
        with self._neutron(f"updating network {network_id}"):
            self._conn.network.update_network(network_id, admin_state_up=up)

    def delete_network(self, network_id: str) -> None:
        """Delete one network with every port on it (its subnets go with it); a missing one is fine."""
        with self._neutron(f"deleting network {network_id}"):
            for port in self._conn.network.ports(network_id=network_id):
                self._conn.network.delete_port(port, ignore_missing=True)
            self._conn.network.delete_network(network_id, ignore_missing=True)

    def delete_reservation(self, domain: str, consumer: str) -> None:
        """Delete every port and network of the reservation, tagged or only named for it (subnets go with
        their network; one left without its network is deleted too)."""
        found = self.find(domain, consumer)
        with self._neutron(f"deleting the Neutron objects of {consumer}"):
            for port in found.ports:
                self._conn.network.delete_port(port, ignore_missing=True)
            for net in found.networks:
                for port in self._conn.network.ports(network_id=net.id):
                    self._conn.network.delete_port(port, ignore_missing=True)
                self._conn.network.delete_network(net, ignore_missing=True)
            gone = {n.id for n in found.networks}
            for sub in found.subnets:
                if sub.network_id not in gone:
                    self._conn.network.delete_subnet(sub, ignore_missing=True)


def _ip_version(cidr: str) -> int:
    return 6 if ":" in cidr else 4
