"""A TCMalloc-style per-CPU slab cache (userspace spec §5.1), one size class.

What it keeps of TCMalloc's design, and why each piece matters here:

* **Slabs.** Each CPU owns a region: a packed header ``{u16 current, u16 end}``
  at offset 0, then pointer slots. Slot 0 (``begin - 1``) holds a self-pointer
  with the low bit set: popping it means "underflow".
* **The cached slabs pointer overlaps ``cpu_id_start``.** Each thread registers
  its own 32-byte ``__rseq_abi`` (glibc's registration turned off) and keeps the
  8-byte TLS word ``tcmalloc_slabs`` 4 bytes below it, so the word's upper half
  *is* ``cpu_id_start``. The word holds the current CPU's slabs address with the
  top bit set. A kernel that rewrites ``cpu_id_start`` after every preemption,
  migration, signal or membarrier IPI (6.18) clears that bit, which invalidates
  the cache; the fast path only tests the bit.
* **Pop and push are rseq critical sections that do not compare the CPU.** They
  trust the cached pointer: load the word, bail out to the slow path if the top
  bit is clear, read ``current``, and commit with one 16-bit store to
  ``hdr.current``; push stores the item into its slot speculatively first. An
  abort jumps back to the restart label, which re-arms ``rseq_cs``.
* **The slow path caches the slab** (``CacheCpuSlab``): read ``cpu_id``, store the
  word, re-read ``cpu_id`` (migrated meanwhile: retry), then check
  ``stopped[cpu]``; while a CPU is stopped the word is stored without the bit and
  the thread uses the central free list.
* **Cross-CPU drain** (the background thread's resize/drain): set
  ``stopped[cpu]``, ``membarrier(PRIVATE_EXPEDITED_RSEQ, FLAG_CPU, cpu)``
  (``FenceCpu``), then move the slab's objects to the central free list and reset
  ``current``. The fence is correct only if every thread that could still use
  the slab has lost its cached pointer: in-flight sections are aborted by the
  IPI, and the cache is invalidated by the rewrite of ``cpu_id_start`` that the
  IPI's notify-resume work does on 6.18.

On 6.19 the exit path writes the IDs only when the CPU or mm_cid changed, so a
thread the fence interrupts (or that was preempted and came back to the same
CPU) keeps a valid-looking cached pointer and keeps popping from a slab that the
drainer is emptying: the drainer moves an object to the central list while the
thread also hands it out, and the same object is handed out twice (google/tcmalloc
#292, MongoDB on 6.19). :class:`SlabCache` records every hand-out in an oracle
outside simulated memory (what ASan would see) and reports double hand-outs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..abi import RSEQ_SIG, StructRseq
from ..machine.interface import RseqAbort
from .api import (
    MEMBARRIER_CMD_FLAG_CPU,
    MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ,
    MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ,
)

CACHED_SLABS_BIT = 1 << 63
ABI_OFFSET = 0x200  # tcmalloc's own __rseq_abi in the thread's TLS page (32-byte aligned)
SLAB_STRIDE = 0x1000  # 1 << shift (TCMalloc's default shift is 18; one small class here)
SLOTS = 8  # slot i at slab + SLOTS + 8 * i
BEGIN = 1  # slot 0 holds the underflow marker
OBJECT_SIZE = 32
UNDERFLOW = "underflow"
OVERFLOW = "overflow"
UNCACHED = "uncached"


@dataclass
class Oracle:
    """Who holds which object right now, and every double hand-out seen."""

    held: dict[int, int] = field(default_factory=dict)
    double: list[tuple[int, int, int]] = field(default_factory=list)  # (object, holder, second taker)
    allocations: int = 0

    def handed_out(self, obj: int, tid: int) -> None:
        self.allocations += 1
        if obj in self.held:
            self.double.append((obj, self.held[obj], tid))
        self.held[obj] = tid

    def returned(self, obj: int) -> None:
        self.held.pop(obj, None)


class SlabCache:
    """The allocator's shared state: slabs, ``stopped[]``, the central free list."""

    def __init__(self, th, cpus: int, *, capacity: int = 32, prefill: int = 8, fence: bool = True) -> None:
        """``fence=False`` leaves the membarrier registration to :meth:`init_fast_per_cpu`."""
        self.cpus = cpus
        self.capacity = capacity
        self.oracle = Oracle()
        #: None until the first thread tried to register (TCMalloc's ``init_status``), then
        #: True (per-CPU mode) or False (slow mode: no rseq at all for this process).
        self.per_cpu: bool | None = None
        self.slow_mode_threads = 0
        img, mm = th.image, th.mm
        self.slabs = img.alloc(SLAB_STRIDE * cpus, SLAB_STRIDE)
        self.stopped = img.alloc(8 * cpus, 64)
        self.central_lock = img.alloc(8, 64)
        self.central_head = img.alloc(8, 64)
        self.objects: list[int] = []
        if fence:
            self._register_fence(th)
        for cpu in range(cpus):
            slab = self.slab_for(cpu)
            mm.poke(self.slot(slab, 0), 8, (self.slot(slab, 0)) | 1)  # underflow marker
            for i in range(prefill):
                obj = self.new_object(th, poke=True)
                mm.poke(self.slot(slab, BEGIN + i), 8, obj)
            mm.poke(slab, 2, BEGIN + prefill)
            mm.poke(slab + 2, 2, BEGIN + capacity)

    # -- layout -------------------------------------------------------------
    def slab_for(self, cpu: int) -> int:
        return self.slabs + SLAB_STRIDE * cpu

    @staticmethod
    def slot(slab: int, i: int) -> int:
        return slab + SLOTS + 8 * i

    def new_object(self, th, *, poke: bool = False) -> int:
        if not poke:
            th.insn(th.ip)  # the page allocator's work, reduced to one instruction
        obj = th.image.alloc(OBJECT_SIZE, OBJECT_SIZE)
        self.objects.append(obj)
        return obj

    # -- per thread -----------------------------------------------------------
    @staticmethod
    def abi(th) -> int:
        return th.st.tls + ABI_OFFSET

    def word(self, th) -> int:
        """``tcmalloc_slabs``: its upper 4 bytes are ``__rseq_abi.cpu_id_start``."""
        return self.abi(th) + StructRseq.CPU_ID_START.offset - 4

    def register(self, th) -> int:
        """tcmalloc registers its own 32-byte area (signals masked; no glibc registration)."""
        ret = th.rseq(self.abi(th), 32, 0, RSEQ_SIG)
        if ret == 0:
            th.area = self.abi(th)
        return ret

    @staticmethod
    def _register_fence(th) -> None:
        # FenceCpu needs the process registered for the RSEQ membarrier.
        if th.membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ):
            raise RuntimeError("membarrier REGISTER_PRIVATE_EXPEDITED_RSEQ failed")

    def init_fast_per_cpu(self, th) -> bool:
        """TCMalloc's ``InitFastPerCpu`` (tcmalloc/internal/percpu.cc): may this thread use the slabs?

        The first thread decides for the whole process: its own registration (``InitThreadPerCpu``)
        either succeeds (per-CPU mode, then the RSEQ membarrier is registered for ``FenceCpu``) or
        fails, and the process stays in slow mode. When glibc already registered the thread's
        area the kernel refuses a second one (``sys_rseq``: -EINVAL for another address, -EBUSY
        for the same), so under glibc >= 2.35 without ``glibc.pthread.rseq=0`` TCMalloc runs
        without per-CPU caches. Later threads of a per-CPU process must register too (TCMalloc
        checks it; all threads of a process share glibc's setting, so it holds here)."""
        if th.local.get("tcmalloc_per_cpu") is not None:
            return th.local["tcmalloc_per_cpu"]
        if self.per_cpu is None:
            self.per_cpu = self.register(th) == 0
            if self.per_cpu:
                self._register_fence(th)
            fast = self.per_cpu
        elif self.per_cpu:
            if self.register(th) != 0:
                raise RuntimeError("TCMalloc: a thread of a per-CPU process could not register rseq")
            fast = True
        else:
            fast = False
        if not fast:
            self.slow_mode_threads += 1
        th.local["tcmalloc_per_cpu"] = fast
        return fast

    # -- the rseq sections ------------------------------------------------------
    def _arm(self, th, site) -> None:
        th.store(self.abi(th) + StructRseq.RSEQ_CS.offset, site.descriptor, ip=site.arm_ip)

    def pop(self, th, window_ns: int = 0):
        """The pop section: an object, or UNCACHED / UNDERFLOW for the slow path."""
        site = th.image.site("tcmalloc_pop", 5)
        while True:  # the restart label: the abort trampoline jumps back here
            try:
                self._arm(th, site)
                word = th.load(self.word(th), 8, ip=site.ip(0))
                if not word & CACHED_SLABS_BIT:
                    return UNCACHED
                slab = word & ~CACHED_SLABS_BIT
                current = th.load(slab, 2, ip=site.ip(1))
                item = th.load(self.slot(slab, current - 1), 8, ip=site.ip(2))
                if item & 1:
                    return UNDERFLOW
                th.compute(window_ns, site.ip(3))  # prefetch and bookkeeping before the commit
                th.store(slab, current - 1, 2, ip=site.ip(4))  # commit: hdr.current
                return item
            except RseqAbort:
                th.local["nr_abort"] = th.local.get("nr_abort", 0) + 1

    def push(self, th, item: int):
        """The push section: True, or UNCACHED / OVERFLOW for the slow path."""
        site = th.image.site("tcmalloc_push", 5)
        while True:
            try:
                self._arm(th, site)
                word = th.load(self.word(th), 8, ip=site.ip(0))
                if not word & CACHED_SLABS_BIT:
                    return UNCACHED
                slab = word & ~CACHED_SLABS_BIT
                current = th.load(slab, 2, ip=site.ip(1))
                if current >= th.load(slab + 2, 2, ip=site.ip(2)):
                    return OVERFLOW
                th.store(self.slot(slab, current), item, ip=site.ip(3))  # speculative
                th.store(slab, current + 1, 2, ip=site.ip(4))  # commit: hdr.current
                return True
            except RseqAbort:
                th.local["nr_abort"] = th.local.get("nr_abort", 0) + 1

    # -- slow paths (plain code) -------------------------------------------------
    def cache_cpu_slab(self, th) -> bool:
        """``CacheCpuSlab``: cache this CPU's slab unless the CPU is stopped."""
        cpu_id = self.abi(th) + StructRseq.CPU_ID.offset
        while True:
            cpu = th.load(cpu_id, 4, signed=True)
            th.store(self.word(th), self.slab_for(cpu) | CACHED_SLABS_BIT)
            if th.load(cpu_id, 4, signed=True) != cpu:
                continue  # migrated meanwhile
            if th.load(self.stopped + 8 * cpu):
                th.store(self.word(th), self.slab_for(cpu))  # uncached while the CPU is stopped
                return False
            th.local["recached"] = th.local.get("recached", 0) + 1
            return True

    def _lock(self, th) -> None:
        while th.cmpxchg(self.central_lock, 0, 1) != 0:
            pass

    def _unlock(self, th) -> None:
        th.store(self.central_lock, 0)

    def central_pop(self, th) -> int:
        self._lock(th)
        head = th.load(self.central_head)
        if head:
            th.store(self.central_head, th.load(head))
        self._unlock(th)
        return head or self.new_object(th)

    def central_push(self, th, obj: int) -> None:
        self._lock(th)
        th.store(obj, th.load(self.central_head))
        th.store(self.central_head, obj)
        self._unlock(th)

    # -- the API -------------------------------------------------------------------
    def malloc(self, th, window_ns: int = 0) -> int:
        if th.local.get("tcmalloc_per_cpu") is False:
            # Slow mode: TCMalloc's per-thread caches, which involve no rseq; the central list
            # (plain, locked code) stands in for them.
            obj = self.central_pop(th)
            self.oracle.handed_out(obj, th.tid)
            return obj
        while True:
            got = self.pop(th, window_ns)
            if got == UNCACHED:
                if self.cache_cpu_slab(th):
                    continue
                obj = self.central_pop(th)
            elif got == UNDERFLOW:
                obj = self.central_pop(th)
            else:
                obj = got
            self.oracle.handed_out(obj, th.tid)
            return obj

    def free(self, th, obj: int) -> None:
        self.oracle.returned(obj)
        if th.local.get("tcmalloc_per_cpu") is False:
            self.central_push(th, obj)
            return
        while True:
            got = self.push(th, obj)
            if got is True:
                return
            if got == UNCACHED and self.cache_cpu_slab(th):
                continue
            self.central_push(th, obj)
            return

    def drain(self, th, cpu: int) -> int:
        """The background thread empties ``cpu``'s slab; returns how many objects it moved.

        In slow mode no thread caches anything per CPU, so there is nothing to fence or move."""
        if self.per_cpu is False:
            return 0
        th.store(self.stopped + 8 * cpu, 1)
        ret = th.membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, MEMBARRIER_CMD_FLAG_CPU, cpu)
        if ret not in (0, -6):  # ENXIO: no such CPU
            raise RuntimeError(f"FenceCpu: membarrier failed ({ret})")
        slab = self.slab_for(cpu)
        current = th.load(slab, 2)
        for i in range(current - 1, BEGIN - 1, -1):
            self.central_push(th, th.load(self.slot(slab, i)))
        th.store(slab, BEGIN, 2)
        th.store(self.stopped + 8 * cpu, 0)
        return current - BEGIN

    # -- the final audit (single-threaded) ---------------------------------------------
    def free_objects(self, mm) -> list[int]:
        """Every object the free structures hold (slabs, then the central list)."""
        found: list[int] = []
        for cpu in range(self.cpus):
            slab = self.slab_for(cpu)
            found += [mm.peek(self.slot(slab, i), 8) for i in range(BEGIN, mm.peek(slab, 2))]
        node, steps = mm.peek(self.central_head, 8), 0
        while node and steps <= len(self.objects):
            found.append(node)
            node, steps = mm.peek(node, 8), steps + 1
        return found
