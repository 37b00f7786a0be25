"""The built-in scenarios of ``rseqlab check``.

Each is a few threads running the selftests' per-CPU operations (userspace
spec §2.3, §2.6), or a hand-written section for the cases the primitives
cannot express, with the invariant the selftests (or the allocator) rely on.
The per-CPU scenarios start both threads on CPU 0 of a two-CPU machine, so
they contend for the same per-CPU data: a preemption lets the other thread
run there, a migration makes the two run in parallel.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from ..abi import (
    PR_RSEQ_SLICE_EXT_ENABLE,
    PR_RSEQ_SLICE_EXTENSION,
    PR_RSEQ_SLICE_EXTENSION_SET,
    StructRseq,
    StructRseqCs,
)
from ..userprog import primitives as P
from ..userprog.api import (
    MEMBARRIER_CMD_FLAG_CPU,
    MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ,
)
from .model import WORD, Cs, Final, Scenario, ThreadSpec, cpu_start, left_section


def _expect(what: str, got, want) -> str | None:
    return None if got == want else f"{what} = {got}, expected {want}"


# ----------------------------------------------------------------------
# percpu-counter (param_test -T i)
# ----------------------------------------------------------------------
def _counter_thread(th, mem) -> None:
    while True:
        cpu = cpu_start(th)
        if P.load_add_store(th, mem["counter", cpu], 1, cpu) == 0:
            return


def percpu_counter() -> Scenario:
    return Scenario(
        "percpu-counter",
        "two threads each add 1 to their CPU's counter (load_add_store, retried on abort)",
        "sum(counter) == 2",
        lambda f: _expect("sum(counter)", sum(f.words("counter")), 2),
        [ThreadSpec(0, _counter_thread), ThreadSpec(0, _counter_thread)],
        memory={"counter": [0, 0]},
    )


# ----------------------------------------------------------------------
# percpu-list (param_test -T l): pop a node, push it back
# ----------------------------------------------------------------------
NEXT, DATA = 0, 1  # a node is two words


def _list_thread(index: int) -> Callable:
    def program(th, mem) -> None:
        scratch = mem["popped", index]
        while True:  # this_cpu_list_pop
            cpu = cpu_start(th)
            ret = P.load_cbeq_store_add_load_store(th, mem["head", cpu], 0, NEXT * WORD, scratch, cpu)
            if ret == 1:
                return  # empty list
            if ret == 0:
                break
        node = th.mm.peek(scratch, WORD)  # the C code's local variable
        while True:  # this_cpu_list_push
            cpu = cpu_start(th)
            head = mem["head", cpu]
            expect = th.load(head)
            th.store(node + NEXT * WORD, expect)
            if P.load_cbne_store(th, head, expect, node, cpu) == 0:
                return

    return program


def _list_check(f: Final) -> str | None:
    base = f.mem.addr("node")
    found = []
    for head in f.words("head"):
        node, hops = head, 0
        while node and hops < 8:
            found.append(f.mem.mm.peek(node + DATA * WORD, WORD))
            node, hops = f.mem.mm.peek(node + NEXT * WORD, WORD), hops + 1
        if node:
            return "a list has a cycle"
    del base
    return _expect("node data on the lists", sorted(found), [1, 2])


def percpu_list() -> Scenario:
    return Scenario(
        "percpu-list",
        "two threads pop a node from their CPU's list and push it back (list 0: 1 -> 2)",
        "the lists hold nodes 1 and 2, each once",
        _list_check,
        [ThreadSpec(0, _list_thread(0)), ThreadSpec(0, _list_thread(1))],
        memory={"head": [lambda m: m.addr("node", 0), 0],
                "node": [lambda m: m.addr("node", 2), 1, 0, 2],
                "popped": [0, 0]},
    )


# ----------------------------------------------------------------------
# percpu-buffer (param_test -T b) and percpu-memcpy (-T m)
# ----------------------------------------------------------------------
CAP = 4


def _buffer_thread(index: int, *, memcpy: bool) -> Callable:
    """Pop an item from this CPU's buffer, push it back to the (then) current CPU's."""

    def program(th, mem) -> None:
        item = mem["item", index]
        while True:  # pop
            cpu = cpu_start(th)
            off_addr = mem["offset", cpu]
            off = th.load(off_addr)
            if off == 0:
                return
            slot = mem["array", cpu * CAP + off - 1]
            if memcpy:
                ret = P.load_cbne_memcpy_store(th, off_addr, off, item, slot, 2, off - 1, cpu)
            else:
                head = th.load(slot)
                ret = P.load_cbne_load_cbne_store(th, off_addr, off, slot, head, off - 1, cpu)
                if ret == 0:
                    th.mm.poke(item, WORD, head)  # the C code's local variable
            if ret == 0:
                break
        while True:  # push
            cpu = cpu_start(th)
            off_addr = mem["offset", cpu]
            off = th.load(off_addr)
            slot = mem["array", cpu * CAP + off]
            if memcpy:
                ret = P.load_cbne_memcpy_store(th, off_addr, off, slot, item, 2, off + 1, cpu)
            else:
                ret = P.load_cbne_store_store(th, off_addr, off, slot, th.mm.peek(item, WORD), off + 1, cpu)
            if ret == 0:
                return

    return program


def _buffer_check(items: list[int]) -> Callable[[Final], str | None]:
    def check(f: Final) -> str | None:
        found = []
        for cpu, off in enumerate(f.words("offset")):
            if off > CAP:
                return f"offset[{cpu}] = {off} overflows the buffer"
            found += [f.word("array", cpu * CAP + i) & 0xFFFF for i in range(off)]
        return _expect("items in the buffers", sorted(found), items)

    return check


def percpu_buffer() -> Scenario:
    return Scenario(
        "percpu-buffer",
        "two threads pop an item from their CPU's buffer and push it back (buffer 0: [1, 2])",
        "the buffers hold items 1 and 2, each once",
        _buffer_check([1, 2]),
        [ThreadSpec(0, _buffer_thread(0, memcpy=False)), ThreadSpec(0, _buffer_thread(1, memcpy=False))],
        memory={"offset": [2, 0], "array": [1, 2] + [0] * (2 * CAP - 2), "item": [0, 0]},
    )


ITEM_A, ITEM_B = 0x0201, 0x0403  # two-byte items {data1, data2}: {1, 2} and {3, 4}


def percpu_memcpy() -> Scenario:
    return Scenario(
        "percpu-memcpy",
        "like percpu-buffer with two-byte items copied byte by byte (load_cbne_memcpy_store)",
        "the buffers hold items {1,2} and {3,4}, each once and whole",
        _buffer_check(sorted([ITEM_A, ITEM_B])),
        [ThreadSpec(0, _buffer_thread(0, memcpy=True)), ThreadSpec(0, _buffer_thread(1, memcpy=True))],
        memory={"offset": [2, 0], "array": [ITEM_A, ITEM_B] + [0] * (2 * CAP - 2), "item": [0, 0]},
    )


# ----------------------------------------------------------------------
# spinlock (param_test -T s)
# ----------------------------------------------------------------------
def _spinlock_thread(th, mem) -> None:
    while True:  # rseq_this_cpu_lock(), yielding while the lock is held
        cpu = cpu_start(th)
        ret = P.load_cbne_store(th, mem["lock", cpu], 0, 1, cpu)
        if ret == 0:
            break
        if ret == 1:
            left_section(th)
            th.sched_yield()
    count = th.load(mem["count", cpu])  # the protected, non-atomic increment of c[cpu].count
    th.store(mem["count", cpu], count + 1)
    th.store(mem["lock", cpu], 0)  # rseq_percpu_unlock(): store-release


def _spinlock_check(f: Final) -> str | None:
    return _expect("sum(count)", sum(f.words("count")), 2) or _expect("lock words", f.words("lock"), [0, 0])


def spinlock() -> Scenario:
    return Scenario(
        "spinlock",
        "two threads take their CPU's lock (load_cbne_store 0 -> 1), increment that CPU's count "
        "with a plain load and store, unlock",
        "sum(count) == 2 and every lock word is 0",
        _spinlock_check,
        [ThreadSpec(0, _spinlock_thread), ThreadSpec(0, _spinlock_thread)],
        memory={"lock": [0, 0], "count": [0, 0]},
    )


# ----------------------------------------------------------------------
# tcmalloc-slab-cache (userspace spec §5.1)
# ----------------------------------------------------------------------
CACHED = 1 << 63
MISS, EMPTY = 2, 3
OBJ_1, OBJ_2 = 101, 102


def _tcm_word(th) -> int:
    """``tcmalloc_slabs``: 8 bytes whose upper half is ``__rseq_abi.cpu_id_start``."""
    return th.area + StructRseq.CPU_ID_START.offset - 4


def _tcm_refresh(th, mem) -> int:
    """The slow path: cache this CPU's slab (top bit set) unless the CPU is stopped."""
    cpu = th.area_field("cpu_id")  # cpu_id_start is clobbered by the cached word

    def body(cs: Cs) -> int:
        if cs.load(mem["stopped", cpu], 1):
            return 1
        slab = cs.load(mem["table", cpu], 2)
        cs.store(_tcm_word(th), CACHED | slab, 3)  # commit
        return 0

    return Cs(th, "tcmalloc_cache_slab", 4).run(cpu, body)


