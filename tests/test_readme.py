"""The README's commands work exactly as written, in a fresh shell (issue 15).

Every fenced ``sh`` block of README.md is run, in order, in one fresh ``bash -e`` (a user
following the page in one terminal), from a directory that looks like a checkout after
``make run``: the project's files and a ``.venv``. Blocks that run for minutes, install, or need
root and tracefs are skipped by the reviewed list :data:`EXPENSIVE`, and only those.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: A block with a line starting with one of these is not run here, each for the reason given.
EXPENSIVE = {
    "make ": "builds the venv and runs the suite or the main job: what this test runs inside of",
    "pip install": "installs into the environment",
    "rseqlab record": "records on the live kernel (root, tracefs; tests/live covers it)",
    "rseqlab validate --": "records on the live kernel (tests/live covers it)",
}


def blocks() -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.S | re.M)


def _expensive(block: str) -> str | None:
    for line in block.splitlines():
        for prefix, why in EXPENSIVE.items():
            if line.strip().startswith(prefix):
                return why
    return None


def test_the_readme_has_the_blocks_this_test_expects():
    all_blocks = blocks()
    assert len(all_blocks) >= 6
    skipped = [b for b in all_blocks if _expensive(b)]
    assert len(skipped) == 3, skipped  # make run/test, pip install, record/replay/validate
    assert any("rseqlab check" in b for b in all_blocks if b not in skipped)


def test_readme_commands_run_in_a_fresh_shell(tmp_path):
    script = "\n".join(b for b in blocks() if not _expensive(b))
    home = tmp_path / "checkout"
    home.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in (".git", ".venv"):
            (home / entry.name).symlink_to(entry)
    venv = ROOT / ".venv" if (ROOT / ".venv" / "bin" / "activate").exists() else Path(sys.prefix)
    (home / ".venv").symlink_to(venv)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")),
           # this checkout's code, whichever checkout the venv was installed from
           "PYTHONPATH": str(ROOT / "src")}
    res = subprocess.run(["bash", "-e", "-c", script], cwd=home, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, f"{res.stderr[-3000:]}\n--- script ---\n{script}"
    assert "rseqlab " in res.stdout and "violations: exit 1" in res.stdout
    assert "Traceback" not in res.stderr
