"""The CLI under hostile use (issue 17): output paths checked before the work, signals."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("path,message", [
    ("/nonexistent-dir/cost.json", "does not exist"),
    ("", "an empty path"),
    ("/dev/null", "not a regular file"),
    (".", "is a directory"),
])
def test_cost_save_is_checked_before_measuring(run_cli, monkeypatch, path, message):
    from rseqlab.live import cost

    def measured(**kwargs):
        raise AssertionError("measured before checking --save")

    monkeypatch.setattr(cost, "measure", measured)
    r = run_cli("cost", "--save", path)
    assert r.status == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_cost_save_failing_to_write_is_one_line(tmp_path, monkeypatch):
    """A disk that fills during the measurement: one line, not a traceback."""
    from rseqlab.errors import BadInput
    from rseqlab.live.cost import save_model

    with pytest.raises(BadInput, match="--save /dev/full: cannot write"):
        save_model({"format": "x"}, "/dev/full")


# ----------------------------------------------------------------------
# SIGTERM / SIGHUP: one policy for every command (rseqlab/_startup.py)
# ----------------------------------------------------------------------
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

#: ``vm run`` up to the guest's boot, with the boot replaced by a long wait: the run holds its
#: temporary directory (the trace, initramfs, guest output) while the signal comes.
_VM_RUN_WAITING = """
import sys, time
from rseqlab.vm import guest_run, guestbuild, vmrun
vmrun.select_kernel = lambda version, stats=False: type("K", (), {"path": __import__("pathlib").Path("/nonexistent"),
                                                                 "version": version})()
guestbuild.build = lambda name: "/bin/true"
guest_run.default_serial_log = lambda k: "/dev/null"
def boot(k, payload, out, **kw):
    print("booting", flush=True)
    time.sleep(60)
