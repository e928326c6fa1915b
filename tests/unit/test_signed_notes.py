"""Capability notes end to end in one process: authoring, canonical bytes, signatures, aggregation, expiry."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from broker.core import reservation
from broker.core.catalog import Catalog
from broker.core.lifecycle import SliceManager
from broker.store.sqlite import SqliteStore
from capability_catalog.aggregate import aggregate
from capability_catalog.authoring import OfferPolicy, policy_to_dict
from capability_catalog.canonical import CanonicalError, normalised, note_from_canonical, note_to_canonical
from capability_catalog.model import (
    BorderPort,
    CapabilityNote,
    Endpoint,
    FunctionOffer,
    Isolation,
    LabelRange,
    LabelSet,
    QosClass,
    SpId,
    TerminalId,
    Transit,
)
from capability_catalog.signing import (
    NoteRejected,
    RejectReason,
    SignedNote,
    TrustStore,
    generate_key,
    key_id_of,
    public_key_from_text,
    public_key_to_text,
    sign_note,
    verify_note,
)
from domain_agents.emulated import EmulatedDomainAgent, EmulatedDomainConfig
from schemas.note import parse_note, parse_policy, validate_authoring
from slicing.errors import InvalidArgument, Unavailable
from slicing.model import SliceRequest, SliceState
from tests.topology import leaf_domain
from wim.memory import MemoryWimDriver

EXAMPLE = Path(__file__).resolve().parents[2] / "scenarios" / "examples" / "note.yaml"
NOW = 1_800_000_000.0
T = TerminalId


def example() -> dict[str, object]:
    data = yaml.safe_load(EXAMPLE.read_text())
    assert isinstance(data, dict)
    return data


def rich_note() -> CapabilityNote:
    note, problems = parse_note(example(), NOW)
    assert problems == [] and note is not None
    return note


# --- authoring ------------------------------------------------------------------------------------


def test_the_documented_example_note_is_valid_and_carries_every_part() -> None:
    note = rich_note()
    assert note.sp_id == "L1" and note.version == 12 and note.expires_at == NOW + 3600
    port = note.ports[0]
    assert port.labels == LabelSet.of([LabelRange(1000, 1999)])
    assert port.local_labels == LabelSet.of([LabelRange(100, 199)])
    assert {f.type: (f.site, f.slots, f.throughput_mbps) for f in note.functions} == {
        "firewall": ("ams", 4, 2000),
        "nat": ("utr", 2, 1000),
    }
    gold = note.qos_class("gold")
    assert gold is not None and dict(gold.native) == {"dscp": "46", "mpls_tc": "5"} and gold.delay_ms == 5
    assert note.isolation == (Isolation.DEDICATED_POP, Isolation.SHARED, Isolation.VXLAN)  # sorted by name
    assert note.address_pools == ("10.64.0.0/16", "2001:db8:64::/48")
    assert note.carries("L4", "L2") and not note.carries("L2", "L3")
    assert note.price_per_mbps_hour == 0.002


def test_validation_reports_every_problem_with_its_path() -> None:
    data = example()
    ports = data["border_ports"]
    assert isinstance(ports, list)
    ports.append({**ports[0], "id": "L1.to-L3", "label_ranges": ["5000-4000"]})
    ports.append({**ports[0], "id": "L1.to-L4", "label_type": "vlan", "label_ranges": ["4000-5000"]})
    ports.append({**ports[0], "id": "L1.to-L5", "local_label_ranges": ["1500"]})
    data["transit"] = [{"a": "L1.ams", "b": "L1.nowhere", "latency_ms": -1}]
    data["isolation"] = ["vxlan", "telepathy"]
    data["address_pools"] = ["10.64.0.0/16", "10.64.1.0/24", "10.0.0.1/8"]
    data["qos_classes"] = [{"name": "gold", "loss": 2}]
    data["colour"] = "blue"
    problems = validate_authoring(data, NOW)
    expected = [
        "border_ports[1].label_ranges[0]: 5000-4000 is empty",
        "border_ports[3].local_label_ranges: 1500-1500 is also offered",
        "border_ports[2].label_ranges[0]: 4000-5000 is outside vlan labels 1-4094",
        "transit[0].b: 'L1.nowhere' is not a declared endpoint or border port",
        "transit[0].latency_ms: -1 must be a number between 0 and 3.6e+06",
        "isolation[1]: 'telepathy' is not one of",
        "address_pools[1]: 10.64.1.0/24 overlaps 10.64.0.0/16",
        "address_pools[2]: '10.0.0.1/8' is not a prefix",
        "qos_classes[0].loss: 2 must be a number between 0 and 1",
        "colour: unknown field",
    ]
    for needle in expected:
        assert any(p.startswith(needle) for p in problems), (needle, problems)
    assert parse_note(data, NOW)[0] is None


def test_catalog_validate_command_prints_paths_and_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from broker.cli import main

    bad = example()
    bad["border_ports"][0]["label_ranges"] = ["1999-1000"]  # type: ignore[index]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert main(["catalog", "validate", str(path)]) == 1
    assert f"{path}: border_ports[0].label_ranges[0]: 1999-1000 is empty" in capsys.readouterr().out
    assert main(["catalog", "validate", str(EXAMPLE)]) == 0


def test_offer_policy_round_trips_through_its_authoring_form() -> None:
    note = rich_note()
    policy = OfferPolicy(note.qos_classes, note.isolation, note.address_pools, note.transit_policy, 0.5, True)
    again, problems = parse_policy(policy_to_dict(policy))
    assert problems == [] and again == policy


# --- canonical encoding ---------------------------------------------------------------------------


def test_canonical_bytes_are_sorted_compact_json_with_integers_only() -> None:
    payload = note_to_canonical(rich_note())
    data = json.loads(payload)
    assert payload == json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    def numbers(x: object) -> list[object]:
        if isinstance(x, dict):
            return [n for v in x.values() for n in numbers(v)]
        if isinstance(x, list):
            return [n for v in x for n in numbers(v)]
        return [x] if isinstance(x, int | float) and not isinstance(x, bool) else []

    assert all(isinstance(n, int) for n in numbers(data))
    assert data["transit"][0]["latency_us"] == 2500 and data["price_micro"] == 2000


def test_canonical_form_is_independent_of_the_order_sets_are_listed_in() -> None:
    note = rich_note()
    shuffled = replace(
        note,
        endpoints=note.endpoints[::-1],
        transit=note.transit[::-1],
        functions=note.functions[::-1],
        isolation=note.isolation[::-1],
    )
    assert note_to_canonical(shuffled) == note_to_canonical(note)
    assert note_from_canonical(note_to_canonical(note)) == normalised(shuffled)


def test_non_canonical_or_malformed_payloads_are_refused_naming_the_problem() -> None:
    payload = note_to_canonical(rich_note())
    spaced = json.dumps(json.loads(payload), sort_keys=True).encode()  # same content, other spacing
    with pytest.raises(CanonicalError, match="not in canonical form"):
        note_from_canonical(spaced)
    data = json.loads(payload)
    data["ports"][0]["capacity_mbps"] = "lots"
    with pytest.raises(CanonicalError, match=r"ports\[0\]\.capacity_mbps: must be int"):
        note_from_canonical(json.dumps(data, sort_keys=True, separators=(",", ":")).encode())
    data = json.loads(payload)
    data["format"] = "fedbroker-note/0"
    with pytest.raises(CanonicalError, match="format"):
        note_from_canonical(json.dumps(data, sort_keys=True, separators=(",", ":")).encode())


ids = st.from_regex(r"[a-z][a-z0-9.]{0,10}", fullmatch=True)


@given(
    eps=st.lists(st.tuples(ids, st.integers(0, 10**6)), max_size=4, unique_by=lambda x: x[0]),
    lat=st.integers(0, 10**7),
    price=st.none() | st.integers(0, 10**9),
    ranges=st.lists(st.tuples(st.integers(1, 10**6), st.integers(0, 1000)), max_size=4),
    text=st.text(max_size=12),
)
def test_any_note_survives_the_canonical_round_trip(
    eps: list[tuple[str, int]], lat: int, price: int | None, ranges: list[tuple[int, int]], text: str
) -> None:
    note = CapabilityNote(
        sp_id=SpId("S"),
        version=3,
        issued_at=1_700_000_000.123,
        expires_at=1_700_003_600.5,
        endpoints=tuple(Endpoint(T(e), text, cap, text[::-1]) for e, cap in eps),
        ports=(BorderPort(T("S.p"), SpId("P"), T("P.s"), labels=LabelSet.of(LabelRange(a, a + n) for a, n in ranges)),),
        transit=(Transit(T("S.p"), T("S.q"), lat / 1000, 5),),
        qos_classes=(QosClass(text or "q", (("dscp", text),), lat / 1000, 0.25),),
        price_per_mbps_hour=None if price is None else price / 1e6,
    )
    payload = note_to_canonical(note)
    assert note_from_canonical(payload) == normalised(note)
    assert note_to_canonical(note_from_canonical(payload)) == payload


# --- signing --------------------------------------------------------------------------------------

KEY, OTHER = generate_key(), generate_key()
TRUST = TrustStore.of({"L1": [public_key_to_text(KEY.public_key())]})


def verify(signed: SignedNote, *, expected: str = "L1", held: int | None = None, now: float = NOW) -> CapabilityNote:
    return verify_note(signed, TRUST, expected_sp=expected, held_version=held, now=now)


def reason(signed: SignedNote, **kw: object) -> RejectReason:
    with pytest.raises(NoteRejected) as info:
        verify(signed, **kw)  # type: ignore[arg-type]
    return info.value.reason


def test_a_signed_note_verifies_and_decodes_to_what_was_signed() -> None:
    note = rich_note()
    signed = sign_note(note, KEY, "L1")
    assert signed.key_id == key_id_of(KEY.public_key()) and len(signed.signature) == 64
    assert verify(signed) == normalised(note)


def test_each_way_a_note_can_be_wrong_has_its_reason() -> None:
    note = rich_note()
    good = sign_note(note, KEY, "L1")
    assert reason(replace(good, payload=good.payload.replace(b"Amsterdam", b"Rotterdam"))) == "BAD_SIGNATURE"
    assert reason(sign_note(note, OTHER, "L1")) == "BAD_SIGNATURE"  # L1's name, another key
    assert reason(replace(good, key_id=key_id_of(OTHER.public_key()))) == "BAD_SIGNATURE"
    assert reason(sign_note(replace(note, sp_id=SpId("X")), OTHER, "X")) == "UNKNOWN_SIGNER"
    assert reason(good, expected="L2") == "SIGNER_MISMATCH"  # a valid L1 note on L2's feed
    assert reason(sign_note(replace(note, sp_id=SpId("L9")), KEY, "L1")) == "SIGNER_MISMATCH"  # claims another SP
    assert reason(good, now=note.expires_at + 1) == "EXPIRED"
    assert reason(good, held=13) == "REPLAYED_VERSION"
    assert reason(replace(good, signature=b"short")) == "MALFORMED"
    junk = b'{"format":"fedbroker-note/1"}'
    assert reason(SignedNote(junk, KEY.sign(junk), "L1", good.key_id)) == "MALFORMED"
    assert verify(good, held=12) == normalised(note)  # the same version again is not a replay


def test_two_keys_are_trusted_at_once_during_a_rotation() -> None:
    trust = TrustStore.of({"L1": [public_key_to_text(k.public_key()) for k in (KEY, OTHER)]})
    for key in (KEY, OTHER):
        assert verify_note(sign_note(rich_note(), key, "L1"), trust, expected_sp="L1", held_version=None, now=NOW)


@pytest.mark.parametrize(
    ("text", "needle"),
    [("rsa:AAAA", "must start with 'ed25519:'"), ("ed25519:!!", "base64url"), ("ed25519:AAAA", "32 bytes")],
)
def test_malformed_public_keys_are_refused_saying_why(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        public_key_from_text(text)


# --- aggregation hides the subtree ------------------------------------------------------------------


def test_the_abstract_note_names_no_internal_sp_port_or_link() -> None:
    """A subtree of two SPs, X and Y, joined by X.p–Y.q; it reaches the outside through X.up."""
    lab = LabelSet.of([LabelRange(1, 100)])
    x = CapabilityNote(
        SpId("X"),
        1,
        NOW,
        NOW + 60,
        endpoints=(Endpoint(T("ams")),),
        ports=(
            BorderPort(T("x-int"), SpId("Y"), T("y-int"), labels=lab, capacity_mbps=1000),
            BorderPort(T("up"), SpId("P"), T("down"), labels=lab, capacity_mbps=1000),
        ),
        transit=(Transit(T("ams"), T("x-int"), 1.0, 100), Transit(T("ams"), T("up"), 2.0, 100)),
        functions=(FunctionOffer("fw", "pop-a", 2),),
        qos_classes=(QosClass("gold", (("dscp", "46"),), 5.0, 0.01), QosClass("bronze", (), 50.0, 0.1)),
        isolation=(Isolation.SHARED, Isolation.VXLAN, Isolation.PHYSICAL),
        address_pools=("10.1.0.0/16",),
        price_per_mbps_hour=0.5,
    )
    y = CapabilityNote(
        SpId("Y"),
        1,
        NOW,
        NOW + 60,
        endpoints=(Endpoint(T("waw")),),
        ports=(BorderPort(T("y-int"), SpId("X"), T("x-int"), labels=lab, capacity_mbps=1000),),
        transit=(Transit(T("y-int"), T("waw"), 3.0, 50),),
        qos_classes=(QosClass("gold", (("mpls_tc", "5"),), 8.0, 0.001),),
        isolation=(Isolation.VXLAN, Isolation.PHYSICAL),
        address_pools=("10.2.0.0/16",),
        price_per_mbps_hour=0.25,
    )
    out = aggregate(SpId("M"), [x, y], version=2, issued_at=NOW, expires_at=NOW + 60)
    out = replace(out, provenance=(("sha256:" + "0" * 64, 1), ("sha256:" + "1" * 64, 1)))
    payload = note_to_canonical(out).decode()
    for internal in ('"X"', '"Y"', "x-int", "y-int"):
        assert internal not in payload, internal
    assert [p.id for p in out.ports] == ["up"] and [e.id for e in out.endpoints] == ["ams", "waw"]
    assert {(t.a, t.b): (t.latency_ms, t.bandwidth_mbps) for t in out.transit}[(T("ams"), T("waw"))] == (4.0, 50)
    assert [(q.name, q.delay_ms, q.loss, q.native) for q in out.qos_classes] == [("gold", 8.0, 0.01, ())]
    assert out.isolation == (Isolation.PHYSICAL, Isolation.VXLAN)
    assert out.address_pools == ("10.1.0.0/16", "10.2.0.0/16") and out.price_per_mbps_hour == 0.5


# --- offers and expiry at the broker ----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def test_a_withdrawn_offer_publishes_a_note_that_sells_nothing() -> None:
    agent = EmulatedDomainAgent(EmulatedDomainConfig.from_dict(leaf_domain("L1", {"L2": "1-9"}), "d"), Clock())
    assert agent.note.endpoints and agent.note.isolation == (Isolation.SHARED, Isolation.VXLAN)
    before = agent.note.version
    note = agent.set_offer(OfferPolicy(isolation=(Isolation.VRF,), price_per_mbps_hour=1.0, withdrawn=True))
    assert note.version > before and not note.endpoints and not note.ports and not note.functions
    assert note.isolation == (Isolation.VRF,) and note.price_per_mbps_hour == 1.0


def test_an_offer_in_the_domain_config_is_checked_with_its_path() -> None:
    spec = leaf_domain("L1") | {"offer": {"isolation": ["vxlan", "nope"]}}
    with pytest.raises(InvalidArgument, match=r"domains\[0\]\.offer\.isolation\[1\]"):
        EmulatedDomainConfig.from_dict(spec, "domains[0]")


@dataclass
class TwoLeaves:
    """T over leaves L1 and L2, each an emulated domain with its own note key, and T's catalog of their notes."""

    clock: Clock
    keys: dict[str, Ed25519PrivateKey]
    catalog: Catalog
    agents: dict[str, EmulatedDomainAgent]
    manager: SliceManager

    async def tell(self, sp: str, ttl_s: float = 3600) -> None:
        """``sp`` sends T its note, valid ``ttl_s`` from now."""
        note = replace(self.agents[sp].note, expires_at=NOW + ttl_s)
        assert await self.catalog.offer_signed(SpId(sp), sign_note(note, self.keys[sp], sp))


