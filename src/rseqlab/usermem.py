"""Simulated user memory: one address space per process, holding real bytes.

The kernel model never touches Python objects for user data: it reads and
writes the little-endian bytes of the rseq area and of the descriptors here,
so a user program (or a test) that scribbles over a field sees exactly what
the kernel would see.

Each page is mapped with a state that decides what an access costs:

* present and writable: any access succeeds;
* read-only (text, a descriptor in ``.rodata``): a write is an unresolvable fault;
* copy-on-write (shared with a fork parent or child): a write must break the
  sharing first, which needs a resolvable page fault;
* not present (never touched, or swapped out): any access needs a resolvable
  page fault;
* unmapped: every access is an unresolvable fault (``EFAULT``).

Whether a fault is resolvable depends on the caller: the 6.19 exit fast path
runs with page faults disabled (irqs off), so there even a resolvable fault
fails the access; the legacy handler and the slow paths run preemptible and
resolve it. ``inject_fault`` makes the next accesses to a page fail hard,
whatever the state, to exercise error paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .abi import U64_MASK

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT


class Access(Enum):
    READ = "read"
    WRITE = "write"


_ZERO_PAGE = bytes(PAGE_SIZE)


@dataclass(slots=True)
class _Page:
    """A physical page; shared by several address spaces after fork.

    Its bytes are allocated on the first write: until then it reads as zeros
    (a simulated program maps far more than it touches).
    """

    data: bytearray | None = None
    mappers: int = 1

    def view(self) -> bytes | bytearray:
        return _ZERO_PAGE if self.data is None else self.data

    def writable(self) -> bytearray:
        if self.data is None:
            self.data = bytearray(PAGE_SIZE)
        return self.data


@dataclass(slots=True)
class _Pte:
    """One address space's mapping of a page."""

    page: _Page
    writable: bool = True  # the VMA allows writes
    present: bool = True  # resident: no fault needed to reach it
    cow: bool = False  # write-protected until a fault copies (or claims) the page


@dataclass(slots=True)
class FaultStats:
    """Page faults taken on behalf of accesses to this address space."""

    resolved: int = 0  # minor faults made the page present
    cow_breaks: int = 0  # a write fault gave this process its own copy
    failed: int = 0  # accesses that ended in a fault the caller could not resolve


