"""trace.dat and perf.data detection and the recorders' command lines (no root needed)."""

from __future__ import annotations

import shlex

from rseqlab.trace.events import (EVENTS, MIGRATION_EVENT, WHERE_CONFIGURED, recorded_events, required_events,
                                  tool_command)
from rseqlab.trace.tracedat import MAGIC


def test_print_command_lists_the_recorders_own_event_table(run_cli):
    for tool, head in (("trace-cmd", ["trace-cmd", "record"]), ("perf", ["perf", "record", "-a"])):
        res = run_cli("record", "--print-command", tool)
        assert res.status == 0, res.stderr
        argv = shlex.split(res.stdout)
        assert argv[: len(head)] == head
        events = [argv[i + 1] for i, a in enumerate(argv) if a == "-e"]
        # Every event of the table except those most kernels lack (the tools refuse a missing one).
        assert events == [f"{s}:{e}" for s, e in [*EVENTS, MIGRATION_EVENT] if (s, e) not in WHERE_CONFIGURED]
        assert WHERE_CONFIGURED and set(WHERE_CONFIGURED) <= set(EVENTS)
        assert argv[-2:] == ["--", "COMMAND"]
    assert set(required_events()) <= set(recorded_events())
    assert "-b 8192 " in tool_command("trace-cmd", buffer_kb=8192)


def test_unsupported_tracedat_version_and_damage_are_one_line(run_cli, tmp_path):
    cases = {"v8.dat": MAGIC + b"8\0\0\x08\0\x10\0\0", "cut.dat": MAGIC + b"7\0\0",
             "bigendian.dat": MAGIC + b"6\0\x01\x08\0\0\x10\0"}
    expect = {"v8.dat": "version '8' is not supported", "cut.dat": "truncated or corrupt trace.dat",
              "bigendian.dat": "big-endian"}
    for name, blob in cases.items():
        path = tmp_path / name
        path.write_bytes(blob)
        for cmd in (["replay", str(path)], ["validate", str(path)]):
            res = run_cli(*cmd)
            assert res.status == 2, (name, cmd, res.stdout)
            lines = res.stderr.strip().splitlines()
            assert len(lines) == 1 and expect[name] in lines[0], lines
