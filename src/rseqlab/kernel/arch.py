"""Architectures: what the RSEQ code of a release sees of the entry code it runs on.

The rseq code of 6.19 and later (``include/linux/rseq.h``, ``rseq_entry.h``,
``kernel/rseq.c``) asks three Kconfig questions, and an architecture answers
each of them in its own ``Kconfig`` and entry code:

* ``CONFIG_GENERIC_IRQ_ENTRY`` (``kernel/entry/common.c``, ``irq-entry-common.h``):
  ``rseq_event.user_irq`` is maintained, so switch-in raises work only after an
  interrupt from user mode or an ID change (``rseq_sched_switch_event``),
  signal delivery checks the section only after an interrupt
  (``rseq_signal_deliver``), the ID update skips the section check after a
  syscall (``rseq_update_usr``), and (7.1) a registration longer than 32 bytes
  is the optimized v2 mode (``rseq_register``, ``rseq_v2``).
* ``CONFIG_GENERIC_ENTRY``: the exit fast path exists
  (``rseq_exit_to_user_mode_restart`` with ``rseq_exit_user_update``); without
  it every update runs in the slow path from ``resume_user_mode_work``
  (``rseq_handle_slowpath`` tests ``sched_switch && has_rseq`` instead of
  ``event.slowpath``).
* ``CONFIG_HAVE_GENERIC_TIF_BITS``: a dedicated ``TIF_RSEQ``; without it
  ``TIF_RSEQ`` is ``TIF_NOTIFY_RESUME`` (``include/linux/thread_info.h``), and a
  hypervisor exit re-raises it (``rseq_virt_userspace_exit``).

What the arch entry code itself does matters as much: the generic
``irqentry_enter_from_user_mode()`` calls ``rseq_note_user_irq_entry()``, but
arm64 has its own ``arm64_enter_from_user_mode()`` (``arch/arm64/kernel/
entry-common.c``), which in 6.19 calls only ``enter_from_user_mode()``: with
``GENERIC_IRQ_ENTRY=y`` the rseq code trusts ``user_irq``, and nothing ever sets
it. That is the arm64 6.19 regression (LKML, "[REGRESSION] rseq: refactoring in
v6.19 broke everyone on arm64 and tcmalloc everywhere", Mathias Stearn,
2026-04-22). The fix is upstream commit 411c1cf43039 "arm64/entry: Fix
arm64-specific rseq brokenness" (Mark Rutland, posted 2026-05-08, ``Fixes:
39a167560a61`` "rseq: Optimize event setting"; the note was missing since
2fc0e4b4126c "rseq: Record interrupt from user space"): arm64 gets
syscall-specific entry/exit functions, calls ``rseq_note_user_irq_entry()`` on
every non-syscall entry, and ``exit_to_user_mode_prepare_legacy()`` /
``rseq_exit_to_user_mode_legacy()`` are removed. It is in v7.1 (merged during
the 7.1-rc cycle, May 2026; present in 7.1.3 and 7.1.8) and, backported late
("[PATCH 7.0] arm64/entry: Fix arm64-specific rseq brokenness", 2026-06-18), in
7.0.14 (stable review "[PATCH 7.0 00/49] 7.0.14-rc1 review", 2026-06-25). The
6.19.y series was end of life and never got it (absent in 6.19.6 and 6.19.10).

Established from the sources (read in Debian's upstream tarballs of 6.19.6,
6.19.10, 7.1.3, 7.1.8):

========  ===========  ============  ==========  ===========  =============================
arch      release      GENERIC_IRQ   GENERIC     GENERIC_TIF  arm64 entry notes user_irq
========  ===========  ============  ==========  ===========  =============================
x86_64    6.19, 7.1    y             y           y            (generic irqentry code: yes)
arm64     6.19.6/.10   y             n           n            no (``exit_to_user_mode_prepare_legacy``)
arm64     7.1.3/.8     y             n           n            yes, split syscall/irq exits
========  ===========  ============  ==========  ===========  =============================

6.18 is the legacy rseq code: it asks none of these questions (``TIF_NOTIFY_RESUME``
and ``rseq_handle_notify_resume`` on every architecture), so 6.18 differs by
architecture only in syscall numbers and user-space instruction sequences.
For 7.0 no source is in the archive: the table carries 6.19's arm64 answers for
it, i.e. 7.0 up to 7.0.13 (7.0.14 has the fix, as 7.1), and the slice extension's Kconfig
(``RSEQ_SLICE_EXTENSION depends on ... GENERIC_ENTRY && HAVE_GENERIC_TIF_BITS``,
``init/Kconfig`` in 7.1.8) is answered by :meth:`Arch.has`.

Other constants: syscall numbers (x86_64 ``arch/x86/entry/syscalls/syscall_64.tbl``;
arm64 uses the generic table ``include/uapi/asm-generic/unistd.h``), the
selftests' ``RSEQ_SIG`` (``rseq-x86.h``, ``rseq-arm64.h``: ``BRK #0x45E0``), and
``TASK_SIZE`` (x86_64 4-level paging; arm64 48-bit VA).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import BadInput


@dataclass(frozen=True, slots=True)
class ArchRelease:
    """One release built for one architecture: the answers the rseq code asks for."""

    #: ``CONFIG_GENERIC_IRQ_ENTRY``: ``user_irq`` is trusted by the rseq code.
    generic_irq_entry: bool
    #: ``CONFIG_GENERIC_ENTRY``: generic syscall entry/exit, hence the exit fast path.
    generic_entry: bool
    #: ``CONFIG_HAVE_GENERIC_TIF_BITS``: a ``TIF_RSEQ`` distinct from ``TIF_NOTIFY_RESUME``.
    generic_tif_bits: bool
    #: The arch's interrupt/exception entry from user mode calls ``rseq_note_user_irq_entry()``.
    irq_entry_notes_user_irq: bool
    #: Syscall and interrupt returns use ``syscall_exit_to_user_mode_prepare`` /
    #: ``irqentry_exit_to_user_mode_prepare`` (False: one ``exit_to_user_mode_prepare_legacy``
    #: for both, which clears the rseq events on every return).
    split_exit_helpers: bool


#: The generic entry code (x86_64 in every release the model has).
GENERIC = ArchRelease(generic_irq_entry=True, generic_entry=True, generic_tif_bits=True,
                      irq_entry_notes_user_irq=True, split_exit_helpers=True)
#: arm64 6.19 (and, inferred, 7.0): generic IRQ entry selected, arch entry code that never
#: notes a user interrupt, the legacy exit helper.
ARM64_6_19 = ArchRelease(generic_irq_entry=True, generic_entry=False, generic_tif_bits=False,
                         irq_entry_notes_user_irq=False, split_exit_helpers=False)
#: arm64 7.1: the entry notes user interrupts (``rseq_note_user_irq_entry``) and the exits are split.
ARM64_7_1 = ArchRelease(generic_irq_entry=True, generic_entry=False, generic_tif_bits=False,
                        irq_entry_notes_user_irq=True, split_exit_helpers=True)

#: Kconfig-style names :meth:`Arch.has` answers, and the ``ArchRelease`` field behind each.
FEATURES = {
    "GENERIC_IRQ_ENTRY": "generic_irq_entry",
    "GENERIC_ENTRY": "generic_entry",
    "HAVE_GENERIC_TIF_BITS": "generic_tif_bits",
    "RSEQ_NOTE_USER_IRQ_ENTRY": "irq_entry_notes_user_irq",
}


@dataclass(frozen=True, slots=True)
class Arch:
    """An architecture: its constants and, per release, its :class:`ArchRelease`."""

    name: str
    #: ``uname -m``
    machine: str
    #: The system call numbers the model and the replay use.
    syscalls: dict[str, int] = field(hash=False, compare=False)
    #: The selftests' and librseq's signature before every abort handler (``RSEQ_SIG``).
    rseq_sig: int = 0
    #: First address ``access_ok()`` refuses.
    task_size: int = 0
    #: librseq's per-CPU add is one memory-destination instruction (x86 ``addq``) rather
    #: than a load, a register add and a store (arm64 ``ldr; add; str``).
    memory_destination_add: bool = True
    #: librseq has ``rseq_offset_deref_addv`` (``RSEQ_ARCH_HAS_OFFSET_DEREF_ADDV``); without
    #: it param_test's membarrier test (-T r) is skipped.
    has_offset_deref_addv: bool = True
    releases: dict[str, ArchRelease] = field(hash=False, compare=False, default_factory=dict)

    def config(self, release: str) -> ArchRelease:
        """The answers for ``release`` (``"6.19"``; a what-if ``"6.19:x"`` counts as its release)."""
        base = release.split(":", 1)[0].split("+", 1)[0]  # a what-if or a build counts as its release
        return self.releases.get(base, GENERIC if self.name == "x86_64" else ARM64_7_1)

    def has(self, release: str, feature: str) -> bool:
        """Does ``release`` built for this architecture have ``feature``?

        ``feature`` is one of :data:`FEATURES` or ``"RSEQ_SLICE_EXTENSION"`` (possible
        only with ``GENERIC_ENTRY`` and ``HAVE_GENERIC_TIF_BITS``, 7.0 and later;
        ``init/Kconfig``). E.g. ``ARM64.has("7.0", "RSEQ_SLICE_EXTENSION")`` is False.
        """
        cfg = self.config(release)
        if feature == "RSEQ_SLICE_EXTENSION":
            base = release.split(":", 1)[0].split("+", 1)[0]
            return _at_least(base, "7.0") and cfg.generic_entry and cfg.generic_tif_bits
        attr = FEATURES.get(feature)
        if attr is None:
            raise BadInput(f"unknown architecture feature {feature!r}; accepted: "
                           f"{', '.join([*FEATURES, 'RSEQ_SLICE_EXTENSION'])}")
        return getattr(cfg, attr)


def _at_least(release: str, floor: str) -> bool:
    def key(r: str) -> tuple[int, ...]:
        return tuple(int(p) for p in r.split(".") if p.isdigit())

    return key(release) >= key(floor)


X86_64 = Arch(
    name="x86_64",
    machine="x86_64",
    # arch/x86/entry/syscalls/syscall_64.tbl
    syscalls={"close": 3, "mmap": 9, "munmap": 11, "rt_sigreturn": 15, "sched_yield": 24,
              "getpid": 39, "clone": 56, "execve": 59, "exit": 60, "exit_group": 231,
              "getcpu": 309, "execveat": 322, "membarrier": 324, "rseq": 334},
    rseq_sig=0x53053053,
    task_size=0x7FFF_FFFF_F000,
    memory_destination_add=True,
    has_offset_deref_addv=True,
    releases={"6.18": GENERIC, "6.19": GENERIC, "7.0": GENERIC, "7.0.7": GENERIC, "7.0.10": GENERIC,
              "7.1": GENERIC},
)

ARM64 = Arch(
    name="arm64",
    machine="aarch64",
    # include/uapi/asm-generic/unistd.h (arm64 has no open/creat: openat only)
    syscalls={"close": 57, "mmap": 222, "munmap": 215, "rt_sigreturn": 139, "sched_yield": 124,
              "getpid": 172, "clone": 220, "execve": 221, "exit": 93, "exit_group": 94,
              "getcpu": 168, "execveat": 281, "membarrier": 283, "rseq": 293},
    rseq_sig=0xD428BC00,
    task_size=1 << 48,
    memory_destination_add=False,
    has_offset_deref_addv=False,
    # The arm64 fix (411c1cf43039) is in v7.1 and in 7.0.y from 7.0.14: 7.0.7 and 7.0.10 lack it.
    releases={"6.18": ARM64_6_19, "6.19": ARM64_6_19, "7.0": ARM64_6_19, "7.0.7": ARM64_6_19,
              "7.0.10": ARM64_6_19, "7.1": ARM64_7_1},
)

ARCHES: dict[str, Arch] = {X86_64.name: X86_64, ARM64.name: ARM64}
DEFAULT_ARCH = X86_64


def arch_by_name(name: str) -> Arch:
    """The architecture called ``name`` (``x86_64``, ``arm64``); BadInput otherwise."""
    found = ARCHES.get(name)
    if found is None:
        raise BadInput(f"unknown architecture {name!r}; accepted: {', '.join(ARCHES)}")
    return found


def split_kernel_name(name: str) -> tuple[str, Arch]:
    """``"6.19@arm64"`` -> (``"6.19"``, ARM64); a name without ``@`` is x86_64."""
    if "@" not in name:
        return name, DEFAULT_ARCH
    kernel, _, arch = name.partition("@")
    return kernel, arch_by_name(arch)


def with_arch(kernel: str, arch: str | Arch | None) -> str:
    """The kernel name the machinery passes around for ``kernel`` on ``arch``.

    x86_64 keeps the plain name (so every x86_64 output is what it always was);
    another architecture is spelled ``RELEASE[:VARIANT]@ARCH``.
    """
    a = arch if isinstance(arch, Arch) else arch_by_name(arch) if arch else DEFAULT_ARCH
    base, already = split_kernel_name(kernel)
    if "@" in kernel and already is not a:
        raise BadInput(f"kernel {kernel!r} names architecture {already.name}, but --arch is {a.name}")
    return base if a is DEFAULT_ARCH else f"{base}@{a.name}"
