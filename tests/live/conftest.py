"""Live-kernel tests: they run as root on the CI machine and mount tracefs themselves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TRACEFS = Path("/sys/kernel/tracing")


@pytest.fixture(scope="session")
def live_tracefs():
    """tracefs mounted for the whole session (so tests can inspect it); skips with the reason."""
    from rseqlab.errors import Unavailable
    from rseqlab.trace.tracefs import TracefsMount

    if os.geteuid() != 0:
        pytest.skip("live-kernel tests need root (tracefs)")
    mount = TracefsMount(TRACEFS)
    try:
        mount.acquire()
    except Unavailable as exc:
        pytest.skip(f"live kernel cannot be traced here: {exc}")
    yield TRACEFS
    mount.release()


def tracefs_state(root: Path) -> dict:
    """The top-level settings a recorder must leave alone, plus our instances."""
    names = ["tracing_on", "set_event", "set_event_pid", "current_tracer", "buffer_size_kb", "trace_clock",
             "options/event-fork", "options/overwrite"]
    state = {n: (root / n).read_text() for n in names if (root / n).exists()}
    state["debugfs_mounted"] = os.path.ismount("/sys/kernel/debug")  # guestrec mounts it for the statistics
    state["instances"] = sorted(p.name for p in (root / "instances").iterdir()
                                if p.name.startswith("rseqlab-") and not _other_live_recorder(p.name))
    return state


def _other_live_recorder(name: str) -> bool:
    """An instance of a recorder still running in another process (a concurrent test session on
    this machine): not ours to compare. A leaked instance of a finished recorder still counts."""
    import re

    m = re.match(r"rseqlab-(\d+)", name)
    if not m or int(m.group(1)) == os.getpid():
        return False
    try:
        os.kill(int(m.group(1)), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
