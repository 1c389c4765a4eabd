"""The generations answers depend on: slots that move, a bounded ring of keys, and kept
dependencies the garbage collector does not walk."""

from __future__ import annotations

import gc

from kubernetai.core.sources import GENERATIONS, KeySlots, Source, changed


def test_a_source_moves_and_what_read_it_no_longer_holds() -> None:
    source = Source()
    dep = source.dep()
    assert dep == (source.slot, source.generation) and not changed((dep,))
    source.bump()
    assert changed((dep,)) and not changed((source.dep(),))


def test_a_freed_slot_never_matches_what_its_former_owner_recorded() -> None:
    source = Source()
    old = source.dep()
    del source
    gc.collect()
    heir = Source()  # may reuse the slot: its generation moved first
    assert changed((old,)) or heir.slot != old[0]
    assert not changed((heir.dep(),))


def test_keys_keep_their_slot_and_touch_moves_only_theirs() -> None:
    slots = KeySlots(size=8)
    web, api = slots.dep(("svc", "shop/web")), slots.dep(("svc", "shop/api"))
    assert slots.slot(("svc", "shop/web")) == web[0] and len(slots) == 2
    slots.touch(("svc", "shop/web"))
    slots.touch(("svc", "shop/nobody-asked"))        # no slot: nothing depends on it
    assert changed((web,)) and not changed((api,))
    assert ("svc", "shop/nobody-asked") not in slots
    slots.touch_all({("svc", "shop/api"), ("ip", "10.0.0.1")})
    assert changed((api,))


def test_touch_all_walks_either_side_alike() -> None:
    many = {("svc", f"a/{i}") for i in range(20)}
    few = KeySlots(size=8)
    deps = {key: few.dep(key) for key in sorted(many)[:5]}
    few.touch_all(many)                              # fewer slots than keys
    assert all(changed((dep,)) for dep in deps.values())
    deps = {key: few.dep(key) for key in sorted(many)[:5]}
    few.touch_all({sorted(many)[0]})                 # fewer keys than slots
    assert [changed((dep,)) for dep in deps.values()] == [True, False, False, False, False]


def test_the_ring_is_bounded_and_the_oldest_key_gives_its_slot_up() -> None:
    slots = KeySlots(size=4)
    first = slots.dep(("svc", "a/0"))
    deps = [slots.dep(("svc", f"a/{i}")) for i in range(1, 4)]
    assert not changed((first,)) and len(slots) == 4
    newcomer = slots.dep(("svc", "a/4"))
    assert len(slots) == 4 and ("svc", "a/0") not in slots
    assert newcomer[0] == first[0] and changed((first,))   # its answers are built again
    assert not any(changed((dep,)) for dep in deps)
    assert slots.dep(("svc", "a/0"))[0] == deps[0][0]      # round the ring, in order


def test_kept_dependencies_are_not_tracked_by_the_collector() -> None:
    """The point of integers: an entry of a cache holding only its bytes, numbers and
    dependencies is untracked after one collection, so full collections skip it."""
    slots = KeySlots()
    deps = tuple(slots.dep(("svc", f"shop/{i}")) for i in range(3))
    entry = (b"response", 12.5, deps, 30.0)
    gc.collect()
    gc.collect()  # a tuple is untracked once what it holds is: nested ones may take two
    assert not gc.is_tracked(entry) and not gc.is_tracked(deps)
    assert all(isinstance(g, int) for g in GENERATIONS[:3])
