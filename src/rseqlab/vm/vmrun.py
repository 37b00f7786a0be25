"""``rseqlab vm run``: boot a kernel, record a command there with ``guestrec``, ingest the result.

The guest runs ``guestrec /tmp/out/rec -- COMMAND`` (:mod:`rseqlab.vm.guestbuild` builds it
statically); /init sends ``/tmp/out`` back on the serial line and :func:`rseqlab.vm.ingest.ingest_dir`
turns ``rec/`` into an ordinary trace marked with the guest's release and statistics deltas.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from ..errors import BadInput, RseqlabError
from ..live.workloads import WORKLOADS
from ..tmpdirs import owned_tempdir
from ..trace.format import Trace
from . import ccjob, guest_run, guestbuild, initramfs
from .kernels import Cached, KernelStore, check_version, find_cached
from .qemu import GuestError

REC = "/tmp/out/rec"


@dataclass
class VmRun:
    trace: Trace
    path: Path | None
    summary: dict
    guest: guest_run.GuestRun


def select_kernel(version: str, *, stats: bool = False, store: KernelStore | None = None) -> Cached:
    """A cached kernel for ``version`` (a statistics build first), else fetch/build one."""
    check_version(version)
    store = store or KernelStore()
    if stats:
        return store.get(version, stats=True)
    have = find_cached(version, root=store.root)
    return have if have is not None else store.get(version)


def guest_command(command: list[str]) -> tuple[list[str], dict[str, Path], dict[str, bytes]]:
    """COMMAND as the guest runs it, the programs to copy in (guest path -> host path) and any
    other files the guest needs (guest path -> contents).

    A shipped workload's bare name runs its static build from ``/work``; ``cc-parallel`` is the
    host's gcc compiling generated sources (:mod:`.ccjob`); anything else is copied in at its own
    absolute path (with its libraries if dynamically linked)."""
    if not command:
        raise BadInput("no COMMAND given (rseqlab vm run VERSION -- COMMAND [ARGS])")
    name = command[0]
    if name in WORKLOADS and "/" not in name:
        exe = guestbuild.build(name)
        return [f"/work/{name}", *command[1:]], {f"work/{name}": exe}, {}
    if name == ccjob.NAME:
        return ccjob.guest(list(command[1:]))
    exe = initramfs.resolve_command(name)
    return [str(exe), *command[1:]], {str(exe).lstrip("/"): exe}, {}


def payload(commands: list[list[str]], *, buffer_kb: int | None = None) -> str:
    """One ``guestrec`` run per command, into ``rec0``, ``rec1``, ... of the output directory."""
    opts = f"--buffer-kb {buffer_kb} " if buffer_kb else ""
    lines = []
    for i, argv in enumerate(commands):
        rec = f"{REC}{i}"
        lines += [f"/work/guestrec {opts}{rec} -- {initramfs.command_line(argv)} > /tmp/out/guestrec{i}.log 2>&1",
                  f"echo $? > /tmp/out/guestrec{i}_status",
                  # the kernel's configuration (CONFIG_HZ for the replay) when the kernel hides it
                  f"if [ -e /work/kconfig ] && [ ! -e {rec}/config ] && [ ! -e {rec}/config.gz ]; then "
                  f"cp /work/kconfig {rec}/config; fi"]
    return "\n".join(lines) + "\n"


def batch(k: Cached, commands: list[list[str]], outputs: list[str | Path | None], *, cpus: int = 2,
          mem_mb: int = 1024, timeout: float = 600, buffer_kb: int | None = None,
          serial_log: Path | None = None, log=None) -> list[VmRun]:
    """Record several commands one after the other in one boot of ``k``."""
    from .ingest import UNTIMED_EXIT_WINDOWS, ingest_dir

    if cpus < 1 or cpus > 64:
        raise BadInput(f"--cpus must be between 1 and 64, not {cpus}")
    argvs, programs, extra = [], {}, {}
    for command in commands:
        argv, progs, files = guest_command(command)
        argvs.append(argv)
        programs.update(progs)
        extra.update(files)
    programs["work/guestrec"] = guestbuild.build(guestbuild.GUESTREC)
    serial = serial_log or (Path(f"{outputs[0]}.serial.log") if outputs and outputs[0]
                            else guest_run.default_serial_log(k))
    runs = []
    # Removed on every exit but SIGKILL; a SIGKILL leftover goes at the next run (rseqlab/tmpdirs.py).
    with owned_tempdir("rseqlab-vmrun-") as tmp:
        out = Path(tmp) / "out"
        files = dict(extra)
        if (k.path / "config").is_file():
            files["work/kconfig"] = (k.path / "config").read_bytes()
        g = guest_run.run(k, payload(argvs, buffer_kb=buffer_kb), out, programs=programs, files=files,
                          cpus=cpus, mem_mb=mem_mb, timeout=timeout, serial_log=serial, log=log)
        for i, (command, argv, output) in enumerate(zip(commands, argvs, outputs)):
            status = g.read(f"guestrec{i}_status").strip()
            if status != "0":
                tail = g.read(f"guestrec{i}.log").strip().splitlines()[-3:]
                raise GuestError(f"guestrec failed in the guest for {' '.join(command)} (exit {status or '?'}): "
                                 f"{' | '.join(tail) or 'no output'} (serial log: {serial})")
            # Under TCG the exit paths run several times slower than the replay's native windows
            # assume: a switch-out with nothing recorded since the return is in its exit loop.
            windows = UNTIMED_EXIT_WINDOWS if g.accel == "tcg" else None
            try:
                trace = ingest_dir(out / f"rec{i}", output, command=list(command), exit_windows_ns=windows)
            except RseqlabError as exc:
                raise GuestError(f"{exc} (serial log: {serial})") from None
            guest = trace.meta.get("guest", {})
            summary = {
                "kernel": {"version": k.version, "kind": k.kind, "stats": k.stats, "slice": k.slice,
                           "release": guest.get("release") or g.release, "image": str(k.image)},
                "accel": g.accel, "cpus": cpus, "seconds": round(g.seconds, 2),
                "command": list(command), "guest_command": argv,
                "exit_status": trace.meta.get("exit_status"),
                "events": len(trace), "lost": trace.meta.get("lost", {}).get("total", 0),
                "rseq_stats": guest.get("rseq_stats"),
                "trace": str(output) if output else None, "serial_log": str(serial),
                "guest_output": g.read(f"guestrec{i}.log")[-2000:],
            }
            summary["replay_windows"] = trace.meta.get("replay")
            runs.append(VmRun(trace, Path(output) if output else None, summary, g))
    return runs


def vm_run(version: str, command: list[str], output: str | Path | None, *, cpus: int = 2,
           mem_mb: int = 1024, stats: bool = False, timeout: float = 600, buffer_kb: int | None = None,
           kernel: Cached | None = None, serial_beside_output: bool = True, log=None) -> VmRun:
    if not command:
        raise BadInput("no COMMAND given (rseqlab vm run VERSION -- COMMAND [ARGS])")
    if cpus < 1 or cpus > 64:
        raise BadInput(f"--cpus must be between 1 and 64, not {cpus}")
    k = kernel or select_kernel(version, stats=stats)
    serial = None if serial_beside_output and output else guest_run.default_serial_log(k)
    return batch(k, [command], [output], cpus=cpus, mem_mb=mem_mb, timeout=timeout, buffer_kb=buffer_kb,
                 serial_log=serial, log=log)[0]


def render_summary(con: Console, s: dict) -> None:
    k = s["kernel"]
    kind = "statistics build" if k["stats"] else "binary kernel"
    con.print(f"[bold]{' '.join(shlex.quote(a) for a in s['command'])}[/] in Linux {k['release']} "
              f"({kind}, {s['cpus']} CPUs, {s['accel']}): {s['seconds']:.1f} s, {s['events']} events, "
              f"{s['lost']} lost, exit status {s['exit_status']}")
    st = s.get("rseq_stats")
    if st and st.get("delta"):
        con.print("  rseq stats delta: " + "  ".join(f"{k}={v}" for k, v in st["delta"].items()))
    elif not k["stats"]:
        con.print("  (no CONFIG_RSEQ_STATS in this kernel: only the tracepoints can be compared)")
    if s.get("trace"):
        con.print(f"  trace: {s['trace']}   serial log: {s['serial_log']}")
    print(file=sys.stderr, end="")
