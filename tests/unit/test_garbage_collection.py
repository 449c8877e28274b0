"""The beat-paced cycle collector: automatic collection off while it runs, cycles still collected."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import Iterator

from voxgate.garbage_collection import THAW_S, BeatCollector


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


async def test_cycles_are_collected_on_the_beat_and_automatic_collection_comes_back() -> None:
    was = gc.isenabled()  # a gateway fixture of the same pytest process may hold it off already
    collector = BeatCollector(thresholds=(0, 10**9, 10**9))  # a young collection at every beat
    collector.start()
    try:
        assert not gc.isenabled()
        a, b = Node(), Node()
        a.other, b.other = b, a
        dead = weakref.ref(a)
        del a, b
        for _ in range(100):
            await asyncio.sleep(0.02)
            if dead() is None and collector.collections[0]:
                break
        assert dead() is None, "the cycle was never collected"
        assert collector.collections[0] >= 1 and collector.collections[1:] == [0, 0]
    finally:
        await collector.stop()
    assert gc.isenabled() == was


def test_the_generation_follows_cpython_policy() -> None:
    collector = BeatCollector(thresholds=(10**9, 10, 10), tenure=False)
    assert collector.collect_due() is None  # nothing close to the young threshold
    was = gc.isenabled()
    gc.disable()
    try:
        collector.thresholds = (0, 10**9, 10**9)
        assert collector.collect_due() == 0
        collector.thresholds = (0, -1, 10**9)
        assert collector.collect_due() == 1
        collector.thresholds = (0, -1, -1)
        assert collector.collect_due() == 2
    finally:
        if was:
            gc.enable()


def test_a_full_collection_waits_until_the_oldest_generation_grew_by_a_quarter() -> None:
    # CPython's counts alone would ask for a full one each time; no tenure: the oldest generation keeps what is left
    collector = BeatCollector(thresholds=(0, -1, -1), tenure=False)
    was = gc.isenabled()
    gc.disable()
    try:
        assert collector.collect_due() == 2
        assert collector.collect_due() == 1  # nothing has reached the oldest generation since
        held = [[] for _ in range(len(gc.get_objects(generation=2)) // 4 + 1)]
        assert collector.collect_due() == 1  # `held` is young still: this moves it to the oldest generation
        assert collector.collect_due() == 2
        assert collector.collections == [0, 2, 2] and held
    finally:
        if was:
            gc.enable()


async def test_two_collectors_keep_automatic_collection_off_until_both_stop() -> None:
    was = gc.isenabled()
    first, second = BeatCollector(), BeatCollector()
    first.start()
    second.start()
    await first.stop()
    assert not gc.isenabled()
    await second.stop()
    assert gc.isenabled() == was


@contextlib.contextmanager
def tenuring() -> Iterator[None]:
    """Automatic collection off for a test that collects itself, from an empty oldest generation (everything
    frozen first); thawed afterwards, unless a gateway in this process had frozen its start-up already."""
    was, frozen = gc.isenabled(), gc.get_freeze_count()
    gc.disable()
    gc.freeze()
    try:
        yield
    finally:
        if frozen == 0:
            gc.unfreeze()
        if was:
            gc.enable()


def test_a_full_collection_tenures_what_it_leaves_and_a_thaw_walks_it_later() -> None:
    """Cycles that form among tenured objects outlive the full collections that follow, until the one that
    thaws (after `thaw_s` on the collector's clock). A thaw that finds more garbage than `tenure_after`
    halves the wait for the next; one that finds less doubles it."""
    now = 0.0
    with tenuring():
        frozen = gc.get_freeze_count()
        collector = BeatCollector(thresholds=(0, -1, -1), tenure_after=1000, clock=lambda: now)
        held: list[list[list[int]]] = []

        def full() -> None:
            held.append([[] for _ in range(1000)])  # enough for the oldest generation, once promoted
            assert collector.collect_due() == 1  # the oldest generation is empty: a middle one promotes them
            assert collector.collect_due() == 2

        cycles = [Node() for _ in range(2000)]
        for node in cycles:
            node.other = node
        dead = weakref.ref(cycles[0])
        full()
        assert gc.get_freeze_count() > frozen and not gc.get_objects(generation=2)  # all tenured
        del cycles, node  # cycles among tenured objects: garbage no plain full collection walks
        full()
        assert collector.thaws == 0 and dead() is not None
        now += collector.thaw_s
        full()
        assert collector.thaws == 1 and dead() is None, "the thaw did not collect the tenured cycles"
        assert collector.thaw_s == THAW_S[1] / 2  # 2,000 cycles found: thaw twice as often
        now += collector.thaw_s
        full()
        assert collector.thaws == 2 and collector.thaw_s == THAW_S[1]  # next to nothing: half as often again


def test_with_tenure_a_full_collection_comes_once_the_oldest_generation_holds_enough() -> None:
    with tenuring():
        collector = BeatCollector(thresholds=(0, -1, -1), tenure_after=1000)
        held = [[] for _ in range(500)]
        assert collector.collect_due() == 1  # 500 reached the oldest generation: not yet
        more = [[] for _ in range(500)]
        assert collector.collect_due() == 1
        assert collector.collect_due() == 2 and not gc.get_objects(generation=2)
        assert held and more