def _tcm_pop(th, mem) -> int:
    """The fast path: trust the cached slab word if its top bit is set (no CPU compare)."""

    def body(cs: Cs) -> int:
        w = cs.load(_tcm_word(th), 1)
        if not w & CACHED:
            return MISS
        slab = w & 0xFFFF_FFFF
        cur = cs.load(slab, 2)
        if cur == 0:
            return EMPTY
        th.local["obj"] = cs.load(slab + WORD * cur, 3)
        cs.store(slab, cur - 1, 4)  # commit: hdr.current - 1
        return 0

    return Cs(th, "tcmalloc_pop", 5, check_cpu=False).run(-1, body)


def _tcm_allocator(th, mem) -> None:
    for i in range(1):
        while True:
            r = _tcm_pop(th, mem)
            if r == 0:
                th.store(mem["got", i], th.local.pop("obj"))
                break
            if r == EMPTY:
                break
            if r == MISS and _tcm_refresh(th, mem) == 1:
                break  # CPU stopped: the allocation goes to the central free list instead


def _tcm_resizer(th, mem) -> None:
    """Resize CPU 0's slab: stop it, fence it, copy to the new slab, publish, restart."""
    th.store(mem["stopped", 0], 1)
    th.membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, MEMBARRIER_CMD_FLAG_CPU, 0)
    n = th.load(mem["slab_old", 0])
    for i in range(n):
        th.store(mem["slab_new", 1 + i], th.load(mem["slab_old", 1 + i]))
    th.store(mem["slab_new", 0], n)
    th.store(mem["table", 0], mem["slab_new"])
    th.store(mem["stopped", 0], 0)


