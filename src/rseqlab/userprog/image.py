"""The layout of a simulated process image: text, descriptors, heap and TLS.

A critical section needs real addresses: its instructions have IPs, its
``struct rseq_cs`` descriptor lives in read-only data, the 4-byte signature sits
just before its abort handler in text. :meth:`Image.site` lays one out per
named section (once per process; fork children inherit it with the memory).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..abi import RSEQ_SIG, StructRseqCs
from ..usermem import PAGE_SIZE, AddressSpace

TEXT_BASE = 0x40_0000
PLAIN_IP = 0x40_0800  # ordinary code: never inside a section
HANDLER_BASE = 0x48_0000  # signal handler entry points: HANDLER_BASE + 0x100 * sig
SITE_BASE = 0x50_0000
SITE_STRIDE = 0x1000
RODATA_BASE = 0x60_0000
HEAP_BASE = 0x1000_0000
TLS_BASE = 0x7F00_0000_0000
MAX_SECTION_INSNS = 0x700


@dataclass(frozen=True, slots=True)
class CsSite:
    """One critical section in the image."""

    name: str
    descriptor: int  # address of its struct rseq_cs
    pre_ip: int  # C code before arming (injection point 9, the CPU snapshot)
    arm_ip: int  # the store that arms rseq_cs (before start_ip)
    start_ip: int
    post_commit_ip: int  # first instruction after the commit
    abort_ip: int

    def ip(self, k: int) -> int:
        """IP of the k-th instruction of the section (0 = start_ip)."""
        ip = self.start_ip + k
        if ip >= self.post_commit_ip:
            raise ValueError(f"{self.name}: instruction {k} is past the commit")
        return ip


class Image:
    """Allocates sections, heap memory and TLS pages in one address space."""

    def __init__(self, mm: AddressSpace, *, signature: int = RSEQ_SIG) -> None:
        self.mm = mm
        self.signature = signature
        self.sites: dict[str, CsSite] = {}
        self.abort_ips: set[int] = set()
        self._heap_next = HEAP_BASE
        self._heap_mapped = HEAP_BASE
        self._tls_free: list[int] = []
        self._tls_next = TLS_BASE
        mm.map(TEXT_BASE, SITE_BASE - TEXT_BASE, writable=False)
        mm.map(SITE_BASE, 0x10_0000, writable=False)
        mm.map(RODATA_BASE, 0x1_0000, writable=False)

    def forked(self, mm: AddressSpace) -> Image:
        """The child's view after fork: same layout, the child's (COW) memory."""
        child = Image.__new__(Image)
        child.mm = mm
        child.signature = self.signature
        child.sites = dict(self.sites)
        child.abort_ips = set(self.abort_ips)
        child._heap_next, child._heap_mapped = self._heap_next, self._heap_mapped
        child._tls_free = list(self._tls_free)
        child._tls_next = self._tls_next
        return child

    def site(self, name: str, n_insns: int) -> CsSite:
        """The section ``name`` with ``n_insns`` instructions, laid out on first use."""
        found = self.sites.get(name)
        if found is not None:
            return found
        if not 1 <= n_insns <= MAX_SECTION_INSNS:
            raise ValueError(f"{name}: a section needs 1..{MAX_SECTION_INSNS} instructions")
        index = len(self.sites)
        base = SITE_BASE + index * SITE_STRIDE
        start = base + 0x20
        abort = base + 0x800
        desc = RODATA_BASE + index * StructRseqCs.SIZE
        s = CsSite(name, desc, base, base + 0x10, start, start + n_insns, abort)
        mm = self.mm
        mm.poke(abort - 4, 4, self.signature)
        mm.poke(desc + StructRseqCs.VERSION.offset, 4, 0)
        mm.poke(desc + StructRseqCs.FLAGS.offset, 4, 0)
        mm.poke(desc + StructRseqCs.START_IP.offset, 8, start)
        mm.poke(desc + StructRseqCs.POST_COMMIT_OFFSET.offset, 8, n_insns)
        mm.poke(desc + StructRseqCs.ABORT_IP.offset, 8, abort)
        self.sites[name] = s
        self.abort_ips.add(abort)
        return s

    def alloc(self, size: int, align: int = 8) -> int:
        """Zeroed heap memory (a bump allocator; the simulated programs never free)."""
        addr = -(-self._heap_next // align) * align
        end = addr + size
        while self._heap_mapped < end:
            self.mm.map(self._heap_mapped, PAGE_SIZE)
            self._heap_mapped += PAGE_SIZE
        self._heap_next = end
        return addr

    def new_tls(self) -> int:
        if self._tls_free:
            return self._tls_free.pop()
        addr = self._tls_next
        self._tls_next += PAGE_SIZE
        self.mm.map(addr, PAGE_SIZE)
        return addr

    def free_tls(self, addr: int) -> None:
        self._tls_free.append(addr)


def handler_ip(sig: int) -> int:
    return HANDLER_BASE + 0x100 * sig
