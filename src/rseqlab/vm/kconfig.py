"""The configuration of a kernel with RSEQ statistics: fragment, verification, cache key.

A statistics kernel is ``make tinyconfig`` plus :data:`STATS_FRAGMENT` (and the options of
:data:`WHERE_PRESENT` that the release's Kconfig defines), then ``make olddefconfig``. Kconfig
silently drops an option whose dependencies are not met, so :func:`verify` reads the resulting
``.config`` back and names every required option that is not set.

``CONFIG_RSEQ_STATS`` is defined in ``init/Kconfig`` (6.19 and later) and exposes
``/sys/kernel/debug/rseq/stats`` (``kernel/rseq.c``, ``rseq_stats_show``).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ..errors import BadInput

#: Options every statistics kernel must end up with (``make tinyconfig`` + these + olddefconfig).
STATS_FRAGMENT: tuple[str, ...] = (
    # a 64-bit SMP guest with a serial console, booted from an initramfs
    "64BIT", "SMP", "PRINTK", "TTY", "SERIAL_8250", "SERIAL_8250_CONSOLE",
    "BLK_DEV_INITRD", "RD_GZIP", "BINFMT_ELF", "BINFMT_SCRIPT",
    "PROC_FS", "SYSFS", "DEVTMPFS", "DEVTMPFS_MOUNT", "SHMEM", "TMPFS",
    # what glibc, busybox and the workloads use
    "FUTEX", "MULTIUSER", "POSIX_TIMERS", "HIGH_RES_TIMERS", "EPOLL", "SIGNALFD", "TIMERFD",
    "EVENTFD", "ADVISE_SYSCALLS", "MEMBARRIER", "FILE_LOCKING", "PROC_SYSCTL",
    # PVH boot and power-off under QEMU
    "ACPI", "HYPERVISOR_GUEST", "PARAVIRT", "PVH",
    # RSEQ with statistics, mm_cid
    "EXPERT", "RSEQ", "RSEQ_STATS", "DEBUG_FS", "CGROUPS", "SCHED_MM_CID",
    # tracefs with the events `rseqlab record` uses (raw_syscalls needs FTRACE_SYSCALLS)
    "FTRACE", "FTRACE_SYSCALLS", "TRACING", "EVENT_TRACING", "TRACEPOINTS",
    # context_tracking:user_enter/user_exit on every CPU: one event per return to user mode and
    # per entry from it (kernel/context_tracking.c, __ct_user_enter/__ct_user_exit), so the replay
    # reads the returns instead of inferring them. Tracking is on only when forced (or nohz_full);
    # VIRT_CPU_ACCOUNTING_GEN is what selects CONTEXT_TRACKING_USER on x86 without NO_HZ_FULL.
    "VIRT_CPU_ACCOUNTING_GEN", "CONTEXT_TRACKING_USER", "CONTEXT_TRACKING_USER_FORCE",
)
#: Set when the release's Kconfig defines them (PREEMPT_LAZY: the preemption model of the
#: cloud kernels; RSEQ_SLICE_EXTENSION: 7.x's time-slice extension, ``init/Kconfig``).
WHERE_PRESENT: tuple[str, ...] = ("PREEMPT_LAZY", "RSEQ_SLICE_EXTENSION")
#: Asked for but allowed to vanish: ENABLE_DEFAULT_TRACERS depends on !GENERIC_TRACER, which
#: FTRACE_SYSCALLS selects; TRACING is then selected by FTRACE_SYSCALLS instead.
OPTIONAL: tuple[str, ...] = ("ENABLE_DEFAULT_TRACERS",)

_OPT = re.compile(r"^(?:CONFIG_)?([A-Za-z0-9_]+)(?:=(.*))?$")


def parse_fragment(text: str, *, origin: str = "fragment") -> dict[str, str]:
    """``CONFIG_X=y`` / ``X=m`` / ``X`` / ``# CONFIG_X is not set`` lines to ``{X: value}``."""
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        m = re.match(r"^#\s*CONFIG_([A-Za-z0-9_]+) is not set$", line)
        if m:
            out[m.group(1)] = "n"
            continue
        if line.startswith("#"):
            continue
        m = _OPT.match(line)
        if not m:
            raise BadInput(f"{origin}:{n}: not a config option: {raw.strip()!r}")
        value = m.group(2) if m.group(2) is not None else "y"
        value = value.strip()
        if value == "":
            raise BadInput(f"{origin}:{n}: empty value for {m.group(1)}")
        out[m.group(1).upper()] = value
    return out


def read_config(text: str) -> dict[str, str]:
    """A ``.config`` as ``{OPTION: value}`` (``n`` for ``# CONFIG_X is not set``)."""
    return parse_fragment(text, origin=".config")


def kconfig_defines(source: Path, option: str) -> bool:
    """Whether any Kconfig file of the tree defines ``option``."""
    pat = re.compile(rf"^\s*(?:menu)?config\s+{re.escape(option)}\s*$", re.M)
    for path in list(source.glob("init/Kconfig")) + list(source.glob("kernel/Kconfig*")) + \
            list(source.glob("arch/x86/Kconfig")):
        if pat.search(path.read_text(errors="replace")):
            return True
    return False


def wanted(present: set[str], extra: dict[str, str] | None = None) -> dict[str, str]:
    """The options to merge: the fragment, the where-present ones that exist, then ``extra``."""
    out = {o: "y" for o in STATS_FRAGMENT}
    out.update({o: "y" for o in OPTIONAL})
    out.update({o: "y" for o in WHERE_PRESENT if o in present})
    out.update(extra or {})
    return out


def fragment_text(options: dict[str, str]) -> str:
    lines = []
    for k in sorted(options):
        v = options[k]
        lines.append(f"# CONFIG_{k} is not set" if v == "n" else f"CONFIG_{k}={v}")
    return "\n".join(lines) + "\n"


def verify(config: dict[str, str], options: dict[str, str]) -> list[str]:
    """The required options the resulting ``.config`` does not have as asked (empty: all set)."""
    missing = []
    for k, v in sorted(options.items()):
        if k in OPTIONAL:
            continue
        have = config.get(k, "n")
        if have != v:
            missing.append(f"CONFIG_{k}" if v == "y" else f"CONFIG_{k}={v} (have {have})")
    return missing


def config_hash(options: dict[str, str]) -> str:
    """The cache key of a configuration: 12 hex digits of the sorted fragment's SHA-256."""
    return hashlib.sha256(fragment_text(options).encode()).hexdigest()[:12]
