"""The probe worker's pure parts: ICMP framing, the round's loss and latency (no namespace needed)."""

from __future__ import annotations

import struct

import pytest

from wim.probes import Counters, PingResult, checksum, echo_reply_of, echo_request, total


def test_an_echo_request_carries_a_checksum_that_verifies_to_zero() -> None:
    packet = echo_request(0x1234, 7, b"payload!")
    assert packet[0] == 8 and struct.unpack_from("!HH", packet, 4) == (0x1234, 7)
    assert checksum(packet) == 0


def test_only_an_echo_reply_is_read_as_one_and_names_its_identifier_and_sequence() -> None:
    ip = bytes([0x45]) + bytes(19)  # IPv4, a 20-byte header
    reply = ip + struct.pack("!BBHHH", 0, 0, 0, 0x1234, 7)
    assert echo_reply_of(reply) == (0x1234, 7)
    assert echo_reply_of(ip + struct.pack("!BBHHH", 8, 0, 0, 0x1234, 7)) is None  # a request, not a reply
    assert echo_reply_of(ip + b"\0\0") is None and echo_reply_of(b"") is None  # too short


def test_a_round_reads_loss_and_half_the_median_round_trip_so_one_late_reply_does_not_breach() -> None:
    assert PingResult(4, 3, (1.0, 1.2, 40.0)).loss == pytest.approx(0.25)
    assert PingResult(4, 3, (1.0, 1.2, 40.0)).one_way_ms == pytest.approx(0.6)
    assert PingResult(3, 3, (60.0, 62.0, 61.0)).one_way_ms == pytest.approx(30.5)  # a queue every request meets
    assert PingResult(3, 0).one_way_ms is None and PingResult(3, 0).loss == 1.0
    assert PingResult(0, 0).loss == 0.0


def test_counters_of_the_interfaces_found_add_up() -> None:
    got = total([Counters(10, 20, 1, 2), None, Counters(5, 5, 0, 1)])
    assert got == Counters(15, 25, 1, 3) and got.dropped == 4
