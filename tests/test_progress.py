"""Progress of long commands: on a terminal's stderr only, never with --json or into a pipe."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC, "COLUMNS": "120", "TERM": "xterm"}


def _with_terminal_stderr(args: list[str]) -> tuple[int, str, str]:
    """Run rseqlab with stderr on a pseudo-terminal, stdout on a pipe."""
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "rseqlab", *args], stdout=subprocess.PIPE, stderr=slave,
                         env=ENV)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        elif p.poll() is not None:
            break
    out = p.stdout.read().decode()
    p.wait(timeout=60)
    os.close(master)
    return p.returncode, out, b"".join(chunks).decode("utf-8", "replace")


def test_check_progress_on_a_terminal_only():
    status, out, err = _with_terminal_stderr(["check", "percpu-list", "-k", "6.19:no-cs-check"])
    assert status == 1
    assert "executions," in err and "distinct states" in err and "/s)" in err
    assert "explored" not in out.split("\n")[0]  # the report itself is unchanged on stdout
    status, out, err = _with_terminal_stderr(["check", "percpu-list", "-k", "6.19:no-cs-check", "--json"])
    assert status == 1 and err == "" and out.startswith("{")
    # A pipe gets no progress: tests/test_terminal_output.py runs the same check into a pipe.


def test_compare_progress_has_percentage_and_eta():
    status, out, err = _with_terminal_stderr(["compare", "-k", "6.18,6.19,7.0,7.1,6.19:no-cs-check,7.1+slice"])
    assert status == 0
    assert "simulating 7.1+slice (6/6)" in err and "100%" in err and "ETA" in err
    assert "kernel-build" in out


def test_selftest_results_stream_as_they_finish():
    status, out, err = _with_terminal_stderr(["selftest", "-t", "basic_test", "-t", "tcmalloc-slab-cache",
                                              "-k", "6.18", "-k", "6.19"])
    assert status == 0
    for line in ("basic_test [6.18]", "basic_test [6.19]", "tcmalloc-slab-cache [6.19]"):
        assert line in err
    assert "FAIL" in err  # tcmalloc on 6.19, as expected
    assert "4 runs: 3 passed, 1 failed" in out


def test_selftest_ctrl_c_prints_what_finished_and_exits_130():
    p = subprocess.Popen([sys.executable, "-m", "rseqlab", "selftest", "-k", "6.18"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=ENV)
    deadline = time.monotonic() + 120
    time.sleep(8)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=max(deadline - time.monotonic(), 10))
    assert p.returncode == 130, err
    text = out.decode()
    finished = int(text.split("interrupted: ")[1].split(" of ")[0])
    assert 0 < finished < 200 and "of 200 runs finished" in text
    assert f"{finished} runs: " in text and "basic_test" in text
    assert err.decode().strip().splitlines()[-1] == "rseqlab: error: interrupted"