def _tcm_check(f: Final) -> str | None:
    places = Counter(v for v in f.words("got") if v)
    for cpu in range(2):
        slab = f.word("table", cpu)
        cur = f.mem.mm.peek(slab, WORD)
        places.update(f.mem.mm.peek(slab + WORD * (1 + i), WORD) for i in range(cur))
    twice = sorted(obj for obj, n in places.items() if n > 1)
    if twice:
        return f"object {twice[0]} handed out and still in the live slab (or handed out twice)"
    return _expect("objects accounted for", sorted(places), [OBJ_1, OBJ_2])


def tcmalloc_slab_cache() -> Scenario:
    return Scenario(
        "tcmalloc-slab-cache",
        "T0 pops an object through TCMalloc's cached slab word (upper half = cpu_id_start, top bit = "
        "valid); T1 resizes CPU 0's slab (stop, membarrier fence, copy, publish)",
        "every object is exactly once either handed out or in a live slab",
        _tcm_check,
        [ThreadSpec(0, _tcm_allocator), ThreadSpec(1, _tcm_resizer)],
        memory={"slab_old": [2, OBJ_1, OBJ_2], "slab_new": [0, 0, 0], "slab_cpu1": [0, 0, 0],
                "table": [lambda m: m.addr("slab_old"), lambda m: m.addr("slab_cpu1")],
                "stopped": [0, 0], "got": [0, 0]},
        membarrier=True,
    )


# ----------------------------------------------------------------------
# syscall-in-cs (spec §4 row 11)
# ----------------------------------------------------------------------
def _syscall_thread(th, mem) -> None:
    def body(cs: Cs) -> int:
        value = cs.load(mem["counter", cpu], 1)
        cs.syscall(2)  # getpid() inside the section: an ABI violation
        cs.store(mem["counter", cpu], value + 1, 3)  # commit
        return 0

    while True:
        cpu = cpu_start(th)
        if Cs(th, "syscall_in_cs", 4).run(cpu, body) == 0:
            return


def syscall_in_cs() -> Scenario:
    return Scenario(
        "syscall-in-cs",
        "two threads increment their CPU's counter in a section that loads, calls getpid(), then "
        "stores (illegal: a section must not make syscalls)",
        "sum(counter) == 2",
        lambda f: _expect("sum(counter)", sum(f.words("counter")), 2),
        [ThreadSpec(0, _syscall_thread), ThreadSpec(0, _syscall_thread)],
        memory={"counter": [0, 0]},
    )


# ----------------------------------------------------------------------
# stale-rseq-cs (userspace spec §8.4 V-10, done wrong)
# ----------------------------------------------------------------------
REUSED = [0x0000_0001_0000_0001, 0x10, 0x20, 0x30]  # what the freed memory holds next


def _stale_thread(th, mem) -> None:
    desc = mem["libdata"]
    cs = Cs(th, "libfoo_counter_add", 2, descriptor=desc)
    site = cs.site
    # The dynamic loader relocated the library's descriptor into its writable data.
    for f, value in ((StructRseqCs.START_IP, site.start_ip),
                     (StructRseqCs.POST_COMMIT_OFFSET, site.post_commit_ip - site.start_ip),
                     (StructRseqCs.ABORT_IP, site.abort_ip)):
        th.mm.poke(desc + f.offset, f.size, value)
    while True:
        cpu = cpu_start(th)

        def body(c: Cs, cpu: int = cpu) -> int:
            th.add(mem["counter", cpu], 1, ip=c.site.ip(1))  # commit
            return 0

        if cs.run(cpu, body) == 0:
            break
    # dlclose() without rseq_prepare_unload(): rseq_cs still points into the library,
    # whose memory is reused for other data.
    for i, value in enumerate(REUSED):
        th.store(desc + WORD * i, value)
    th.insn(th.ip)  # the program goes on
    th.insn(th.ip)


