"""Label ranges and sets: normalisation, membership, intersection, first free label."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capability_catalog.model import LabelRange, LabelSet


def ls(*pairs: tuple[int, int]) -> LabelSet:
    return LabelSet.of(LabelRange(a, b) for a, b in pairs)


def test_label_range_refuses_reversed_or_negative_bounds() -> None:
    with pytest.raises(ValueError):
        LabelRange(5, 4)
    with pytest.raises(ValueError):
        LabelRange(-1, 4)


def test_label_range_counts_and_contains_inclusive_bounds() -> None:
    r = LabelRange(10, 12)

    assert len(r) == 3
    assert 10 in r and 12 in r
    assert 9 not in r and 13 not in r
    assert "10" not in r


def test_label_set_of_merges_overlapping_and_adjacent_ranges_in_order() -> None:
    s = ls((20, 25), (1, 3), (4, 6), (5, 9), (30, 30))

    assert s.ranges == (LabelRange(1, 9), LabelRange(20, 25), LabelRange(30, 30))
    assert len(s) == 9 + 6 + 1
    assert list(ls((3, 4), (1, 1))) == [1, 3, 4]


def test_empty_label_set_is_falsy() -> None:
    assert not LabelSet()
    assert len(LabelSet()) == 0
    assert LabelSet.single(7)
    assert list(LabelSet.single(7)) == [7]


def test_intersect_keeps_only_common_labels_across_ranges() -> None:
    a = ls((1, 10), (20, 30))
    b = ls((5, 22), (29, 40))

    assert a.intersect(b) == ls((5, 10), (20, 22), (29, 30))
    assert a.intersect(LabelSet()) == LabelSet()
    assert ls((1, 2)).intersect(ls((3, 4))) == LabelSet()


def test_first_free_takes_preferred_when_available() -> None:
    s = ls((1, 5))

    assert s.first_free({1, 2}, prefer=4) == 4
    assert s.first_free({4}, prefer=4) == 1
    assert s.first_free(set(), prefer=9) == 1


def test_first_free_skips_used_across_ranges_and_returns_none_when_all_used() -> None:
    s = ls((1, 2), (10, 11))

    assert s.first_free([1, 2, 10]) == 11
    assert s.first_free({1, 2, 10, 11}) is None


small_ranges = st.lists(
    st.tuples(st.integers(0, 40), st.integers(0, 8)).map(lambda t: LabelRange(t[0], t[0] + t[1])),
    max_size=6,
)


def as_set(ranges: list[LabelRange]) -> set[int]:
    return {x for r in ranges for x in range(r.first, r.last + 1)}


@settings(max_examples=300, deadline=None)
@given(small_ranges, small_ranges)
def test_intersect_matches_set_semantics(a: list[LabelRange], b: list[LabelRange]) -> None:
    got = LabelSet.of(a).intersect(LabelSet.of(b))

    assert set(got) == as_set(a) & as_set(b)
    assert len(got) == len(as_set(a) & as_set(b))


@settings(max_examples=300, deadline=None)
@given(small_ranges)
def test_label_set_of_is_normalised_and_matches_set_semantics(a: list[LabelRange]) -> None:
    s = LabelSet.of(a)

    assert set(s) == as_set(a)
    assert all(x in s for x in as_set(a))
    for left, right in zip(s.ranges, s.ranges[1:], strict=False):
        assert left.last + 1 < right.first  # sorted, disjoint and not adjacent


@settings(max_examples=200, deadline=None)
@given(small_ranges, st.sets(st.integers(0, 50), max_size=20))
def test_first_free_is_lowest_unused_label(a: list[LabelRange], used: set[int]) -> None:
    free = as_set(a) - used

    assert LabelSet.of(a).first_free(used) == (min(free) if free else None)