def two_leaves(tmp_path: Path) -> TwoLeaves:
    """T's manager over two leaves that have told it nothing yet (``tell`` sends a note)."""
    clock = Clock()
    keys = {sp: generate_key() for sp in ("L1", "L2")}
    trust = TrustStore.of({sp: [public_key_to_text(k.public_key())] for sp, k in keys.items()})
    catalog = Catalog("T", clock, key=generate_key(), trust=trust)
    agents = {
        sp: EmulatedDomainAgent(EmulatedDomainConfig.from_dict(leaf_domain(sp, {peer: "1-99"}), sp), clock)
        for sp, peer in (("L1", "L2"), ("L2", "L1"))
    }
    manager = SliceManager(
        sp_id="T",
        store=SqliteStore(tmp_path / "state.db"),
        agents=agents,  # type: ignore[arg-type]
        local_domains=[],
        wim=MemoryWimDriver(),
        notes=catalog.current,
        heard=catalog.heard,
        clock=clock,
        default_hold_s=30,
    )
    return TwoLeaves(clock, keys, catalog, agents, manager)


async def test_a_lower_sp_whose_note_expired_is_not_used_for_a_new_slice(tmp_path: Path) -> None:
    world = two_leaves(tmp_path)
    await world.tell("L1")
    await world.tell("L2", ttl_s=60)
    clock, catalog, manager = world.clock, world.catalog, world.manager
    request = SliceRequest(src=T("L1.ep"), dst=T("L2.ep"), bandwidth_mbps=10)
    held = await manager.reserve("cust", "r0", request, 30)
    await manager.abort(held.id)
    clock.now = NOW + 61  # L2's note has expired and L2 said nothing since
    assert set(catalog.current()) == {"L1"}
    with pytest.raises(InvalidArgument, match=r"L2\.ep"):
        await manager.reserve("cust", "r1", request, 30)