def stale_rseq_cs() -> Scenario:
    return Scenario(
        "stale-rseq-cs",
        "one thread runs a library's section (descriptor in the library's writable data), then the "
        "library is unloaded without clearing rseq_cs and the memory reused",
        "the thread is never killed and counter sums to 1",
        lambda f: _expect("sum(counter)", sum(f.words("counter")), 1),
        [ThreadSpec(0, _stale_thread)],
        memory={"libdata": [0, 0, 0, 0], "counter": [0, 0]},
    )


# ----------------------------------------------------------------------
# signal-handler-cs (userspace spec §8.3 C-06)
# ----------------------------------------------------------------------
def _cas_increment(th, mem) -> None:
    while True:
        cpu = cpu_start(th)
        value = th.load(mem["counter", cpu])
        if P.load_cbne_store(th, mem["counter", cpu], value, value + 1, cpu) == 0:
            return


def _handler(th, mem) -> None:
    _cas_increment(th, mem)
    th.add(mem["handled"], 1)


def signal_handler_cs() -> Scenario:
    return Scenario(
        "signal-handler-cs",
        "a thread increments its CPU's counter (load, then load_cbne_store of value+1); its SIGUSR1 "
        "handler does the same on the same per-CPU counter",
        "sum(counter) == 1 + handled",
        lambda f: _expect("sum(counter)", sum(f.words("counter")), 1 + f.word("handled")),
        [ThreadSpec(0, _cas_increment)],
        memory={"counter": [0, 0], "handled": [0]},
        handler=_handler,
    )


# ----------------------------------------------------------------------
# slice-lock (the RSEQ time-slice extension, 7.0+)
# ----------------------------------------------------------------------
def _slice_lock_thread(th, mem) -> None:
    """rseq.rst's pattern: request an extension, take the lock (sched_yield while it is held),
    a non-atomic increment, release, clear the request, rseq_slice_yield() if granted."""
    asks = th.prctl(PR_RSEQ_SLICE_EXTENSION, PR_RSEQ_SLICE_EXTENSION_SET, PR_RSEQ_SLICE_EXT_ENABLE) == 0
    request = th.area + StructRseq.SLICE_CTRL.offset
    if asks:
        th.store(request, 1, 1)
    while th.cmpxchg(mem["lock"], 0, 1) != 0:
        th.sched_yield()
    switches, expired = th.st.nivcsw, th.kt.stats.s_expired
    count = th.load(mem["count"])
    th.store(mem["count"], count + 1)
    switched = th.st.nivcsw != switches
    th.store(mem["lock"], 0)
    if asks:
        th.store(request, 0, 1)
        if th.load(request + 1, 1):  # slice_ctrl.granted
            th.rseq_slice_yield()
    th.local["switched_holding"] = switched and th.kt.stats.s_expired == expired


def _slice_lock_check(f: Final) -> str | None:
    for i, r in enumerate(f.results):
        if r.get("switched_holding"):
            return f"T{i} was switched out while holding the lock, with no expired slice extension"
    return _expect("count", f.word("count"), 2) or _expect("lock", f.word("lock"), 0)


def slice_lock() -> Scenario:
    return Scenario(
        "slice-lock",
        "two threads on CPU 0 take a lock around a non-atomic increment, each asking for a "
        "time-slice extension (prctl, slice_ctrl.request) and yielding after release if granted",
        "no holder is switched out while holding the lock unless its extension expired "
        "(the hold-time bound: the section plus slice_ext_nsec); count == 2, lock == 0",
        _slice_lock_check,
        [ThreadSpec(0, _slice_lock_thread), ThreadSpec(0, _slice_lock_thread)],
        memory={"lock": [0], "count": [0]},
        glibc="2.42",  # a 64-byte registration: v2 on 7.1
    )


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "percpu-counter": percpu_counter,
    "percpu-list": percpu_list,
    "percpu-buffer": percpu_buffer,
    "percpu-memcpy": percpu_memcpy,
    "spinlock": spinlock,
    "tcmalloc-slab-cache": tcmalloc_slab_cache,
    "syscall-in-cs": syscall_in_cs,
    "stale-rseq-cs": stale_rseq_cs,
    "signal-handler-cs": signal_handler_cs,
    "slice-lock": slice_lock,
}
