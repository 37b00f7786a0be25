"""What ``rseqlab check`` explores: a scenario of threads, their memory and its invariant.

A :class:`Scenario` is data plus plain Python: named memory (arrays of u64
words on the simulated heap), one program per thread (``program(th, mem)``,
run on the machine's :class:`~rseqlab.userprog.api.Thread`, so every user
instruction is a boundary where the explorer may land an interrupt), an
optional SIGUSR1 handler program, and the invariant, checked on the final
memory once every thread has exited. Built-in scenarios
(:mod:`.scenarios`) and step files (:mod:`.stepfile`) both produce one.

:class:`Cs` is a hand-written critical section for programs that are not one
of librseq's seven primitives (TCMalloc's slab pop, a section with an illegal
syscall, a descriptor in writable memory): it lays out a site in the image,
arms ``rseq_cs``, compares the CPU at ``start_ip`` and runs its instructions
at consecutive IPs; the last one must be the commit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..abi import StructRseq
from ..machine.interface import RseqAbort
from ..userprog.image import PLAIN_IP
from ..userprog.primitives import count_abort

WORD = 8


@dataclass(frozen=True)
class ThreadSpec:
    """One thread: the CPU it starts on and its program ``program(th, mem)``."""

    cpu: int
    program: Callable[[Any, Memory], None]


@dataclass
class Scenario:
    """Threads running critical sections, their memory, and what must hold at the end."""

    name: str
    summary: str
    #: The invariant in words (``--list``) ...
    invariant: str
    #: ... and as code: ``check(final) -> None`` if it holds, else what is wrong.
    check: Callable[[Final], str | None]
    threads: list[ThreadSpec]
    #: Named arrays of u64 words: a value, or ``callable(mem) -> value`` for addresses.
    memory: dict[str, list[Any]] = field(default_factory=dict)
    #: SIGUSR1 handler ``handler(th, mem)``; None installs an empty one (signals still land).
    handler: Callable[[Any, Memory], None] | None = None
    cpus: int = 2
    #: The threads use ``membarrier(PRIVATE_EXPEDITED_RSEQ)`` (registered at start-up).
    membarrier: bool = False
    #: Where it came from: "built-in" or a step file's path.
    source: str = "built-in"
    #: The glibc that registers each thread (2.41+ registers the feature size: v2 on 7.1).
    glibc: str = "2.36"


class Memory:
    """The scenario's named memory: addresses while running, values at the end."""

    def __init__(self) -> None:
        self.symbols: dict[str, tuple[int, int]] = {}  # name -> (address, words)
        self.mm: Any = None

    def layout(self, image: Any, spec: dict[str, list[Any]]) -> None:
        """Allocate every symbol (32-byte aligned), then store the initial values."""
        self.mm = image.mm
        for name, words in spec.items():
            self.symbols[name] = (image.alloc(max(1, len(words)) * WORD, align=32), len(words))
        for name, words in spec.items():
            base, _ = self.symbols[name]
            for i, value in enumerate(words):
                value = value(self) if callable(value) else value
                image.mm.poke(base + i * WORD, WORD, value)

    def addr(self, name: str, index: int = 0) -> int:
        base, _ = self.symbols[name]
        return base + index * WORD

    def __getitem__(self, key: tuple[str, int] | str) -> int:
        """``mem["counter", 1]``: the address of word 1 of ``counter``."""
        if isinstance(key, str):
            return self.addr(key)
        return self.addr(*key)

    def words(self, name: str) -> list[int]:
        base, n = self.symbols[name]
        return [self.mm.peek(base + i * WORD, WORD) for i in range(n)]

    def word(self, name: str, index: int = 0) -> int:
        return self.mm.peek(self.addr(name, index), WORD)

    def name_of(self, addr: int) -> str | None:
        """``counter[1]`` (or ``counter[1]+2`` inside a word) for an address of the scenario."""
        for name, (base, n) in self.symbols.items():
            if base <= addr < base + max(n, 1) * WORD:
                index, off = divmod(addr - base, WORD)
                return f"{name}[{index}]" + (f"+{off}" if off else "")
        return None


@dataclass
class Final:
    """What the invariant sees: final memory, and how each thread ended."""

    mem: Memory
    #: tid -> the signal that killed the thread (threads that exited normally are absent).
    killed: dict[int, int]
    #: Threads' ``th.local`` dictionaries, by thread index (for invariants over results).
    results: list[Any]

    def words(self, name: str) -> list[int]:
        return self.mem.words(name)

    def word(self, name: str, index: int = 0) -> int:
        return self.mem.word(name, index)


class Cs:
    """A hand-written critical section (see the module docstring).

    ``run(cpu, body)`` arms ``rseq_cs`` with the descriptor (one store), compares
    ``cpu_id`` with ``cpu`` at ``start_ip`` (unless ``check_cpu`` is False, as
    in TCMalloc's sections, which trust a cached slab word instead) and calls
    ``body(cs)``; the body's instructions use ``cs.load/store/syscall`` with
    their index ``k >= 1``. Returns the body's value, or -1 if the section
    aborted (kernel fixup or CPU mismatch).
    """

    def __init__(self, th: Any, name: str, n_insns: int, *, check_cpu: bool = True,
                 descriptor: int | None = None) -> None:
        self.th = th
        self.site = th.image.site(name, n_insns)
        self.check_cpu = check_cpu
        self.descriptor = self.site.descriptor if descriptor is None else descriptor

    def run(self, cpu: int, body: Callable[[Cs], int]) -> int:
        th, site = self.th, self.site
        try:
            th.store(th.area + StructRseq.RSEQ_CS.offset, self.descriptor, ip=site.arm_ip)
            if self.check_cpu:
                f = StructRseq.CPU_ID
                if th.load(th.area + f.offset, f.size, ip=site.ip(0), signed=True) != cpu:
                    count_abort(th)
                    return -1
            else:
                th.insn(site.ip(0))
            ret = body(self)
        except RseqAbort:
            count_abort(th)
            return -1
        if ret != 0:
            left_section(th)
        return ret

    def load(self, addr: int, k: int, size: int = WORD) -> int:
        return self.th.load(addr, size, ip=self.site.ip(k))

    def store(self, addr: int, value: int, k: int, size: int = WORD) -> None:
        self.th.store(addr, value, size, ip=self.site.ip(k))

    def syscall(self, k: int) -> int:
        """A system call from inside the section (an ABI violation): getpid()."""
        self.th.insn(self.site.ip(k))
        return self.th.getpid()


def left_section(th: Any) -> None:
    """The jump to a section's ne/eq exit label: the next syscall's IP is outside the section.

    NOTE: the machine's ``Thread.ip`` only moves with the next instruction, so a
    syscall made right after such an exit would otherwise look like one made
    inside the section."""
    th.ip = PLAIN_IP


def cpu_start(th: Any) -> int:
    """``rseq_cpu_start()``: the snapshot a per-CPU operation indexes with."""
    return th.area_field("cpu_id_start")
