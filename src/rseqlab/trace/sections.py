"""The rseq critical sections a program declares: its ``__rseq_cs`` ELF section.

The kernel selftests (tools/testing/selftests/rseq, ``__RSEQ_ASM_DEFINE_TABLE``), librseq and
TCMalloc emit every ``struct rseq_cs`` descriptor into a section named ``__rseq_cs`` (and a pointer
to each into ``__rseq_cs_ptr_array``), so a debugger or a tool can find them. A descriptor is 32
bytes (include/uapi/linux/rseq.h): ``u32 version, u32 flags, u64 start_ip, u64
post_commit_offset, u64 abort_ip``; in a non-PIE executable (the static builds rseqlab runs in
guests) its link address is its run-time address.

A replay that knows where an interrupt hit user space (``Kind.IRQ`` rows with the user IP) uses
these to tell whether it hit a section: a section stores its descriptor's address into
``rseq->rseq_cs`` just before its start label, so an IP inside a section means the kernel's check
on the way out finds that descriptor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SECTION = "__rseq_cs"
DESCRIPTOR_SIZE = 32


@dataclass(frozen=True, slots=True)
class Section:
    """One descriptor: where it lives and what it says."""

    desc: int  # the descriptor's address (what rseq_cs holds)
    start_ip: int
    post_commit_offset: int
    abort_ip: int

    def contains(self, ip: int) -> bool:
        # The kernel's own test (rseq_update_user_cs): ip - start_ip < post_commit_offset, unsigned.
        return 0 <= ip - self.start_ip < self.post_commit_offset

    def as_list(self) -> list[int]:
        return [self.desc, self.start_ip, self.post_commit_offset, self.abort_ip]


def read_sections(path: str | Path) -> list[Section]:
    """The descriptors of ``path`` (empty: not an ELF file, a PIE/shared object, or no section)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    if not Path(path).is_file():  # a device or FIFO named by a recording is not read
        return []
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            if elf["e_type"] != "ET_EXEC" or not elf.little_endian or elf.elfclass != 64:
                return []  # a load bias would be needed: not known from the recording
            sec = elf.get_section_by_name(SECTION)
            if sec is None:
                return []
            data, base = sec.data(), int(sec["sh_addr"])
    except (OSError, ELFError):
        return []
    out = []
    for at in range(0, len(data) - DESCRIPTOR_SIZE + 1, DESCRIPTOR_SIZE):
        start = int.from_bytes(data[at + 8:at + 16], "little")
        offset = int.from_bytes(data[at + 16:at + 24], "little")
        abort = int.from_bytes(data[at + 24:at + 32], "little")
        if offset:
            out.append(Section(base + at, start, offset, abort))
    return out


def from_meta(rows) -> list[Section]:
    """Sections as stored in a trace's metadata (``[desc, start_ip, post_commit_offset, abort_ip]``)."""
    return [Section(*(int(x) for x in r)) for r in rows]


def find(sections: list[Section], ip: int) -> Section | None:
    for s in sections:
        if s.contains(ip):
            return s
    return None