guest_run.run = boot
from rseqlab.cli import main
sys.exit(main(["vm", "run", "6.19.10", "-o", sys.argv[1], "--", "/bin/true"]))
"""


def _vm_run_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("rseqlab-vmrun-*"))


def _start_vm_run(tmp_path):
    before = _vm_run_dirs()
    proc = subprocess.Popen([sys.executable, "-c", _VM_RUN_WAITING, str(tmp_path / "o.trace")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "booting\n"
    mine = _vm_run_dirs() - before
    assert len(mine) == 1
    return proc, mine.pop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_ends_vm_run_cleanly_and_removes_its_temp_dir(tmp_path, sig):
    """Issue 17: the default action of SIGTERM/SIGHUP ran no clean-up, leaking /tmp/rseqlab-vmrun-*."""
    proc, tmp = _start_vm_run(tmp_path)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + sig
    assert err.splitlines() == [f"rseqlab: error: terminated by {signal.Signals(sig).name}"]
    assert not tmp.exists()


def test_a_second_signal_does_not_cut_the_clean_up_short(tmp_path):
    proc, tmp = _start_vm_run(tmp_path)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=30)
    # both may be pending at once, and the kernel delivers the lower number (SIGHUP) first
    assert proc.returncode in (128 + signal.SIGTERM, 128 + signal.SIGHUP) and len(err.splitlines()) == 1
    assert not tmp.exists()


def test_a_sigkill_leftover_is_removed_by_the_next_run_and_a_live_runs_dir_is_not(tmp_path):
    from rseqlab.tmpdirs import remove_stale

    live, live_tmp = _start_vm_run(tmp_path)
    killed, killed_tmp = _start_vm_run(tmp_path)
    try:
        killed.kill()  # no clean-up at all
        killed.wait()
        assert killed_tmp.exists()
        removed = remove_stale("rseqlab-vmrun-")
        assert killed_tmp in removed and not killed_tmp.exists()
        assert live_tmp.exists()  # its owner still holds the lock
    finally:
        live.terminate()
        live.communicate(timeout=30)
    assert not live_tmp.exists()


def test_sigterm_during_a_simulation_is_one_line_and_143():
    """Any command: the hour-long selftest matrix stopped by SIGTERM (a service manager stopping it)."""
    proc = subprocess.Popen([sys.executable, "-m", "rseqlab", "selftest", "--full", "-k", "6.19", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.5)  # past the imports: inside the simulation
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and out == ""
    assert err.splitlines() == ["rseqlab: error: terminated by SIGTERM"]


def test_the_cli_keeps_the_start_up_guard_a_library_gets_its_handlers_back():
    """``python -m rseqlab.cli`` keeps the guard past the package's import (the import of
    ``rseqlab.cli`` is guarded too); ``import rseqlab`` in a program gives the defaults back."""
    probe = ("import signal, sys\nimport rseqlab\nfrom rseqlab import _startup\n"
             "print(_startup.started_as_cli(), signal.getsignal(signal.SIGTERM) is _startup._quiet_exit)\n")
    lib = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert lib.stdout.split() == ["False", "False"]
    # (while -m looks for the module, sys.argv is ["-m"]; a console script's is its path)
    for orig_argv, argv, cli in ((["python", "-m", "rseqlab.cli", "check"], ["-m"], True),
                                 (["python", "-X", "dev", "-m", "rseqlab"], ["-m"], True),
                                 (["python", "-m", "pytest"], ["-m"], False),
                                 (["python", "/venv/bin/rseqlab", "run"], ["/venv/bin/rseqlab", "run"], True),
                                 (["python", "-c", "import rseqlab"], ["-c"], False)):
        assert _started(orig_argv, argv) == cli, orig_argv


def _started(orig_argv, argv) -> bool:
    from rseqlab import _startup

    saved = sys.orig_argv, sys.argv
    try:
        sys.orig_argv, sys.argv = orig_argv, argv
        return _startup.started_as_cli()
    finally:
        sys.orig_argv, sys.argv = saved


def test_a_second_sigint_does_not_cut_the_clean_up_short():
    """The first Ctrl-C unwinds the command; one more during its clean-up is ignored, and after
    the block the CLI ignores the three (a library caller gets its handlers back)."""
    code = ("import os, signal, time\nfrom rseqlab import _startup\n"
            "try:\n"
            "    with _startup.terminate_cleanly():\n"
            "        try:\n"
            "            os.kill(os.getpid(), signal.SIGINT); time.sleep(1)\n"
            "        finally:\n"
            "            os.kill(os.getpid(), signal.SIGINT); time.sleep(0.05); print('cleaned')\n"
            "except KeyboardInterrupt:\n"
            "    print('interrupted once')\n"
            "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.split("\n")[:3] == ["cleaned", "interrupted once", "True"], res.stderr
    assert "Traceback" not in res.stderr


def test_nohup_keeps_sighup_ignored():
    """A signal set to be ignored when rseqlab starts stays ignored (nohup)."""
    code = ("import signal, sys\nsignal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
            "from rseqlab import _startup\n"
            "with _startup.terminate_cleanly():\n"
            "    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN\n"
            "    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL\n"
            "assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("argv,message", [
    (["cost", "--reps", "9999999999999999999999999"], "--reps must be in 1..1001"),
    (["cost", "--rounds", "0"], "--rounds must be in 1..10,000,000"),
    (["cost", "--signals", "100000000"], "--signals must be in 1..10,000,000"),
])
def test_cost_work_is_bounded(run_cli, argv, message):
    r = run_cli(*argv)
    assert r.status == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr


@pytest.mark.parametrize("path", ["/dev/full", "/dev/zero"])
def test_a_device_given_as_a_file_is_refused_not_read(run_cli, path):
    """Found by the CLI fuzz: a cost model or config fragment read from a device never ended."""
    for argv in (["compare", "--cost-model", path], ["kernels", "get", "6.19.10", "--config", path]):
        r = run_cli(*argv)
        assert r.status == 2 and "not a regular file" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_an_error_quoting_a_line_break_stays_one_line(run_cli):
    r = run_cli("kernels", "get", "6.19.10", "--config", "a\nb")
    assert r.status == 2 and r.stderr.count("\n") == 1 and "a\\nb" in r.stderr


def test_a_path_longer_than_the_file_system_allows_is_one_line(run_cli):
    r = run_cli("cost", "--save", "x" * 5000)
    assert r.status == 2 and r.stderr.count("\n") == 1 and "too long" in r.stderr, r.stderr
