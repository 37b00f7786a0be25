"""The TCMalloc-style slab cache: the cached word overlaps cpu_id_start (spec §5.1, O-05)."""

from __future__ import annotations

import pytest

from rseqlab.abi import StructRseq
from rseqlab.machine.machine import make_machine
from rseqlab.userprog.libc import Glibc
from rseqlab.userprog.tcmalloc import CACHED_SLABS_BIT, SlabCache


def cached_after(kernel: str, event: str) -> dict:
    m = make_machine(kernel, cpus=2, seed=0)
    out = {}

    def main(th):
        cache = SlabCache(th, 2)
        assert cache.register(th) == 0
        out["overlap"] = cache.word(th) + 4 == th.area + StructRseq.CPU_ID_START.offset
        obj = cache.malloc(th)  # caches this CPU's slab
        out["before"] = bool(th.load(cache.word(th)) & CACHED_SLABS_BIT)
        if event == "sleep":
            th.sleep(10_000)  # a voluntary switch, back on the same CPU
        elif event == "migrate":
            th.setaffinity({1 - th.kt.cpu})
        out["after"] = bool(th.load(cache.word(th)) & CACHED_SLABS_BIT)
        cache.free(th, obj)
        out["oracle"] = (cache.oracle.allocations, cache.oracle.double)

    m.spawn(main, runtime=Glibc(rseq_tunable=False), affinity={0, 1})
    m.run()
    return out


@pytest.mark.parametrize("kernel", ["6.18", "6.19"])
def test_the_cached_word_overlaps_cpu_id_start_and_migration_invalidates_it(kernel):
    out = cached_after(kernel, "migrate")
    assert out["overlap"] and out["before"] and not out["after"]
    assert out["oracle"] == (1, [])


def test_legacy_rewrite_invalidates_after_a_plain_switch_but_6_19_does_not():
    assert cached_after("6.18", "sleep")["after"] is False  # legacy: every switch rewrites IDs
    assert cached_after("6.19", "sleep")["after"] is True  # 6.19: same CPU, same mm_cid, no write
    assert cached_after("6.19:always-rewrite-ids", "sleep")["after"] is False