async def test_a_terminal_of_a_child_not_heard_from_since_the_start_is_unavailable_not_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker that just started (a replica back from a crash) lacks some notes: retry, not "no such terminal"."""
    monkeypatch.setattr(reservation, "FIRST_NOTE_WAIT_S", 0.2)  # L2 stays silent: waited for, then UNAVAILABLE
    world = two_leaves(tmp_path)
    await world.tell("L1")  # L2: nothing yet
    manager = world.manager
    request = SliceRequest(src=T("L1.ep"), dst=T("L2.ep"), bandwidth_mbps=10)
    with pytest.raises(Unavailable, match=r"unknown terminal 'L2\.ep'.*L2 sent this broker no note yet.*retry"):
        await manager.reserve("cust", "r1", request, 30)
    await world.tell("L2")
    held = await manager.reserve("cust", "r2", request, 30)  # every child spoke: planned as usual
    assert held.state is SliceState.HELD
    bad = SliceRequest(src=T("L1.ep"), dst=T("Q.ep"), bandwidth_mbps=10)
    with pytest.raises(InvalidArgument, match=r"Q\.ep"):  # now an unknown terminal is the customer's mistake
        await manager.reserve("cust", "r3", bad, 30)


async def test_a_reserve_that_arrives_before_any_note_waits_for_the_first_and_is_held(tmp_path: Path) -> None:
    """A broker that just started has heard no child yet: the Reserve waits (bounded) and plans on the first notes."""
    world = two_leaves(tmp_path)
    request = SliceRequest(src=T("L1.ep"), dst=T("L2.ep"), bandwidth_mbps=10)
    reserving = asyncio.create_task(world.manager.reserve("cust", "r1", request, 30))
    await asyncio.sleep(reservation.NOTE_SETTLE_S + 0.7)  # past the wait for a release climbing up
    assert not reserving.done()  # waiting for a first note, not refused for capacity
    await world.tell("L1")
    await world.tell("L2")
    held = await asyncio.wait_for(reserving, 10)
    assert held.state is SliceState.HELD and {s.domain for s in held.segments} == {"L1", "L2"}


async def test_a_reserve_before_any_note_that_none_answers_is_unavailable_naming_the_silent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reservation, "FIRST_NOTE_WAIT_S", 0.2)
    world = two_leaves(tmp_path)
    request = SliceRequest(src=T("L1.ep"), dst=T("L2.ep"), bandwidth_mbps=10)
    with pytest.raises(Unavailable, match=r"no capability notes.*L1, L2 sent this broker no note yet.*retry"):
        await world.manager.reserve("cust", "r1", request, 30)
    assert world.manager.slices()[0].state is SliceState.FAILED  # nothing held, nothing in flight


def test_keys_init_writes_a_private_key_only_its_owner_reads_and_prints_the_public_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from broker.cli import main
    from broker.security.keys import load_or_create_key

    path = tmp_path / "keys" / "L1.key"
    assert main(["keys", "init", "--out", str(path)]) == 0
    public = capsys.readouterr().out.strip()
    assert (path.stat().st_mode & 0o777) == 0o600
    assert public == path.with_suffix(".pub").read_text().strip()
    assert public_key_to_text(load_or_create_key(path).public_key()) == public
    assert main(["keys", "init", "--out", str(path)]) == 2  # never overwrites a key silently
    assert public_key_to_text(load_or_create_key(path).public_key()) == public


async def test_faults_in_the_domain_config_are_honoured_without_constructor_knobs() -> None:
    spec = leaf_domain("L1", {"L2": "1-9"}) | {"faults": {"fail_at": "reserve"}}
    agent = EmulatedDomainAgent(EmulatedDomainConfig.from_dict(spec, "d"), Clock())
    assert agent.fail_at == "reserve"
    from domain_agents.base import SegmentOrder
    from slicing.errors import ResourceExhausted

    order = SegmentOrder("k", SliceRequest(src=T("L1.ep"), dst=T("L1.to-L2"), bandwidth_mbps=1), 30)
    with pytest.raises(ResourceExhausted, match="injected failure at reserve"):
        await agent.reserve(order)
    assert agent.usage().bandwidth_mbps == 0


# --- hostile numbers in offers (issue 18 item 2) ------------------------------------------------------


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e308, -0.5])
@pytest.mark.parametrize(
    ("offer", "field"),
    [
        (lambda v: {"price_per_mbps_hour": v}, "offer.price_per_mbps_hour"),
        (lambda v: {"qos_classes": [{"name": "gold", "delay_ms": v}]}, "offer.qos_classes[0].delay_ms"),
        (lambda v: {"qos_classes": [{"name": "gold", "loss": v}]}, "offer.qos_classes[0].loss"),
    ],
)
def test_an_offer_with_a_non_finite_or_huge_number_is_refused_naming_the_field(
    value: float, offer: object, field: str
) -> None:
    from broker.api import codec
    from fedbroker.v1 import northsouth_pb2 as pb

    data = offer(value)  # type: ignore[operator]
    _, problems = parse_policy(data, "offer")
    assert (
        len(problems) == 1 and problems[0].startswith(f"{field}: ") and "must be a number between 0 and" in problems[0]
    )
    msg = pb.OfferPolicy()
    if "price" in field:
        msg.price_per_mbps_hour = value
    else:
        msg.qos_classes.add(name="gold", **{field.rpartition(".")[2]: value})
    with pytest.raises(InvalidArgument) as info:  # what SetOffer runs on the wire form
        codec.offer_from_pb(msg)
    assert info.value.field == field


def test_a_note_with_a_non_finite_number_has_no_canonical_form_and_the_error_is_a_value_error() -> None:
    note = replace(rich_note(), price_per_mbps_hour=float("inf"))
    with pytest.raises(CanonicalError, match="not a finite number"):
        note_to_canonical(note)


async def test_a_local_note_with_a_non_finite_number_is_refused_and_the_feed_goes_on() -> None:
    clock = Clock()
    catalog = Catalog("T", clock, key=generate_key(), trust=TrustStore.of({}))
    good = rich_note()
    assert not await catalog.offer(good.sp_id, replace(good, price_per_mbps_hour=float("inf")))
    assert catalog.rejected[-1].reason == "MALFORMED"
    assert await catalog.offer(good.sp_id, good)  # the next, valid note is taken
    assert set(catalog.current()) == {good.sp_id}


@pytest.mark.parametrize(
    ("dscp", "ok"), [(46, True), (0, True), (63, True), ("46", True), (64, False), (99, False), ("ef", False)]
)
def test_a_dscp_outside_0_to_63_fails_validation(dscp: object, ok: bool) -> None:
    data = example()
    data["qos_classes"] = [{"name": "gold", "native": {"dscp": dscp}}]
    problems = validate_authoring(data, NOW)
    if ok:
        assert problems == []
    else:
        assert problems == [f"qos_classes[0].native.dscp: {dscp!r} is not a dscp value (an integer 0-63)"]


def test_saved_offers_with_infinity_are_not_applied_after_a_restart(tmp_path: Path) -> None:
    from broker.core.offers import OfferDesk

    agent = EmulatedDomainAgent(EmulatedDomainConfig.from_dict(leaf_domain("L1", {"L2": "1-9"}), "d"), Clock())
    path = tmp_path / "offers.json"
    path.write_text('{"d": {"price_per_mbps_hour": Infinity}}')
    before = agent.note
    OfferDesk({"d": agent}, path, read_policy=parse_policy).restore()
    assert agent.note == before  # the configured offer stays; the bad saved one is reported, not applied


@pytest.mark.parametrize("pool", ["224.0.0.0/8", "127.0.0.0/8", "ff00::/8", "169.254.0.0/16"])
def test_an_address_pool_that_is_not_unicast_fails_validation(pool: str) -> None:
    data = example()
    data["address_pools"] = [pool]
    assert validate_authoring(data, NOW) == [
        f"address_pools[0]: {pool} is not a unicast range (multicast, loopback, link-local)"
    ]