class AddressSpace:
    """The user address space of one process (an ``mm``)."""

    def __init__(self) -> None:
        self._ptes: dict[int, _Pte] = {}
        # Mapped ranges whose entries are made on first use: (first pfn, end pfn, writable,
        # present). An image maps ~500 pages and touches a few; an entry in ``_ptes`` always
        # wins over a range, and unmap carves ranges, so the two never disagree.
        self._unpopulated: list[tuple[int, int, bool, bool]] = []
        self._injected: dict[int, int] = {}  # page number -> hard faults still to inject
        self.faults = FaultStats()

    # ------------------------------------------------------------------
    # Mapping management (what mmap/mprotect/munmap/fork would do)
    # ------------------------------------------------------------------
    def map(self, addr: int, length: int, *, writable: bool = True, present: bool = True) -> None:
        """Map fresh zeroed pages covering ``[addr, addr+length)``."""
        pfns = _pages(addr, length)
        if not pfns:
            return
        lo, hi = pfns.start, pfns.stop
        ranges = self._unpopulated
        ptes = self._ptes
        clash = [r[0] for r in ranges if r[0] < hi and lo < r[1]]
        clash += [p for p in ptes if lo <= p < hi] if len(ptes) < hi - lo else [p for p in pfns if p in ptes]
        if clash:
            first = max(lo, min(clash))
            raise ValueError(f"page {first << PAGE_SHIFT:#x} is already mapped")
        for i, r in enumerate(ranges):
            if r[1] == lo and r[2:] == (writable, present):
                ranges[i] = (r[0], hi, writable, present)  # the heap or TLS grows: the list stays short
                return
        ranges.append((lo, hi, writable, present))

    def unmap(self, addr: int, length: int) -> None:
        pfns = _pages(addr, length)
        for pfn in pfns:
            pte = self._ptes.pop(pfn, None)
            if pte is not None:
                pte.page.mappers -= 1
        if pfns and self._unpopulated:
            lo, hi = pfns.start, pfns.stop
            kept = []
            for r in self._unpopulated:
                if r[1] <= lo or r[0] >= hi:
                    kept.append(r)
                    continue
                if r[0] < lo:
                    kept.append((r[0], lo, *r[2:]))
                if r[1] > hi:
                    kept.append((hi, r[1], *r[2:]))
            self._unpopulated = kept

    def _lookup(self, pfn: int) -> _Pte | None:
        """The page table entry of ``pfn``, made now if its mapping had none yet."""
        pte = self._ptes.get(pfn)
        if pte is None and self._unpopulated:
            for lo, hi, writable, present in self._unpopulated:
                if lo <= pfn < hi:
                    pte = self._ptes[pfn] = _Pte(_Page(), writable=writable, present=present)
                    break
        return pte

    def populate(self) -> dict[int, _Pte]:
        """Make every mapped page's entry (fork copies them all; ``check`` hashes them)."""
        for lo, hi, writable, present in self._unpopulated:
            for pfn in range(lo, hi):
                if pfn not in self._ptes:
                    self._ptes[pfn] = _Pte(_Page(), writable=writable, present=present)
        self._unpopulated = []
        return self._ptes

    def writable_pages(self) -> list[tuple[int, bytes | bytearray]]:
        """``(pfn, bytes)`` of every writable mapped page in page order, the bytes of
        :meth:`populate`'s entries without making them (``check`` hashes these per state)."""
        ptes = self._ptes
        pages = {pfn: pte.page.view() for pfn, pte in ptes.items() if pte.writable}
        for lo, hi, writable, _ in self._unpopulated:
            if writable:
                for pfn in range(lo, hi):
                    if pfn not in ptes:
                        pages[pfn] = _ZERO_PAGE
        return sorted(pages.items())

    def protect(self, addr: int, length: int, *, writable: bool) -> None:
        for pfn in _pages(addr, length):
            self._pte(pfn).writable = writable

    def evict(self, addr: int, length: int) -> None:
        """Make pages non-resident (swapped out): the next access needs a fault."""
        for pfn in _pages(addr, length):
            self._pte(pfn).present = False

    def inject_fault(self, addr: int, times: int = 1) -> None:
        """The next ``times`` accesses touching the page of ``addr`` fail hard."""
        pfn = addr >> PAGE_SHIFT
        self._injected[pfn] = self._injected.get(pfn, 0) + times

    def fork(self) -> AddressSpace:
        """Models the page-table copy of ``fork()``: private writable pages become COW in both."""
        child = AddressSpace()
        for pfn, pte in self.populate().items():
            pte.page.mappers += 1
            if pte.writable:
                pte.cow = True
            child._ptes[pfn] = _Pte(pte.page, writable=pte.writable, present=pte.present, cow=pte.cow)
        return child

    def is_mapped(self, addr: int) -> bool:
        pfn = addr >> PAGE_SHIFT
        return pfn in self._ptes or any(lo <= pfn < hi for lo, hi, *_ in self._unpopulated)

    def is_writable(self, addr: int) -> bool:
        """Mapped and the mapping allows writes (COW or not)."""
        pte = self._lookup(addr >> PAGE_SHIFT)
        return pte is not None and pte.writable

    def is_cow(self, addr: int) -> bool:
        pte = self._ptes.get(addr >> PAGE_SHIFT)
        return bool(pte and pte.cow)

    # ------------------------------------------------------------------
    # Accesses with fault semantics
    # ------------------------------------------------------------------
    def read(self, addr: int, size: int, *, faults_allowed: bool = True) -> int | None:
        """Read a little-endian unsigned value; ``None`` if the access faulted."""
        off = addr & (PAGE_SIZE - 1)
        if addr >= 0 and off + size <= PAGE_SIZE and not self._injected:
            # NOTE: the common case, inlined: one present page, no injected faults.
            pte = self._ptes.get(addr >> PAGE_SHIFT)
            if pte is not None and pte.present:
                data = pte.page.data
                return 0 if data is None else int.from_bytes(data[off : off + size], "little")
        if not self._prepare(addr, size, Access.READ, faults_allowed):
            return None
        return int.from_bytes(self._gather(addr, size), "little")

    def write(self, addr: int, size: int, value: int, *, faults_allowed: bool = True) -> bool:
        """Write a little-endian value (negative values in two's complement); False on fault."""
        raw = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        off = addr & (PAGE_SIZE - 1)
        if addr >= 0 and off + size <= PAGE_SIZE and not self._injected:
            # NOTE: the common case, inlined: one present, writable, private page.
            pte = self._ptes.get(addr >> PAGE_SHIFT)
            if pte is not None and pte.present and pte.writable and not pte.cow:
                pte.page.writable()[off : off + size] = raw
                return True
        if not self._prepare(addr, size, Access.WRITE, faults_allowed):
            return False
        self._scatter(addr, raw)
        return True

    def _prepare(self, addr: int, size: int, kind: Access, faults_allowed: bool) -> bool:
        if addr < 0 or addr + size - 1 > U64_MASK:
            self.faults.failed += 1
            return False
        pfns = list(_pages(addr, size))
        for pfn in pfns:
            if self._injected.get(pfn):
                self._injected[pfn] -= 1
                if not self._injected[pfn]:
                    del self._injected[pfn]
                self.faults.failed += 1
                return False
            pte = self._lookup(pfn)
            if pte is None or (kind is Access.WRITE and not pte.writable):
                self.faults.failed += 1
                return False
            needs_fault = not pte.present or (kind is Access.WRITE and pte.cow)
            if needs_fault and not faults_allowed:
                self.faults.failed += 1
                return False
        for pfn in pfns:
            self._resolve(self._ptes[pfn], kind)
        return True

    def _resolve(self, pte: _Pte, kind: Access) -> None:
        if not pte.present:
            pte.present = True
            self.faults.resolved += 1
        if kind is Access.WRITE and pte.cow:
            # do_wp_page(): copy if still shared, otherwise just claim the page.
            if pte.page.mappers > 1:
                pte.page.mappers -= 1
                pte.page = _Page(None if pte.page.data is None else bytearray(pte.page.data))
            pte.cow = False
            self.faults.cow_breaks += 1

    def fault_in(self, addr: int, size: int, *, write: bool) -> tuple[bool, bool]:
        """Resolve the fault a user access takes: (resolved, needed I/O i.e. page not present)."""
        pte = self._lookup(addr >> PAGE_SHIFT)
        major = pte is not None and not pte.present
        return self._prepare(addr, size, Access.WRITE if write else Access.READ, True), major

    def state_key(self, addr: int, size: int) -> tuple | None:
        """Everything an access to ``[addr, addr+size)`` can observe: per page (writable, present,
        COW, injected faults), then the bytes; None if a page is unmapped. Used by the fast replay
        to recognise a task whose state did not change."""
        out = []
        for pfn in _pages(addr, size):
            pte = self._lookup(pfn)
            if pte is None:
                return None
            out.append((pte.writable, pte.present, pte.cow, self._injected.get(pfn, 0)))
        out.append(self._gather(addr, size))
        return tuple(out)

    # ------------------------------------------------------------------
    # Raw access for set-up and inspection: no faults, no accounting
    # ------------------------------------------------------------------
    def peek(self, addr: int, size: int) -> int:
        return int.from_bytes(self._gather(addr, size), "little")

    def poke(self, addr: int, size: int, value: int) -> None:
        """Store bytes as the loader or a debugger would: ignores protection, not COW sharing."""
        for pfn in _pages(addr, size):
            pte = self._pte(pfn)
            if pte.cow and pte.page.mappers > 1:
                pte.page.mappers -= 1
                pte.page = _Page(None if pte.page.data is None else bytearray(pte.page.data))
                pte.cow = False
        self._scatter(addr, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))

    def _pte(self, pfn: int) -> _Pte:
        pte = self._lookup(pfn)
        if pte is None:
            raise ValueError(f"page {pfn << PAGE_SHIFT:#x} is not mapped")
        return pte

    def _gather(self, addr: int, size: int) -> bytes:
        out = bytearray()
        while size:
            pfn, off = addr >> PAGE_SHIFT, addr & (PAGE_SIZE - 1)
            n = min(size, PAGE_SIZE - off)
            out += self._pte(pfn).page.view()[off : off + n]
            addr, size = addr + n, size - n
        return bytes(out)

    def _scatter(self, addr: int, data: bytes) -> None:
        while data:
            pfn, off = addr >> PAGE_SHIFT, addr & (PAGE_SIZE - 1)
            n = min(len(data), PAGE_SIZE - off)
            self._pte(pfn).page.writable()[off : off + n] = data[:n]
            addr, data = addr + n, data[n:]


def _pages(addr: int, length: int) -> range:
    if length <= 0:
        return range(0)
    return range(addr >> PAGE_SHIFT, ((addr + length - 1) >> PAGE_SHIFT) + 1)
