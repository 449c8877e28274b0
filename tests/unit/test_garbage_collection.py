"""The beat-paced cycle collector: automatic collection off while it runs, cycles still collected."""

from __future__ import annotations

import asyncio
import gc
import weakref

from voxgate.garbage_collection import BeatCollector


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
    collector = BeatCollector(thresholds=(10**9, 10, 10))
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
    collector = BeatCollector(thresholds=(0, -1, -1))  # CPython's counts alone would ask for a full one each time
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
