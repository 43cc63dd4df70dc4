"""Tests for EndpointSet.fold: Reset replaces, Add and Remove are set operations by key."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kedge.edge.config import Address
from kedge.edge.discovery.model import Add, Endpoint, EndpointSet, Remove, Reset, Update

# Few hosts and ports, so that keys collide and replacement paths get exercised.
addresses = st.builds(
    Address,
    host=st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.3", "fd00::1"]),
    port=st.sampled_from([80, 8080]),
)
endpoints = st.builds(
    Endpoint,
    address=addresses,
    labels=st.sampled_from([(), (("zone", "a"),), (("priority", "10"), ("zone", "b"))]),
    weight=st.integers(min_value=1, max_value=5),
    ready=st.booleans(),
)
endpoint_lists = st.lists(endpoints, max_size=10)
endpoint_sets = st.builds(EndpointSet.of, endpoint_lists, st.integers(0, 1000))
keys = st.lists(addresses.map(str), max_size=10)
updates: st.SearchStrategy[Update] = st.one_of(
    st.builds(Reset, endpoint_lists.map(tuple)),
    st.builds(Add, endpoint_lists.map(tuple)),
    st.builds(Remove, keys.map(tuple)),
)


# Small, fast properties: fewer examples than the default keep the suite quick, and no
# deadline, so a loaded CI machine cannot turn a slow example into a failure.
quick = settings(max_examples=50, deadline=None)


def as_dict(endpoints: tuple[Endpoint, ...]) -> dict[str, Endpoint]:
    return {e.key: e for e in endpoints}


def assert_well_formed(s: EndpointSet) -> None:
    assert [e.key for e in s.endpoints] == sorted({e.key for e in s.endpoints})


@quick
@given(endpoint_sets, endpoint_lists)
def test_reset_gives_exactly_its_endpoints(before: EndpointSet, new: list[Endpoint]) -> None:
    after = before.fold(Reset(tuple(new)))
    assert as_dict(after.endpoints) == as_dict(tuple(new))  # the last of duplicate keys wins
    assert after.version == before.version + 1
    assert_well_formed(after)


@quick
@given(endpoint_sets, endpoint_lists)
def test_add_is_a_union_that_replaces_same_keys(before: EndpointSet, new: list[Endpoint]) -> None:
    after = before.fold(Add(tuple(new)))
    assert as_dict(after.endpoints) == as_dict(before.endpoints) | as_dict(tuple(new))
    assert after.version == before.version + 1
    assert_well_formed(after)


@quick
@given(endpoint_sets, keys)
def test_remove_is_a_difference_and_ignores_unknown_keys(
    before: EndpointSet, removed: list[str]
) -> None:
    after = before.fold(Remove(tuple(removed)))
    expected = {k: e for k, e in as_dict(before.endpoints).items() if k not in removed}
    assert as_dict(after.endpoints) == expected
    assert after.version == before.version + 1
    assert_well_formed(after)


@quick
@given(st.lists(updates, max_size=20))
def test_folding_matches_a_dict_model(sequence: list[Update]) -> None:
    current = EndpointSet()
    model: dict[str, Endpoint] = {}
    for update in sequence:
        current = current.fold(update)
        if isinstance(update, Reset):
            model = as_dict(update.endpoints)
        elif isinstance(update, Add):
            model |= as_dict(update.endpoints)
        else:
            for k in update.keys:
                model.pop(k, None)
        assert as_dict(current.endpoints) == model
    assert current.version == len(sequence)


@quick
@given(endpoint_sets)
def test_ready_filters_not_ready_endpoints(s: EndpointSet) -> None:
    assert s.ready == tuple(e for e in s.endpoints if e.ready)


def test_fold_leaves_the_original_untouched() -> None:
    a = Endpoint(Address("10.0.0.1", 80))
    before = EndpointSet.of([a])
    before.fold(Remove((a.key,)))
    before.fold(Reset(()))
    assert before == EndpointSet((a,), 0)
