"""The cache directory: odd environments are one clear line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rseqlab.cache import cache_dir, numba_cache_dir
from rseqlab.errors import BadInput


def test_cache_dir_is_created_under_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert cache_dir("kernels") == tmp_path / "c" / "rseqlab" / "kernels"
    assert (tmp_path / "c" / "rseqlab" / "kernels").is_dir()


def test_xdg_cache_home_a_file(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "f"))
    with pytest.raises(BadInput, match="a parent is not a directory .set XDG_CACHE_HOME"):
        cache_dir("workloads")


def test_a_file_where_the_cache_should_be(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    (tmp_path / "rseqlab").write_text("")
    with pytest.raises(BadInput, match="a file is in the way"):
        cache_dir()


def test_a_cache_that_cannot_be_created(monkeypatch):
    """HOME and XDG_CACHE_HOME where no user, root included, can create a directory (/proc)."""
    monkeypatch.setenv("HOME", "/proc/self/fdinfo")
    monkeypatch.setenv("XDG_CACHE_HOME", "/proc/self/fdinfo/cache")
    with pytest.raises(BadInput, match="cache directory /proc/self/fdinfo/cache/rseqlab/workloads: cannot create it"):
        cache_dir("workloads")
    fallback = numba_cache_dir()  # numba must never be left without a cache
    assert f"rseqlab-numba-{os.getuid()}" in fallback and os.path.isdir(fallback)


def test_replay_imports_with_an_unusable_cache(tmp_path):
    """The replay module (numba-compiled) imports and runs with HOME where nothing can be written."""
    env = dict(os.environ, HOME="/proc/self/fdinfo", XDG_CACHE_HOME="/proc/self/fdinfo/c")
    env.pop("NUMBA_CACHE_DIR", None)
    code = "import os, rseqlab.trace.fastreplay as f; print(os.environ['NUMBA_CACHE_DIR'])"
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "rseqlab-numba-" in res.stdout


def test_numba_cache_dir_prefers_the_project_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert numba_cache_dir() == str(tmp_path / "rseqlab" / "numba")
