"""Run Debian's ``trace-cmd record`` into a private tracefs instance (tests and ``make bench``).

The tests and the bench make real trace.dat files with the real tool. They record into an
instance of their own (``trace-cmd record -B NAME``), so the top-level tracefs settings other
recorders and tests look at stay as they are, and they share the tracefs mount through
:class:`~rseqlab.trace.tracefs.TracefsMount` like every rseqlab recorder (mounted only while
needed).

trace-cmd 3.1 always switches the function tracer on and off (``options/function-trace``, then
``/proc/sys/kernel/ftrace_enabled``, ``set_ftrace_pid``, ``set_ftrace_filter``) even when only
events are recorded, and gives up when a file is refused, which a container's policy does. Where
a write is refused, the tool runs in a private mount namespace (``unshare -m``) in which those
files are shadowed by ordinary ones; the events and their pages are untouched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ..errors import Unavailable
from .events import recorded_events
from .tracefs import TRACEFS, TracefsMount

INSTANCE_PREFIX = "rseqlabtc-"
_FUNCTION_FILES = ("set_ftrace_pid", "set_ftrace_filter", "set_ftrace_notrace", "set_graph_function",
                   "set_graph_notrace", "set_ftrace_notrace_pid")


def available() -> str | None:
    """Why trace-cmd recordings cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "recording needs root"
    if shutil.which("trace-cmd") is None:
        return "trace-cmd is not installed (apt-get install trace-cmd)"
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    return None


def _refused(path: Path) -> bool:
    """Whether writing ``path`` is refused: the sysctl is written with its own value; a tracefs
    file is only opened for writing (no truncation, nothing written)."""
    try:
        with open(path, "r+") as f:
            if path.name == "ftrace_enabled":
                value = f.read()
                f.seek(0)
                f.write(value)
        return False
    except PermissionError:
        return True
    except OSError:
        return False


def shadowed(args: list[str], tmp: str | Path, *, tracefs: Path = TRACEFS, instance: Path | None = None) -> list[str]:
    """``args`` as a command line that runs where the function-tracer files trace-cmd writes and a
    container refuses are shadowed (see the module's doc); unchanged where nothing is refused.
    ``tmp`` holds the shadowing files while the command runs."""
    files = [*(instance / f for f in _FUNCTION_FILES)] if instance is not None else []
    shadows = [p for p in [Path("/proc/sys/kernel/ftrace_enabled"), *files, *(tracefs / f for f in _FUNCTION_FILES)]
               if p.exists() and _refused(p)]
    if not shadows:
        return list(args)
    one = Path(tmp, "one")
    one.write_text("1\n")
    empty = Path(tmp, "empty")
    empty.write_text("")
    binds = " && ".join(f"mount --bind {one if p.name == 'ftrace_enabled' else empty} {p}" for p in shadows)
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", f'{binds} && exec "$@"', "sh", *args]


def record(command: list[str], output: str | Path, *, events: list[tuple[str, str]] | None = None,
           buffer_kb: int = 32768, file_version: int = 7, compression: str | None = None,
           overwrite: bool = False, tracefs: Path = TRACEFS, timeout_s: float = 300) -> subprocess.CompletedProcess:
    """``trace-cmd record`` of ``command`` with ``events`` (default: the recorder's table) into
    ``output``; returns the finished process (its stderr is trace-cmd's report)."""
    why = available()
    if why:
        raise Unavailable(why)
    mount = TracefsMount(tracefs)
    mount.acquire()
    name = f"{INSTANCE_PREFIX}{os.getpid()}-{os.urandom(3).hex()}"
    inst = tracefs / "instances" / name
    try:
        inst.mkdir()
        # Like rseqlab's recorder: a full buffer drops new events ("dropped events") instead of
        # overwriting the oldest, so the command's start (its exec) is always kept.
        (inst / "options" / "overwrite").write_text("1" if overwrite else "0")
        args = ["trace-cmd", "record", "--file-version", str(file_version), "-B", name, "-C", "mono",
                "-b", str(buffer_kb)]
        if compression is not None:
            args += ["--compression", compression]
        for s, e in (recorded_events() if events is None else events):
            if (tracefs / "events" / s / e).is_dir():
                args += ["-e", f"{s}:{e}"]
        args += ["-o", str(output), "--", *command]
        with tempfile.TemporaryDirectory(prefix="rseqlabtc-") as tmp:
            return subprocess.run(shadowed(args, tmp, tracefs=tracefs, instance=inst), capture_output=True,
                                  text=True, timeout=timeout_s, check=False)
    finally:
        for _ in range(50):  # trace-cmd may still hold a file of it for a moment
            try:
                inst.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)
        mount.release()


def perf_available() -> str | None:
    """Why perf recordings cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "recording needs root"
    if shutil.which("perf") is None:
        return "perf is not installed (apt-get install linux-perf)"
    return None


def record_perf(command: list[str], output: str | Path, *, events: list[tuple[str, str]] | None = None,
                mmap_pages: int = 1024, tracefs: Path = TRACEFS, timeout_s: float = 300
                ) -> subprocess.CompletedProcess:
    """``perf record -a`` of ``command`` with ``events`` (default: the recorder's table), the
    tracefs mount shared like any rseqlab recorder (perf reads the event formats from it)."""
    why = perf_available()
    if why:
        raise Unavailable(why)
    mount = TracefsMount(tracefs)
    mount.acquire()
    try:
        args = ["perf", "record", "-q", "-a", "-k", "CLOCK_MONOTONIC", "-m", str(mmap_pages)]
        for s, e in (recorded_events() if events is None else events):
            if (tracefs / "events" / s / e).is_dir():
                args += ["-e", f"{s}:{e}"]
        args += ["-o", str(output), "--", *command]
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False)
    finally:
        mount.release()
